"""Reconciliation: the checks no off-the-shelf suite gives, in plain SQL and DuckDB.

For a window W the pipeline reads the landing, writes the enriched lake, then aggregates into
``flow_stats``; each step records what it read and wrote in ``flowlens.window_loads``. So:

- the landing's flows for W now  == what ``enriched_flows`` read (more: late data, re-materialize;
  fewer: landed flows were deleted or expired after processing);
- the lake's flows for W        == what ``enriched_flows`` wrote;
- flows, bytes and packets in ``flow_stats`` for W == the lake's (bytes and packets are already
  sampling-scaled in the flow record, so they are conserved exactly by aggregation);
- every earlier window (since this asset's first load, within a lookback) has a load: no gap;
- every address and (client, server, port, protocol) key in ``flow_stats`` exists in ``assets``
  and ``dependencies``; rollups hold exactly the sums of the windows they cover.

Each function returns a :class:`Finding` whose message names the window and says what to do.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from flowlens_dagster.checks import names
from flowlens_dagster.checks.sources import Sources, Totals
from flowlens_dagster.checks.windows import Span
from ingest.window import WINDOW, window_key

GAP_LOOKBACK = timedelta(days=1)  # older gaps were reported by the checks of the windows after them
EXAMPLES = 5


@dataclass
class Finding:
    """The outcome of one reconciliation for one span."""

    check: str
    passed: bool
    message: str
    metadata: dict[str, Any] = field(default_factory=dict)


def rematerialize(span: Span, asset: str = names.ENRICHED_FLOWS) -> str:
    """The command an operator runs to rebuild a window from ``asset`` downwards."""
    return f"dagster asset materialize -m flowlens_dagster.definitions --select '{asset}*' --partition {span.key}"


# --- the reconciliations -----------------------------------------------------------------------
def landing_matches_load(sources: Sources, span: Span) -> Finding:
    """The landing still holds exactly the flows ``enriched_flows`` read for the window.

    PostgreSQL (and auto mode): the window's rows in the landing now, counted by the database;
    a window read from ``flow_raw_batches`` (the read matched them with the window's rows of
    ``flow_raw`` in its snapshot): also the batches' stored byte and packet totals.
    Kafka: the landings' own tally of what the broker acknowledged for the window
    (:mod:`ingest.land.ledger`) and the topic's log start offsets, so no flow is read back.
    """
    check, load = names.LANDING_MATCHES_LOAD, sources.load(span, names.ENRICHED_FLOWS)
    if load is None:
        return _not_loaded(check, span, names.ENRICHED_FLOWS)
    if sources.landing_has_ledger(span):
        return ledger_matches_load(sources, span, load)
    landed = sources.landed(span)
    finding = _compare_landed(check, span, load, landed.flows)
    if not finding.passed or not sources.landing_read_batches(span):
        return finding
    return _compare_sums(check, span, load, BatchTally(landed.flows, landed.bytes, landed.packets))


@dataclass
class BatchTally:
    """The batches' totals of a window in the shape of a ledger tally (for :func:`_compare_sums`)."""

    rows: int
    bytes: int
    packets: int
    messages: None = None


def ledger_matches_load(sources: Sources, span: Span, load: dict[str, Any]) -> Finding:
    """Kafka: the tally the landings published equals what ``enriched_flows`` read (flows, bytes,
    packets), and no message of the window was deleted from the topic since (log start offsets)."""
    check, reading = names.LANDING_MATCHES_LOAD, sources.ledger(span)
    read = int(load["rows_read"])
    if reading.tally is None:
        if read == 0:
            return Finding(check, True, f"window {span}: nothing landed and nothing read", {"window": span.key})
        return Finding(check, False, (
            f"window {span}: enriched_flows read {read} flows from {load['source']} but no landing recorded any "
            f"flow of this window in its tally topic (<raw topic>.landed): they were produced by something other "
            f"than a FlowLens landing, or the tallies were lost. Check the producers of the raw topic."
        ), {"window": span.key, "read_flows": read, "landed_flows": 0})  # fmt: skip
    deleted = reading.deleted()
    if deleted:
        where = ", ".join(f"partition {p} now starts at offset {low} (the window's first message: {first})"
                          for p, (first, low) in sorted(deleted.items()))  # fmt: skip
        return Finding(check, False, (
            f"window {span}: messages of this window were deleted from {load['source']} after processing "
            f"(retention or DeleteRecords): {where}. The landing can no longer reproduce this window. If the "
            f"deletion was intended, nothing is to be done; otherwise raise the topic's retention before it drops more."
        ), {"window": span.key, "read_flows": read, "landed_flows": reading.tally.rows,
            "deleted_partitions": {str(p): list(v) for p, v in deleted.items()}})  # fmt: skip
    if reading.tally.rows < read:
        return Finding(check, False, (
            f"window {span}: enriched_flows read {read} flows from {load['source']} but the landings recorded only "
            f"{reading.tally.rows} in their tallies and no message was deleted: {read - reading.tally.rows} flows were "
            f"produced by something other than a FlowLens landing, or a landing stopped before publishing its "
            f"tally (it publishes with each heartbeat). Check the producers of the raw topic."
        ), {"window": span.key, "read_flows": read, "landed_flows": reading.tally.rows,
            "unaccounted_flows": read - reading.tally.rows})  # fmt: skip
    finding = _compare_landed(check, span, load, reading.tally.rows)
    if not finding.passed:
        return finding
    return _compare_sums(check, span, load, reading.tally)


def _compare_sums(check: str, span: Span, load: dict[str, Any], tally: Any) -> Finding:
    """Flow counts agree: the byte and packet sums must agree too (a message altered or mixed up)."""
    recorded = {k: load.get(f"{k}_total") for k in ("bytes", "packets")}
    diff = {k: getattr(tally, k) - int(v) for k, v in recorded.items() if v is not None and int(v) != getattr(tally, k)}
    meta = {"window": span.key, "landed": {"flows": tally.rows, "bytes": tally.bytes, "packets": tally.packets},
            "read": {"flows": int(load["rows_read"]), **recorded}, "messages": tally.messages}  # fmt: skip
    if diff:
        return Finding(check, False, (
            f"window {span}: the landings landed {tally.rows} flows, as many as enriched_flows read, but "
            f"{', '.join(f'{k} differ by {v}' for k, v in diff.items())}: what was read is not what was landed. "
            f"Re-materialize partition {span.key}: {rematerialize(span)}"
        ), {**meta, "difference": diff})  # fmt: skip
    return Finding(check, True, f"window {span}: landing tally and load agree on {tally.rows} flows", meta)


def _compare_landed(check: str, span: Span, load: dict[str, Any], landed_flows: int) -> Finding:
    """The landing's flow count for the window against what ``enriched_flows`` read."""
    read = int(load["rows_read"])
    meta = {
        "window": span.key,
        "landed_flows": landed_flows,
        "read_flows": read,
        "source": load["source"],
        "loaded_at": str(load["finished_at"]),
    }
    if landed_flows > read:
        return Finding(
            check,
            False,
            (
                f"late data in window {span}: the landing ({load['source']}) now holds {landed_flows} flows but "
                f"enriched_flows read {read} at {load['finished_at']:%H:%M:%S}; {landed_flows - read} flows arrived "
                f"after the window was processed. Re-materialize partition {span.key}: {rematerialize(span)}"
            ),
            {**meta, "late_flows": landed_flows - read, "rematerialize": span.key},
        )
    if landed_flows < read:
        return Finding(
            check,
            False,
            (
                f"window {span}: the landing ({load['source']}) holds {landed_flows} flows but enriched_flows read "
                f"{read}: {read - landed_flows} landed flows were deleted (or expired) after processing, so the "
                f"landing can no longer reproduce this window. If the deletion was intended, re-materialize "
                f"partition {span.key} ({rematerialize(span)}); otherwise restore the rows before retention drops more."
            ),
            {**meta, "missing_flows": read - landed_flows},
        )
    return Finding(check, True, f"window {span}: landing and load agree on {read} flows", meta)


def lake_matches_load(sources: Sources, span: Span) -> Finding:
    """The window's Parquet files hold what ``enriched_flows`` read and wrote, with totals intact."""
    check, load = names.LAKE_MATCHES_LOAD, sources.load(span, names.ENRICHED_FLOWS)
    if load is None:
        return _not_loaded(check, span, names.ENRICHED_FLOWS)
    lake = sources.lake(span) or Totals(0, 0, 0)
    read, written = int(load["rows_read"]), int(load["rows_written"])
    meta: dict[str, Any] = {
        "window": span.key,
        "lake": lake.as_dict(),
        "rows_read": read,
        "rows_written": written,
        "files": [str(p) for p in sources.lake_files(span)],
    }
    problems = []
    if written != read:
        problems.append(f"enriched_flows read {read} flows but wrote {written}")
    if lake.flows != written:
        problems.append(f"the lake's files hold {lake.flows} flows but enriched_flows wrote {written}")
    for total in ("bytes", "packets"):
        recorded = load.get(f"{total}_total")
        if recorded is not None and int(recorded) != getattr(lake, total):
            problems.append(f"the lake's {total} sum to {getattr(lake, total)} but the load recorded {int(recorded)}")
    if problems:
        return Finding(
            check,
            False,
            (
                f"window {span}: " + "; ".join(problems) + ". The lake no longer matches what was processed "
                f"(a file duplicated, edited or removed?): re-materialize partition {span.key} ({rematerialize(span)})."
            ),
            meta,
        )
    return Finding(check, True, f"window {span}: the lake holds the {written} flows enriched_flows wrote", meta)


def stats_conserve_flows(sources: Sources, span: Span) -> Finding:
    """Flows, bytes and packets in ``flow_stats`` for the window equal the lake's."""
    check = names.STATS_CONSERVE_FLOWS
    lake, stats = sources.lake(span), sources.stats(span)
    if lake is None:
        lake = Totals(0, 0, 0)
    meta = {"window": span.key, "lake": lake.as_dict(), "flow_stats": stats.as_dict()}
    diff = stats.differences(lake)
    if diff:
        detail = ", ".join(f"{k} {getattr(stats, k)} in flow_stats vs {getattr(lake, k)} in the lake" for k in diff)
        return Finding(
            check,
            False,
            (
                f"window {span}: flow_stats does not conserve the enriched flows: {detail}. Re-materialize "
                f"partition {span.key} of flow_stats ({rematerialize(span, names.FLOW_STATS)})."
            ),
            {**meta, "difference": diff},
        )
    return Finding(check, True, f"window {span}: {stats.flows} flows, {stats.bytes} bytes conserved", meta)


def no_window_gap(
    sources: Sources, span: Span, asset: str = names.FLOW_STATS, lookback: timedelta = GAP_LOOKBACK
) -> Finding:
    """Every window between this asset's first load (within ``lookback``) and ``span`` was loaded."""
    check = names.NO_WINDOW_GAP
    with sources.connect() as conn:
        rows = conn.execute(
            """
            WITH bounds AS (
                SELECT min(window_start) AS first FROM flowlens.window_loads
                WHERE asset = %(asset)s AND window_start >= %(floor)s AND window_start < %(start)s
            )
            SELECT w FROM bounds, generate_series(bounds.first, %(start)s - %(step)s, %(step)s) AS w
            WHERE bounds.first IS NOT NULL AND NOT EXISTS (
                SELECT 1 FROM flowlens.window_loads l WHERE l.asset = %(asset)s AND l.window_start = w)
            ORDER BY w
            """,
            {"floor": span.start - lookback, "start": span.start, "asset": asset, "step": WINDOW},
        ).fetchall()
    missing = [window_key(r[0]) for r in rows]
    hours = lookback / timedelta(hours=1)
    meta = {"window": span.key, "asset": asset, "missing_windows": missing, "lookback_hours": hours}
    if missing:
        more = len(missing) - EXAMPLES
        shown = ", ".join(missing[:EXAMPLES]) + (f" and {more} more" if more > 0 else "")
        return Finding(
            check,
            False,
            (
                f"{len(missing)} window(s) before {span} were never materialized for {asset}: {shown}. "
                f"Materialize those partitions (e.g. dagster asset materialize -m flowlens_dagster.definitions "
                f"--select '{names.ENRICHED_FLOWS}*' --partition {missing[0]}); check that the watermark sensor "
                "and the daemon are running."
            ),
            meta,
        )
    return Finding(check, True, f"no gap in the windows of {asset} before {span}", meta)


def assets_cover_stats(sources: Sources, span: Span) -> Finding:
    """Every address in the window's flow_stats has an ``assets`` row whose windows include it."""
    start, _ = span.sql()
    query = f"""
        WITH seen AS (SELECT client_addr AS addr FROM flowlens.flow_stats WHERE window_start = {start}
                      UNION SELECT server_addr FROM flowlens.flow_stats WHERE window_start = {start})
        SELECT seen.addr::text, a.addr IS NULL AS absent FROM seen LEFT JOIN flowlens.assets a USING (addr)
        WHERE a.addr IS NULL OR a.first_window > {start} OR a.last_window < {start}
        ORDER BY 1 LIMIT 1000"""
    return _coverage(sources, span, names.ASSETS_COVER_STATS, query, "address(es)", "assets", names.NETWORK_ASSETS)


def dependencies_cover_stats(sources: Sources, span: Span) -> Finding:
    """Every (client, server, port, protocol) of the window's flow_stats has a ``dependencies`` row."""
    start, _ = span.sql()
    query = f"""
        SELECT s.client_addr::text || ' -> ' || s.server_addr::text || ':' || s.server_port || '/' || s.protocol,
               d.client_addr IS NULL AS absent
        FROM flowlens.flow_stats s
        LEFT JOIN flowlens.dependencies d USING (client_addr, server_addr, server_port, protocol)
        WHERE s.window_start = {start}
          AND (d.client_addr IS NULL OR d.first_window > {start} OR d.last_window < {start})
        ORDER BY 1 LIMIT 1000"""
    return _coverage(
        sources, span, names.DEPENDENCIES_COVER_STATS, query, "dependency key(s)", "dependencies", names.DEPENDENCIES
    )


def _coverage(sources: Sources, span: Span, check: str, query: str, what: str, table: str, asset: str) -> Finding:
    with sources.connect() as conn:
        rows = conn.execute(query).fetchall()
    absent = [r[0] for r in rows if r[1]]
    outside = [r[0] for r in rows if not r[1]]
    meta = {
        "window": span.key,
        "absent": absent[:EXAMPLES],
        "absent_count": len(absent),
        "window_range_wrong": outside[:EXAMPLES],
        "window_range_wrong_count": len(outside),
    }
    if not rows:
        return Finding(check, True, f"window {span}: every {what} in flow_stats is in {table}", meta)
    parts = []
    if absent:
        shown = ", ".join(absent[:EXAMPLES])
        parts.append(f"{len(absent)} {what} from flow_stats are missing in {table} (e.g. {shown})")
    if outside:
        parts.append(
            f"{len(outside)} {what} have first_window/last_window not covering the window "
            f"(e.g. {', '.join(outside[:EXAMPLES])})"
        )
    return Finding(
        check,
        False,
        (
            f"window {span}: " + "; ".join(parts) + f". Re-materialize partition {span.key} of {asset} "
            f"({rematerialize(span, asset)})."
        ),
        meta,
    )


def rollup_conserves(
    sources: Sources, span: Span, rollup: tuple[str, str], source: tuple[str, str], check: str
) -> Finding:
    """A rollup's sums for an hour/day equal the sums of the finer table's rows inside it.

    ``rollup`` and ``source`` are (table, time column), e.g. ("flow_stats_hourly", "hour_start").
    """
    (table, _), (source_table, _) = rollup, source
    mine = sources.stats(span, f"flowlens.{table}", rollup[1])
    finer = sources.stats(span, f"flowlens.{source_table}", source[1])
    meta = {"span": span.key, table: mine.as_dict(), source_table: finer.as_dict()}
    diff = mine.differences(finer)
    if diff:
        detail = ", ".join(f"{k} {getattr(mine, k)} in {table} vs {getattr(finer, k)} in {source_table}" for k in diff)
        return Finding(
            check,
            False,
            (
                f"{table} {span}: {detail}. {source_table} changed after the rollup ran (a late window?) or the rollup "
                f"lost rows: re-materialize partition {span.key} of {table}."
            ),
            {**meta, "difference": diff},
        )
    return Finding(check, True, f"{table} {span}: {mine.flows} flows match {source_table}", meta)


def _not_loaded(check: str, span: Span, asset: str) -> Finding:
    return Finding(
        check,
        False,
        (
            f"window {span} has no {asset} load in flowlens.window_loads: it was never materialized (or its "
            f"write failed). Materialize partition {span.key} ({rematerialize(span, asset)})."
        ),
        {"window": span.key},
    )


def jsonable(value: Any) -> Any:
    """Metadata values as JSON-compatible types (datetimes and Decimals as text/numbers)."""
    return json.loads(json.dumps(value, default=str))
