"""Jobs: the 5-minute window job the sensor launches, the rollup jobs, and retention.

The window job also runs the checks of ``flows_landed``: that asset is external (the ingest daemon
writes it, Dagster only records it), so no materialization of it ever triggers its checks. Selecting
them in the window job makes the landing suite run once per window, in the same run the watermark
sensor requests when it reports the window as landed.

Every job here runs its steps in one process (``dg.in_process_executor``). Dagster's default
multiprocess executor starts a fresh Python per step and loads the code location there: ~7-9 s
per step on a loaded 2-core host, against 0.1-1 s of work for most steps. The window job has 12
steps (5 assets, 7 check steps) that run one after the other anyway (each waits for the asset it
reads), so that overhead was most of a window's run: 67 s per run on a 600-flow window, 8.6 s in
process.
"""

from __future__ import annotations

import dagster as dg

from assets.keys import (
    FLOW_STATS_DAILY,
    FLOW_STATS_HOURLY,
    FLOWS_LANDED,
    WINDOW_ASSETS,
)
from assets.partitions import daily_partitions, five_minute_partitions, hourly_partitions
from assets.rollups import retention_job
from ingest.config import load_config


def window_retry_policy() -> dg.RetryPolicy:
    """A failed step of a window run is retried in the run (``pipeline.window_retries``, exponential
    backoff from ``pipeline.window_retry_delay_seconds``); a run that still fails is requested again
    by the watermark sensor (``pipeline.window_max_attempts``)."""
    pipe = load_config().pipeline
    return dg.RetryPolicy(
        max_retries=pipe.window_retries, delay=pipe.window_retry_delay_seconds, backoff=dg.Backoff.EXPONENTIAL
    )


def window_executor(step_processes: int) -> dg.ExecutorDefinition:
    """``pipeline.step_processes``: 1 runs every step in the run's process (see above); N > 1 runs up to
    N steps at once in their own processes, so ``flow_stats``' shard steps (``pipeline.shards`` > 1,
    ``assets.flow_stats_shards``) use several cores, at the fresh-process cost of every step."""
    if step_processes == 1:
        return dg.in_process_executor
    config = multiprocess_config(step_processes, "flowlens_dagster.definitions")
    return dg.multiprocess_executor.configured(config, name="window_multiprocess")


def multiprocess_config(step_processes: int, code_module: str) -> dict:
    """Up to ``step_processes`` steps at once, each forked from a forkserver that imported
    ``code_module`` (the code location) once, instead of a fresh interpreter importing it for every step."""
    return {"max_concurrent": step_processes, "start_method": {"forkserver": {"preload_modules": [code_module]}}}


window_job = dg.define_asset_job(
    "window_job",
    selection=dg.AssetSelection.assets(*WINDOW_ASSETS) | dg.AssetSelection.checks_for_assets(FLOWS_LANDED),
    partitions_def=five_minute_partitions,
    executor_def=window_executor(load_config().pipeline.step_processes),
    description="One 5-minute window from the landing to flow_stats, assets, dependencies and changes.",
    op_retry_policy=window_retry_policy(),
)
hourly_rollup_job = dg.define_asset_job(
    "hourly_rollup_job",
    selection=dg.AssetSelection.assets(FLOW_STATS_HOURLY),
    partitions_def=hourly_partitions,
    executor_def=dg.in_process_executor,
)
daily_rollup_job = dg.define_asset_job(
    "daily_rollup_job",
    selection=dg.AssetSelection.assets(FLOW_STATS_DAILY),
    partitions_def=daily_partitions,
    executor_def=dg.in_process_executor,
)

ALL_JOBS = [window_job, hourly_rollup_job, daily_rollup_job, retention_job]
