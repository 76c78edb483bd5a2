"""The reconstructable job of the killed-shard test: the pipeline bench's shard-steps job
(``flowlens_dagster.bench.shard_steps``: ``flow_stats``' shard steps under Dagster's multiprocess
executor) where the step of shard 1 kills its own process (SIGKILL) once, right after staging its
rows. Each step's fresh process loads the job from here, so the fault is armed there; the marker
file that makes the kill happen once is named by :data:`MARKER_ENV`, which those processes inherit."""

import os
import signal
from pathlib import Path

import dagster as dg
import polars as pl

from assets import flow_stats_shards
from flowlens_dagster.bench.shard_steps import SPEC_ENV, job_from_spec

MARKER_ENV = "KILLED_SHARD_MARKER"


def arm_kill(marker: Path) -> None:
    """Shard 1's first staging kills its process once the file is whole (before Dagster records the step)."""
    original = flow_stats_shards.stage_rows

    def stage_then_die(stats: pl.DataFrame, path: Path) -> None:
        original(stats, path)
        if path.name.startswith("shard-1.") and not marker.exists():
            marker.touch()
            os.kill(os.getpid(), signal.SIGKILL)

    flow_stats_shards.stage_rows = stage_then_die


def killed_shard_job() -> dg.JobDefinition:
    arm_kill(Path(os.environ[MARKER_ENV]))
    return job_from_spec(os.environ[SPEC_ENV])
