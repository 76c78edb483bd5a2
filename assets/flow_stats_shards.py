"""``flow_stats`` as a graph: one Dagster step per shard of the window, then one commit step.

With ``pipeline.shards`` > 1 the lake holds each window's flows split by a hash of the oriented
(client, server) pair (``assets.lake.shard_of``); shards hold disjoint ``flow_stats`` keys. The
graph-backed asset keeps the key ``flow_stats`` and its checks, metadata and partitions:

1. ``flow_stats_shard_plan`` lists the shards the run's windows hold and fans out (``DynamicOut``);
2. ``flow_stats_stage_shard``, one step per shard, aggregates that shard of every window of the
   run (``assets.flow_stats.aggregate_shard``) and stages its rows as Parquet under
   ``<lake>/flow_stats_staging/date=.../window=.../<run id>/shard-<n>.attempt-<k>.parquet``,
   written to a temporary name and renamed, so a killed step leaves no half file that counts;
   the step's output is the list of staged files (Dagster's IO manager keeps it, so a run
   re-executed from failure reuses the staged shards of the steps that had succeeded);
3. ``flow_stats_commit`` replaces each window's rows with the staged ones in one transaction
   (``assets.flow_stats.replace_window``) and reports the materialization's metadata; the
   staged files are removed after the commit.

Nothing is counted twice: a retried or re-executed shard step stages its shard again under a
new name and only the files named by the successful steps' outputs are read, and the commit
deletes the window's rows before it copies the staged ones (a retried commit replaces again).
Staged files of runs that never committed are removed by retention (``assets.rollups``).

Which definition the code location uses (``flow_stats_definition``): ``pipeline.shards`` = 1 keeps
the one-step asset of ``assets.flow_stats`` (no staging round trip); more shards use this graph.
The window job's executor (``pipeline.step_processes``) decides whether shard steps run one after
another in the run's process or side by side in their own processes (README "Dagster across workers").
"""

import os
import shutil
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import dagster as dg
import polars as pl

from assets import flow_stats as in_step
from assets import lake as lake_files
from assets import metrics
from assets.keys import ENRICHED_FLOWS, FLOW_STATS
from assets.metadata import definition_metadata
from assets.partitions import five_minute_partitions
from assets.resources import STAGING_DIR, LakeResource, PostgresResource
from assets.windows import WindowResult, timed
from ingest.window import window_key, windows_in


@dataclass(frozen=True)
class StagedShard:
    """One shard of one window, aggregated and staged: what the commit step needs of it."""

    window: datetime
    shard: int
    path: str
    rows_read: int
    seconds: float


def run_windows_of(context: dg.OpExecutionContext) -> list[datetime]:
    """The 5-minute windows of the run's partition range (one run may cover several)."""
    span = context.partition_time_window
    return list(windows_in(span.start.astimezone(UTC), span.end.astimezone(UTC)))


def shards_to_stage(lake: LakeResource, windows: list[datetime]) -> list[int]:
    """Every shard the windows' lake files hold (what was written, whatever ``pipeline.shards`` is now)."""
    shards: set[int] = set()
    for window in windows:
        directory = lake.window_dir(window)
        lake_files.scan_window(directory)  # raises, naming enriched_flows, when the window was never written
        shards.update(lake_files.window_shards(directory))
    return sorted(shards)


def staging_dir(lake: LakeResource, window: datetime, run: str) -> Path:
    return lake.window_dir(window, STAGING_DIR) / run


def stage_rows(stats: pl.DataFrame, path: Path) -> None:
    """Write the rows under a temporary name, then rename: the path holds a whole shard or nothing."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.{uuid.uuid4().hex}")
    try:
        stats.write_parquet(partial, compression="lz4")
        os.replace(partial, path)
    finally:
        partial.unlink(missing_ok=True)


def stage_shard(lake: LakeResource, window: datetime, shard: int, run: str, attempt: int) -> StagedShard:
    """Aggregate one shard of one window and stage its rows; a function of (window, shard, run, attempt)."""
    started = time.perf_counter()
    files = lake_files.window_files(lake.window_dir(window), shard)
    rows_read = int(pl.scan_parquet(files).select(pl.len()).collect().item()) if files else 0
    stats = in_step.aggregate_shard(lake, window, shard)
    path = staging_dir(lake, window, run) / f"shard-{shard}.attempt-{attempt}.parquet"
    stage_rows(stats, path)
    return StagedShard(window, shard, str(path), rows_read, round(time.perf_counter() - started, 4))


def commit_window(
    window: datetime, staged: list[StagedShard], lake: LakeResource, postgres: PostgresResource, run: str | None
) -> WindowResult:
    """Replace the window's ``flow_stats`` rows with its staged shards, in one transaction."""
    directory = lake.window_dir(window)
    missing = set(lake_files.window_shards(directory)) - {s.shard for s in staged}
    if missing:
        raise RuntimeError(
            f"flow_stats {window_key(window)}: lake shards {sorted(missing)} were not staged (enriched_flows"
            " rewrote the window during this run?): materialize flow_stats for this window again"
        )
    result = WindowResult(window, FLOW_STATS, source=f"lake:{ENRICHED_FLOWS}")
    result.source_position = {"path": str(directory)}
    result.rows_read = sum(s.rows_read for s in staged)
    result.seconds["aggregate"] = round(sum(s.seconds for s in staged), 4)

    def frames() -> Iterator[pl.DataFrame]:
        for shard in sorted(staged, key=lambda s: s.shard):
            with timed(result, "read_staged"):
                frame = pl.read_parquet(shard.path)
            yield frame

    started = time.perf_counter()
    with postgres.connect() as conn:
        tops = in_step.replace_window(conn, window, frames(), result, run)
    result.seconds["write_pg"] = round(time.perf_counter() - started - result.seconds.get("read_staged", 0.0), 4)
    result.preview = in_step.top_talkers(pl.concat(tops))
    return result


def remove_staged(staged: list[StagedShard]) -> None:
    """Delete the run directories of the committed files (with any file a failed attempt left beside them)."""
    for directory in {Path(s.path).parent for s in staged}:
        shutil.rmtree(directory, ignore_errors=True)


@dg.op(ins={"enriched_flows": dg.In(dg.Nothing)}, out=dg.DynamicOut(int))
def flow_stats_shard_plan(context: dg.OpExecutionContext, lake: LakeResource) -> Iterator[dg.DynamicOutput[int]]:
    """One output per shard the run's windows hold in the lake: each becomes its own staging step."""
    for shard in shards_to_stage(lake, run_windows_of(context)):
        yield dg.DynamicOutput(shard, mapping_key=f"shard_{shard}")


@dg.op
def flow_stats_stage_shard(context: dg.OpExecutionContext, lake: LakeResource, shard: int) -> list[StagedShard]:
    """Aggregate and stage this shard of every window of the run."""
    staged = []
    for window in run_windows_of(context):
        staged.append(stage_shard(lake, window, shard, context.run_id, context.retry_number))
        context.log.info(f"flow_stats {window_key(window)} shard {shard}: staged in {staged[-1].seconds:.2f}s")
    return staged


@dg.op(out=dg.Out(dg.Nothing))
def flow_stats_commit(
    context: dg.OpExecutionContext, lake: LakeResource, postgres: PostgresResource, staged: list[list[StagedShard]]
) -> None:
    """Swap each window's staged shards into ``flow_stats`` (one transaction per window); report the metadata."""
    shards = [s for step in staged for s in step]
    results = []
    for window in run_windows_of(context):
        result = commit_window(window, [s for s in shards if s.window == window], lake, postgres, context.run_id)
        context.log.info(
            f"flow_stats {window_key(window)}: read {result.rows_read:,}, wrote {result.rows_written:,} "
            f"in {sum(result.seconds.values()):.2f}s {result.seconds}"
        )
        results.append(result)
        metrics.after_window(context.resources, result)
    remove_staged(shards)
    context.add_output_metadata(in_step.run_metadata(results))


@dg.graph_asset(
    key=FLOW_STATS,
    ins={"enriched_flows": dg.AssetIn(ENRICHED_FLOWS, dagster_type=dg.Nothing)},
    partitions_def=five_minute_partitions,
    backfill_policy=dg.BackfillPolicy.single_run(),
    group_name="statistics",
    kinds={"postgres", "polars"},
    description=in_step.__doc__,
    metadata=definition_metadata(in_step.TABLE, in_step.COLUMNS),
)
def flow_stats_sharded(enriched_flows):
    staged = flow_stats_shard_plan(enriched_flows).map(flow_stats_stage_shard)
    return flow_stats_commit(staged.collect())


def flow_stats_definition(shards: int) -> dg.AssetsDefinition:
    """The ``flow_stats`` asset for ``pipeline.shards``: one step when 1, the per-shard graph above otherwise."""
    return in_step.flow_stats if shards == 1 else flow_stats_sharded
