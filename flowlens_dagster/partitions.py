"""The pipeline's partitions, defined once: 5-minute windows, plus hourly and daily ones for rollups.

Windows are UTC buckets of the collector's receive time (see ``ingest.land.base.window_start``).
Dagster slows down past ~100k partitions, so the 5-minute set starts recently: at
``pipeline.partition_start`` from the config, or by default at midnight UTC two days ago (288
partitions a day). The start is truncated to a whole day so it stays stable for a day at a time.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import dagster as dg

from ingest.config import load_config

WINDOW = timedelta(minutes=5)
WINDOW_FMT = "%Y-%m-%d-%H:%M"  # partition key of a 5-minute window, e.g. 2026-11-26-18:05
HOUR_FMT = "%Y-%m-%d-%H:%M"
DAY_FMT = "%Y-%m-%d"
DEFAULT_LOOKBACK_DAYS = 2


def partition_start(configured: str | None = None, now: datetime | None = None) -> datetime:
    """First partition as an aware UTC datetime, from config text (ISO date or date-time) or the default."""
    if configured is None:
        configured = load_config().pipeline.partition_start
    if configured:
        try:
            start = datetime.fromisoformat(configured)
        except ValueError as exc:
            raise ValueError(
                f"pipeline.partition_start={configured!r} is not an ISO date or date-time; "
                "use e.g. 2026-11-24 or 2026-11-24T00:00:00Z"
            ) from exc
        start = start.replace(tzinfo=UTC) if start.tzinfo is None else start.astimezone(UTC)
    else:
        start = (now or datetime.now(UTC)) - timedelta(days=DEFAULT_LOOKBACK_DAYS)
    return start.replace(hour=0, minute=0, second=0, microsecond=0)


def build_partitions(start: datetime) -> tuple[dg.TimeWindowPartitionsDefinition, ...]:
    """The (five-minute, hourly, daily) partition definitions starting at ``start``."""
    five = dg.TimeWindowPartitionsDefinition(
        cron_schedule="*/5 * * * *", start=start.strftime(WINDOW_FMT), fmt=WINDOW_FMT, timezone="UTC"
    )
    hourly = dg.HourlyPartitionsDefinition(start_date=start.strftime(HOUR_FMT), timezone="UTC")
    daily = dg.DailyPartitionsDefinition(start_date=start.strftime(DAY_FMT), timezone="UTC")
    return five, hourly, daily


START = partition_start()
five_minute_partitions, hourly_partitions, daily_partitions = build_partitions(START)


def window_key(window: datetime) -> str:
    """The 5-minute partition key of the window starting at ``window`` (aware datetime)."""
    return window.astimezone(UTC).strftime(WINDOW_FMT)


def window_of_key(key: str) -> datetime:
    """The aware UTC start of the 5-minute partition ``key``."""
    return datetime.strptime(key, WINDOW_FMT).replace(tzinfo=UTC)


def windows_in(start: datetime, end: datetime) -> list[datetime]:
    """Every 5-minute window start in [start, end): what a single-run backfill loops over."""
    out, current = [], start
    while current < end:
        out.append(current)
        current += WINDOW
    return out
