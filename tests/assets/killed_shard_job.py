"""The reconstructable job of the killed-shard tests: the pipeline bench's shard-steps job
(``flowlens_dagster.bench.shard_steps``: ``flow_stats``' shard steps under Dagster's multiprocess
executor) where the step of shard 1 kills its own process (SIGKILL) once, right after staging its
rows. Each step's process loads the job from here, so the fault is armed there. The job's spec and
the marker file that makes the kill happen once are read from the file named by :data:`SPEC_FILE_ENV`:
the executor's forkserver keeps the environment of the test that started it, so what changes from
test to test is in the file, not in the environment."""

import json
import os
import signal
from pathlib import Path

import dagster as dg
import polars as pl

from assets import flow_stats_shards
from flowlens_dagster.bench.shard_steps import job_from_spec

SPEC_FILE_ENV = "KILLED_SHARD_SPEC_FILE"


def write_spec(path: Path, spec: str, marker: Path) -> None:
    """Write the job's spec (``flowlens_dagster.bench.shard_steps.spec``) and the kill's marker."""
    path.write_text(json.dumps({"spec": spec, "marker": str(marker)}))


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
    armed = json.loads(Path(os.environ[SPEC_FILE_ENV]).read_text())
    arm_kill(Path(armed["marker"]))
    return job_from_spec(armed["spec"])
