"""The reconstructable job of the killed-shard test: ``flow_stats``' shard steps under Dagster's
multiprocess executor, where the step of shard 1 kills its own process (SIGKILL) once, right after
staging its rows. Each step's fresh process loads the job from here, so the fault is armed there;
the spec (the test stack's config, the lake's cut, the marker that makes the kill happen once)
comes from the environment the test sets, which the step processes inherit."""

import json
import os
import signal
from pathlib import Path

import dagster as dg
import polars as pl

from assets import flow_stats_shards
from assets.keys import FLOW_STATS
from assets.resources import LakeResource, build_resources
from ingest.config import FlowLensConfig

ENV = "FLOWLENS_TEST_KILLED_SHARD"
JOB = "killed_shard_job"


def spec_env(cfg: FlowLensConfig, chunk_flows: int, shards: int, marker: Path) -> str:
    """The value of :data:`ENV` for :func:`killed_shard_job`."""
    spec = {"config": cfg.model_dump_json(), "chunk_flows": chunk_flows, "shards": shards, "marker": str(marker)}
    return json.dumps(spec)


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
    spec = json.loads(os.environ[ENV])
    cfg = FlowLensConfig.model_validate_json(spec["config"])
    arm_kill(Path(spec["marker"]))
    resources = build_resources(cfg, use_env=False)
    resources["lake"] = LakeResource(root=str(cfg.lake_dir), chunk_flows=spec["chunk_flows"], shards=spec["shards"])
    job = dg.define_asset_job(
        JOB, selection=[FLOW_STATS], executor_def=dg.multiprocess_executor.configured({"max_concurrent": 2})
    )
    defs = dg.Definitions(assets=[flow_stats_shards.flow_stats_sharded], jobs=[job], resources=resources)
    return defs.resolve_job_def(JOB)
