"""Bytes between groups of the map, from the traffic tables the pipeline already aggregates.

A time range is read from the coarsest table that holds it whole: the daily rollup for the days it
has rolled up, the hourly rollup for the hours it has, and the 5-minute ``flow_stats`` for the rest
(the current hour, a range's ragged ends, or everything when no rollup has run). Rollups run once
their period has closed (``flowlens_dagster/schedules.py``) and rewrite a period whole, so a rollup
holds every period up to its newest one, and the older fine rows it replaces may already be gone
(retention keeps the daily rollup longest). The sum is the same whichever table a period comes from.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from psycopg import AsyncConnection

DAY, HOUR = timedelta(days=1), timedelta(hours=1)
# (table, period column, period length), coarsest first
TIERS = (
    ("flowlens.flow_stats_daily", "day_start", DAY),
    ("flowlens.flow_stats_hourly", "hour_start", HOUR),
    ("flowlens.flow_stats", "window_start", None),
)
NEWEST_ROLLUPS = """SELECT (SELECT max(day_start) FROM flowlens.flow_stats_daily) AS daily,
                           (SELECT max(hour_start) FROM flowlens.flow_stats_hourly) AS hourly"""
_FIRST = datetime.min.replace(tzinfo=UTC) + DAY  # stands for "no lower bound" (room to round)
_LAST = datetime.max.replace(tzinfo=UTC) - DAY  # "no upper bound"


@dataclass(frozen=True)
class Span:
    """Rows of ``table`` whose ``column`` is in [start, end); None = unbounded."""

    table: str
    column: str
    start: datetime | None
    end: datetime | None


def _floor(t: datetime, unit: timedelta) -> datetime:
    if t in (_FIRST, _LAST):
        return t
    return datetime.fromtimestamp(t.timestamp() // unit.total_seconds() * unit.total_seconds(), UTC)


def _ceil(t: datetime, unit: timedelta) -> datetime:
    down = _floor(t, unit)
    return down if down == t else down + unit


def _bound(t: datetime) -> datetime | None:
    return None if t in (_FIRST, _LAST) else t


def spans(
    since: datetime | None, until: datetime | None, daily_through: datetime | None, hourly_through: datetime | None
) -> list[Span]:
    """Which table covers which part of [since, until): each instant in exactly one span.

    ``*_through``: the end of the newest period of each rollup (None: that rollup is empty)."""
    remaining = [(since or _FIRST, until or _LAST)]
    out: list[Span] = []
    for (table, column, unit), through in zip(TIERS, (daily_through, hourly_through, _LAST), strict=True):
        if through is None:
            continue
        kept = []
        for lo, hi in remaining:
            start = _ceil(lo, unit) if unit else lo
            end = min(_floor(hi, unit) if unit else hi, through)
            if start < end:
                out.append(Span(table, column, _bound(start), _bound(end)))
                kept += [(a, b) for a, b in ((lo, start), (end, hi)) if a < b]
            else:
                kept.append((lo, hi))
        remaining = kept
    return out


async def traffic_spans(conn: AsyncConnection, since: datetime | None, until: datetime | None) -> list[Span]:
    cur = await conn.execute(NEWEST_ROLLUPS)
    row = await cur.fetchone()
    daily, hourly = row["daily"], row["hourly"]
    return spans(since, until, daily and daily + DAY, hourly and hourly + HOUR)


def traffic_rows(parts: list[Span], params: dict) -> str:
    """One relation ``(client_addr, server_addr, server_port, protocol, bytes)`` over the spans."""
    selects = []
    for i, part in enumerate(parts):
        conds = []
        for name, value, op in ((f"t{i}_start", part.start, ">="), (f"t{i}_end", part.end, "<")):
            if value is not None:
                params[name] = value
                conds.append(f"{part.column} {op} %({name})s")
        where = f" WHERE {' AND '.join(conds)}" if conds else ""
        selects.append(f"SELECT client_addr, server_addr, server_port, protocol, bytes FROM {part.table}{where}")
    return " UNION ALL ".join(selects)
