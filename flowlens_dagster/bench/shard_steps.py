"""``flow_stats``' shard steps through a real Dagster run: the pipeline bench's ``--shard-steps`` phase.

The graph-backed ``flow_stats`` (``assets.flow_stats_shards``) in a job of its own, run by Dagster's
multiprocess executor with up to ``step_processes`` steps at once: every step is a fresh Python
process that loads the job again from :func:`shard_steps_job`, so the job's FlowLens config (the
bench's database and lake) travels in the environment variable :data:`SPEC_ENV`, which those
processes inherit. The run's instance is a temporary one (its run storage in a temporary directory).
"""

import json
import os
import tempfile
import time
from datetime import datetime

import dagster as dg

from assets import flow_stats_shards
from assets.keys import FLOW_STATS
from assets.resources import build_resources
from flowlens_dagster.jobs import multiprocess_config
from ingest.config import FlowLensConfig
from ingest.window import window_key

SPEC_ENV = "SHARD_STEPS_JOB_SPEC"  # not FLOWLENS_*: those are config keys (ingest.config)
JOB = "flow_stats_shard_steps"
QUIET = {"loggers": {"console": {"config": {"log_level": "WARNING"}}}}  # the bench prints figures, not step events


def spec(cfg: FlowLensConfig, step_processes: int, retries: int = 0) -> str:
    """The value of :data:`SPEC_ENV`: the whole config (lake cut included), the executor's width and
    the retries of a failed step (``dg.RetryPolicy``)."""
    return json.dumps({"config": cfg.model_dump_json(), "step_processes": step_processes, "retries": retries})


def job_from_spec(value: str) -> dg.JobDefinition:
    """The graph-backed ``flow_stats`` alone, on the spec's resources, under the multiprocess executor."""
    parsed = json.loads(value)
    cfg = FlowLensConfig.model_validate_json(parsed["config"])
    executor = dg.multiprocess_executor.configured(multiprocess_config(parsed["step_processes"], __name__))
    retries = dg.RetryPolicy(max_retries=parsed.get("retries", 0))
    job = dg.define_asset_job(JOB, selection=[FLOW_STATS], executor_def=executor, op_retry_policy=retries)
    defs = dg.Definitions(
        assets=[flow_stats_shards.flow_stats_sharded], jobs=[job], resources=build_resources(cfg, use_env=False)
    )
    return defs.resolve_job_def(JOB)


def shard_steps_job() -> dg.JobDefinition:
    """The reconstructable target (``dg.reconstructable``): the job of the spec in the environment."""
    return job_from_spec(os.environ[SPEC_ENV])


def run_shard_steps(cfg: FlowLensConfig, window: datetime, step_processes: int) -> dict[str, float]:
    """Materialize ``flow_stats`` for ``window`` through the shard steps; the run's wall seconds and figures."""
    os.environ[SPEC_ENV] = spec(cfg, step_processes)
    job = dg.reconstructable(shard_steps_job)
    with tempfile.TemporaryDirectory(prefix="flowlens-shard-steps-") as home:
        instance = dg.DagsterInstance.local_temp(home, overrides={"telemetry": {"enabled": False}})
        started = time.perf_counter()
        tags = {"dagster/partition": window_key(window)}
        with dg.execute_job(job, instance, run_config=QUIET, tags=tags) as result:
            seconds = time.perf_counter() - started
            if not result.success:
                raise RuntimeError(f"the shard-steps run failed: {result.get_step_failure_events()[:1]}")
            meta = result.asset_materializations_for_node(FLOW_STATS)[0].metadata
            steps = instance.get_run_step_stats(result.run_id)
    return {
        "shard_steps_seconds": round(seconds, 3),
        "shard_steps_critical_path_seconds": critical_path_seconds(steps),
        "shard_steps_rows": meta["dagster/row_count"].value,
        "shard_steps_aggregate_seconds": meta["seconds_aggregate"].value,
        "shard_steps_write_pg_seconds": meta["seconds_write_pg"].value,
    }


def critical_path_seconds(steps: list) -> float:
    """The plan step, the slowest shard step and the commit step, each from its start to its end: the
    run's work without the gaps between steps (process start-ups, the executor's polling)."""
    by_kind: dict[str, float] = {}
    for step in steps:
        kind = step.step_key.split("[")[0]
        by_kind[kind] = max(by_kind.get(kind, 0.0), (step.end_time or 0.0) - (step.start_time or 0.0))
    return round(sum(by_kind.values()), 3)
