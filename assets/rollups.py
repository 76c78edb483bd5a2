"""Hourly and daily rollups of ``flow_stats`` on their own partitions, and retention.

A rollup period is rewritten whole in one transaction (delete the period, insert the aggregate),
so re-running it after late windows arrive gives the same rows a clean run gives. Daily rolls up
the hourly table. Retention drops whole day partitions older than ``pipeline.retention_days``
from ``flow_raw``, ``flow_stats`` and ``flow_stats_hourly`` and the lake's old ``date=`` folders
(the daily rollup is kept: it is small and answers long-range questions).
"""

from datetime import UTC, datetime, timedelta
from pathlib import Path

import dagster as dg

from assets import lake as lake_files
from assets.changes import _statements
from assets.keys import FLOW_STATS, FLOW_STATS_DAILY, FLOW_STATS_HOURLY
from assets.metadata import definition_metadata, materialization_metadata
from assets.partitions import daily_partitions, hourly_partitions
from assets.pg import ensure_day_partitions, record_window_load
from assets.resources import ENRICHED_DIR, STAGING_DIR, LakeResource, PipelineResource, PostgresResource
from assets.windows import WindowResult, run_id, timed

MEASURES = ("bytes", "packets", "flows", "first_seen", "last_seen")
KEY = ("client_addr", "server_addr", "server_port", "protocol")


def _columns(period: str) -> list[tuple[str, str, str]]:
    return [
        (period, "timestamptz", f"start of the {period.split('_')[0]}"),
        ("client_addr", "inet", "client"),
        ("server_addr", "inet", "server"),
        ("server_port", "integer", "service port"),
        ("protocol", "smallint", "IP protocol"),
        ("bytes", "bigint", "sum of bytes"),
        ("packets", "bigint", "sum of packets"),
        ("flows", "bigint", "sum of flows"),
        ("first_seen", "timestamptz", "earliest first seen"),
        ("last_seen", "timestamptz", "latest last seen"),
    ]


ROLLUP_SQL = """
DELETE FROM {target} WHERE {period} >= %(start)s AND {period} < %(end)s;
INSERT INTO {target} ({period}, client_addr, server_addr, server_port, protocol, bytes, packets, flows,
    first_seen, last_seen)
SELECT date_trunc('{unit}', {source_period}, 'UTC'), client_addr, server_addr, server_port, protocol,
       sum(bytes), sum(packets), sum(flows), min(first_seen), max(last_seen)
FROM {source} WHERE {source_period} >= %(start)s AND {source_period} < %(end)s
GROUP BY 1, 2, 3, 4, 5;
"""


def roll_up(postgres: PostgresResource, asset: str, start: datetime, end: datetime, run: str | None) -> WindowResult:
    """Rewrite the rollup rows of [start, end) from the finer table in one transaction."""
    hourly = asset == FLOW_STATS_HOURLY
    target = f"flowlens.{asset}"
    source, source_period = (
        ("flowlens.flow_stats", "window_start") if hourly else ("flowlens.flow_stats_hourly", "hour_start")
    )
    period, unit = ("hour_start", "hour") if hourly else ("day_start", "day")
    result = WindowResult(start, asset, source=f"postgres:{source.split('.')[1]}")
    result.source_position = {"from": start.isoformat(), "to": end.isoformat()}
    sql = ROLLUP_SQL.format(target=target, period=period, unit=unit, source=source, source_period=source_period)
    with timed(result, "rollup"), postgres.connect() as conn, conn.transaction():
        cur = conn.cursor()
        ensure_day_partitions(cur, target, start, end - timedelta(microseconds=1))
        delete, insert = _statements(sql)
        cur.execute(delete, {"start": start, "end": end})
        cur.execute(insert, {"start": start, "end": end})
        result.rows_written = cur.rowcount
        totals = cur.execute(
            f"SELECT count(*), coalesce(sum(bytes), 0), coalesce(sum(packets), 0) FROM {target} "
            f"WHERE {period} >= %(start)s AND {period} < %(end)s",
            {"start": start, "end": end},
        ).fetchone()
        result.rows_read, result.bytes_total, result.packets_total = int(totals[0]), int(totals[1]), int(totals[2])
        record_window_load(cur, result.load_row(run))
    return result


def apply_retention(postgres: PostgresResource, lake: LakeResource, days: int, today: datetime | None = None) -> dict:
    """Drop day partitions and lake folders older than ``days`` days; returns what was dropped."""
    first_kept = ((today or datetime.now(UTC)) - timedelta(days=days)).date()
    dropped: dict[str, list[str]] = {}
    with postgres.connect() as conn, conn.transaction():
        for parent in (
            "flowlens.flow_raw",
            "flowlens.flow_raw_batches",
            "flowlens.flow_stats",
            "flowlens.flow_stats_hourly",
        ):
            rows = conn.execute(
                "SELECT flowlens.drop_day_partitions_before(%s::regclass, %s)", (parent, first_kept)
            ).fetchall()
            dropped[parent] = [r[0] for r in rows]
    dropped["lake"] = lake_files.drop_days_before(Path(lake.root), ENRICHED_DIR, first_kept.isoformat())
    # flow_stats shards staged by runs that never committed (assets.flow_stats_shards)
    dropped[STAGING_DIR] = lake_files.drop_days_before(Path(lake.root), STAGING_DIR, first_kept.isoformat())
    return dropped


def _rollup_asset(asset: str, upstream: str, partitions: dg.TimeWindowPartitionsDefinition, period: str):
    columns = _columns(period)
    lineage = {c: [(upstream, c)] for c, _, _ in columns[1:]}
    lineage[period] = [(upstream, "window_start" if upstream == FLOW_STATS else "hour_start")]

    @dg.asset(
        key=asset,
        deps=[upstream],
        partitions_def=partitions,
        backfill_policy=dg.BackfillPolicy.single_run(),
        group_name="statistics",
        kinds={"postgres"},
        description=f"{period.split('_')[0].capitalize()}ly rollup of {upstream}: one transaction per period.",
        metadata=definition_metadata(f"flowlens.{asset}", columns),
    )
    def _rollup(context: dg.AssetExecutionContext, postgres: PostgresResource) -> dg.MaterializeResult:
        span = context.partition_time_window
        step = timedelta(hours=1) if period == "hour_start" else timedelta(days=1)
        results, current = [], span.start.astimezone(UTC)
        while current < span.end:
            results.append(roll_up(postgres, asset, current, current + step, run_id(context)))
            current += step
        return dg.MaterializeResult(metadata=materialization_metadata(f"flowlens.{asset}", columns, lineage, results))

    return _rollup


flow_stats_hourly = _rollup_asset(FLOW_STATS_HOURLY, FLOW_STATS, hourly_partitions, "hour_start")
flow_stats_daily = _rollup_asset(FLOW_STATS_DAILY, FLOW_STATS_HOURLY, daily_partitions, "day_start")


@dg.op(description="Drop day partitions and lake folders older than pipeline.retention_days.")
def drop_old_partitions(
    context: dg.OpExecutionContext, postgres: PostgresResource, lake: LakeResource, pipeline: PipelineResource
) -> None:
    days = pipeline.retention_days
    dropped = apply_retention(postgres, lake, days)
    context.log.info(f"retention {days} days: dropped {dropped}")


@dg.job(
    description=(
        "Retention: drop old day partitions (flow_raw and its batches, flow_stats, flow_stats_hourly) and lake days."
    )
)
def retention_job() -> None:
    drop_old_partitions()
