"""A window processed in many chunks and shards gives exactly the rows of the one-chunk path, and a
window that fails midway (in a chunk or a shard) then runs again leaves the rows of one clean run."""

from __future__ import annotations

import shutil
from datetime import UTC, datetime, timedelta
from pathlib import Path

import dagster as dg
import polars as pl
import psycopg
import pytest

from assets import enriched_flows, flow_stats, flow_stats_shards, lake, topology
from assets.keys import FLOW_STATS
from assets.resources import STAGING_DIR, LakeResource, build_resources
from flowlens_dagster.bench import shard_steps
from flowlens_dagster.bench.pipeline import synthetic_window
from ingest.land import open_landing
from ingest.land.base import WHOLE_WINDOW
from ingest.window import window_key
from tests.assets import killed_shard_job
from tests.assets.test_window_assets import SNAPSHOT_QUERIES

pytestmark = pytest.mark.integration
FLOWS, PAIRS = 6_000, 400
SMALL_CHUNK, SHARDS = 700, 3  # several chunks and every shard really used
TABLES = ("flow_stats", "assets", "dependencies")


class Injected(RuntimeError):
    """The failure a test injects midway through a window."""


def window_now() -> datetime:
    """A 5-minute window an hour ago (inside the partitions a fresh test database holds)."""
    now = datetime.now(UTC) - timedelta(hours=1)
    return now.replace(minute=now.minute - now.minute % 5, second=0, microsecond=0)


@pytest.fixture(params=["postgres", "kafka"])
def landed(request, flowlens_config, clean_pg, kafka_topic):
    """Synthetic flows (clients, servers and their replies) landed in one window; the config to read them."""
    if request.param == "postgres":
        cfg = flowlens_config.model_copy(update={"mode": "minimal"})
    else:
        kafka = flowlens_config.kafka.model_copy(update={"raw_topic": kafka_topic("flows.raw.shards")})
        ingest = flowlens_config.ingest.model_copy(update={"kafka_message_max_flows": 300})  # many messages
        cfg = flowlens_config.model_copy(update={"mode": "standard", "kafka": kafka, "ingest": ingest})
    cfg = cfg.model_copy(update={"dns": cfg.dns.model_copy(update={"enabled": False})})
    window = window_now()
    landing = open_landing(cfg)
    try:
        for batch in synthetic_window(window, FLOWS, PAIRS):
            landing.write(batch)
        landing.heartbeat("test", window + timedelta(minutes=5), FLOWS)
    finally:
        landing.close()
    yield cfg, window
    shutil.rmtree(cfg.lake_dir, ignore_errors=True)


def lake_resource(cfg, chunk_flows: int, shards: int) -> LakeResource:
    return LakeResource(root=str(cfg.lake_dir), chunk_flows=chunk_flows, shards=shards)


def enrich(cfg, window: datetime, chunk_flows: int, shards: int) -> None:
    """The window's enriched_flows stage: landing -> the lake, in chunks and shards."""
    res = build_resources(cfg, use_env=False)
    enrichment = res["enrichment"]
    inventory = enrichment.inventory()
    landing = open_landing(cfg)
    try:
        enriched_flows.process_window(
            window,
            landing,
            lake_resource(cfg, chunk_flows, shards),
            None,
            res["postgres"],
            None,
            "test",
            inventory,
            enrichment.enricher(inventory),
        )
    finally:
        landing.close()


def topology_stages(cfg, window: datetime) -> None:
    """The stages after flow_stats: network assets (from the lake) and dependencies (from flow_stats)."""
    postgres = build_resources(cfg, use_env=False)["postgres"]
    topology.process_assets_window(window, lake_resource(cfg, WHOLE_WINDOW, 1), postgres, "test")
    topology.process_dependencies_window(window, postgres, "test")


def run_window(cfg, window: datetime, chunk_flows: int, shards: int) -> None:
    """Every window stage the assets run, with the given chunk size and shard count (flow_stats in one step)."""
    enrich(cfg, window, chunk_flows, shards)
    postgres = build_resources(cfg, use_env=False)["postgres"]
    flow_stats.process_window(window, lake_resource(cfg, chunk_flows, shards), postgres, "test")
    topology_stages(cfg, window)


def tables(dsn: str) -> dict[str, list[tuple]]:
    with psycopg.connect(dsn) as conn:
        return {name: conn.execute(SNAPSHOT_QUERIES[name]).fetchall() for name in TABLES}


def empty_tables(dsn: str) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(f"TRUNCATE {', '.join('flowlens.' + t for t in (*TABLES, 'window_loads'))}")


def lake_rows(cfg, window: datetime) -> pl.DataFrame:
    directory = LakeResource(root=str(cfg.lake_dir)).window_dir(window)
    frame = lake.scan_window(directory).with_columns(pl.col("direction_rule").cast(pl.String)).collect()
    return frame.sort(frame.columns)


def test_chunked_and_sharded_window_equals_the_single_chunk_window(landed, pg_dsn):
    cfg, window = landed
    run_window(cfg, window, WHOLE_WINDOW, 1)
    single, single_lake = tables(pg_dsn), lake_rows(cfg, window)
    assert len(single["flow_stats"]) > 100 and len(single_lake) == FLOWS

    empty_tables(pg_dsn)
    run_window(cfg, window, SMALL_CHUNK, SHARDS)
    directory = LakeResource(root=str(cfg.lake_dir)).window_dir(window)
    assert lake.window_shards(directory) == list(range(SHARDS))
    assert len(lake.window_files(directory)) >= FLOWS // SMALL_CHUNK * SHARDS
    assert tables(pg_dsn) == single
    assert lake_rows(cfg, window).equals(single_lake)


def fail_on_call(monkeypatch, module, name: str, nth: int) -> None:
    """Make ``module.name`` raise :class:`Injected` on its ``nth`` call (counting from 1)."""
    original, calls = getattr(module, name), []

    def failing(*args, **kwargs):
        calls.append(1)
        if len(calls) == nth:
            raise Injected(f"{name} call {nth}")
        return original(*args, **kwargs)

    monkeypatch.setattr(module, name, failing)


def test_a_window_failing_midway_then_run_again_counts_every_flow_once(landed, pg_dsn, monkeypatch):
    cfg, window = landed
    run_window(cfg, window, SMALL_CHUNK, SHARDS)
    clean = tables(pg_dsn)
    directory = LakeResource(root=str(cfg.lake_dir)).window_dir(window)
    files = sorted(p.name for p in lake.window_files(directory))

    with monkeypatch.context() as patch:  # the 3rd chunk's enrichment fails: the lake window stays as it was
        fail_on_call(patch, enriched_flows, "enrich_window", 3)
        with pytest.raises(Injected):
            run_window(cfg, window, SMALL_CHUNK, SHARDS)
    assert sorted(p.name for p in lake.window_files(directory)) == files
    assert not [p for p in Path(directory.parent).iterdir() if p.name.startswith(".")]  # no staging left
    assert tables(pg_dsn) == clean

    with monkeypatch.context() as patch:  # the 2nd shard's aggregation fails: flow_stats rolls back whole
        fail_on_call(patch, flow_stats, "aggregate_shard", 2)
        with pytest.raises(Injected):
            run_window(cfg, window, SMALL_CHUNK, SHARDS)
    assert tables(pg_dsn) == clean

    empty_tables(pg_dsn)  # a first run that fails in its 2nd shard, then the retry
    with monkeypatch.context() as patch:
        fail_on_call(patch, flow_stats, "aggregate_shard", 2)
        with pytest.raises(Injected):
            run_window(cfg, window, SMALL_CHUNK, SHARDS)
    assert tables(pg_dsn)["flow_stats"] == []
    run_window(cfg, window, SMALL_CHUNK, SHARDS)
    assert tables(pg_dsn) == clean


# flow_stats as Dagster steps: one per shard, then the commit (assets.flow_stats_shards)


def shard_job_definitions(cfg, shards: int, retries: int = 0) -> dg.Definitions:
    """The graph-backed flow_stats in a job of its own, on the test stack, with ``retries`` per step."""
    resources = build_resources(cfg, use_env=False)
    resources["lake"] = lake_resource(cfg, SMALL_CHUNK, shards)
    job = dg.define_asset_job(
        "flow_stats_shards_job",
        selection=[FLOW_STATS],
        executor_def=dg.in_process_executor,
        op_retry_policy=dg.RetryPolicy(max_retries=retries),
    )
    return dg.Definitions(assets=[flow_stats_shards.flow_stats_sharded], jobs=[job], resources=resources)


def run_shard_steps(cfg, window: datetime, retries: int = 0) -> dg.ExecuteInProcessResult:
    job = shard_job_definitions(cfg, SHARDS, retries).resolve_job_def("flow_stats_shards_job")
    with dg.instance_for_test() as instance:
        return job.execute_in_process(partition_key=window_key(window), instance=instance, raise_on_error=False)


def staged_files(cfg) -> list[Path]:
    return sorted((Path(cfg.lake_dir) / STAGING_DIR).rglob("*.parquet"))


def step_events(result, event_type: dg.DagsterEventType) -> list[str]:
    return sorted(e.step_key for e in result.all_events if e.event_type == event_type)


def test_shard_steps_in_dagster_give_the_rows_of_the_unsharded_window(landed, pg_dsn):
    cfg, window = landed
    run_window(cfg, window, WHOLE_WINDOW, 1)
    single = tables(pg_dsn)

    empty_tables(pg_dsn)
    enrich(cfg, window, SMALL_CHUNK, SHARDS)
    result = run_shard_steps(cfg, window)
    assert result.success
    topology_stages(cfg, window)
    assert tables(pg_dsn) == single

    stage_steps = [k for k in step_events(result, dg.DagsterEventType.STEP_SUCCESS) if "stage_shard" in k]
    assert stage_steps == [f"flow_stats.flow_stats_stage_shard[shard_{n}]" for n in range(SHARDS)]
    meta = result.asset_materializations_for_node("flow_stats")[0].metadata
    assert meta["dagster/row_count"].value == len(single["flow_stats"])
    assert meta["dagster/table_name"].value == "flowlens.flow_stats"
    assert [c.name for c in meta["dagster/column_schema"].schema.columns] == [c for c, _, _ in flow_stats.COLUMNS]
    assert set(meta["dagster/column_lineage"].lineage.deps_by_column) == set(flow_stats.LINEAGE)
    assert meta["rows_read"].value == FLOWS
    assert staged_files(cfg) == []  # the commit removed what it swapped in


@pytest.mark.parametrize("landed", ["postgres"], indirect=True)
def test_a_shard_step_failing_after_staging_is_retried_without_double_counting(landed, pg_dsn, monkeypatch):
    cfg, window = landed
    run_window(cfg, window, SMALL_CHUNK, SHARDS)
    clean = tables(pg_dsn)

    empty_tables(pg_dsn)
    enrich(cfg, window, SMALL_CHUNK, SHARDS)
    original = flow_stats_shards.stage_rows

    def staged_then_failed(stats: pl.DataFrame, path: Path) -> None:
        original(stats, path)  # the shard's rows are staged whole, then its step fails before reporting them
        if path.name == "shard-1.attempt-0.parquet":
            raise Injected("shard 1 failed after staging")

    monkeypatch.setattr(flow_stats_shards, "stage_rows", staged_then_failed)
    result = run_shard_steps(cfg, window, retries=1)
    assert result.success
    assert step_events(result, dg.DagsterEventType.STEP_RESTARTED) == ["flow_stats.flow_stats_stage_shard[shard_1]"]
    topology_stages(cfg, window)
    assert tables(pg_dsn) == clean
    assert staged_files(cfg) == []
    flow_stats_loads = [row for row in load_rows(pg_dsn) if row[1] == FLOW_STATS]
    assert len(flow_stats_loads) == 1 and flow_stats_loads[0][2] == FLOWS  # rows_read: every flow once


def load_rows(dsn: str) -> list[tuple]:
    with psycopg.connect(dsn) as conn:
        return conn.execute("SELECT window_start, asset, rows_read FROM flowlens.window_loads").fetchall()


@pytest.mark.parametrize("landed", ["postgres"], indirect=True)
def test_a_killed_shard_step_then_its_run_re_executed_from_failure_counts_nothing_twice(
    landed, pg_dsn, monkeypatch, tmp_path
):
    cfg, window = landed
    run_window(cfg, window, SMALL_CHUNK, SHARDS)
    clean = tables(pg_dsn)

    empty_tables(pg_dsn)
    enrich(cfg, window, SMALL_CHUNK, SHARDS)
    arm_killed_shard(monkeypatch, cfg, tmp_path / "killed", retries=0)
    job = dg.reconstructable(killed_shard_job.killed_shard_job)
    with dg.instance_for_test() as instance:  # on disk: the step processes share it
        partition = {"dagster/partition": window_key(window)}
        with dg.execute_job(job, instance, tags=partition) as first:
            assert not first.success
            failed = step_events(first, dg.DagsterEventType.STEP_FAILURE)
        assert failed == ["flow_stats.flow_stats_stage_shard[shard_1]"]
        assert (tmp_path / "killed").exists()  # the step's process really died mid-run
        assert tables(pg_dsn)["flow_stats"] == []  # nothing was committed
        assert staged_files(cfg)  # shard 1's whole file among them: it must not count

        again = dg.ReexecutionOptions.from_failure(first.run_id, instance)
        with dg.execute_job(job, instance, tags=partition, reexecution_options=again) as second:
            assert second.success
            ran = step_events(second, dg.DagsterEventType.STEP_SUCCESS)
    # the shards that had succeeded are reused from the first run, not aggregated again
    assert ran == ["flow_stats.flow_stats_commit", "flow_stats.flow_stats_stage_shard[shard_1]"]
    topology_stages(cfg, window)
    assert tables(pg_dsn) == clean
    assert staged_files(cfg) == []


def arm_killed_shard(monkeypatch, cfg, marker: Path, retries: int) -> None:
    """The spec of :mod:`tests.assets.killed_shard_job`: the test stack, 3 shards, 2 step processes."""
    sharded = cfg.pipeline.model_copy(update={"chunk_flows": SMALL_CHUNK, "shards": SHARDS})
    spec = shard_steps.spec(cfg.model_copy(update={"pipeline": sharded}), 2, retries)
    spec_file = Path(cfg.lake_dir).parent / "killed-shard-spec.json"  # one path per session: see the job's module
    killed_shard_job.write_spec(spec_file, spec, marker)
    monkeypatch.setenv(killed_shard_job.SPEC_FILE_ENV, str(spec_file))
