"""End to end: generator -> ingest daemon -> landing -> sensor tick -> window runs -> tables = ground truth.

Both landings: PostgreSQL ``flow_raw`` (minimal mode) and Kafka (a fresh ``flows.raw`` topic).
The generator replays ten simulated minutes from two hours ago at 60x, with exporter timestamps
assigning windows (``ingest.timestamp_source: export``); its ground truth is the sum per
(src, dst, dst_port, protocol) of everything it sent.
"""

import json
import os
import signal
import socket
import subprocess
import sys
import time
from datetime import timedelta
from pathlib import Path

import dagster as dg
import psycopg
import pyarrow.parquet as pq
import pytest
from confluent_kafka import TopicPartition

from assets.addresses import addr_text
from assets.consumer_group import group_consumer
from assets.partitions import five_minute_partitions
from assets.resources import build_resources
from flowlens_dagster.checks import names
from flowlens_dagster.definitions import defs
from flowlens_dagster.jobs import window_job
from flowlens_dagster.sensors import RANGE_END_TAG, RANGE_START_TAG, SENSOR_NAME
from ingest.config import load_config
from ingest.land import open_landing
from tests.assets import scenario
from tests.assets.test_window_assets import pipeline_config

pytestmark = pytest.mark.integration
FLOWLENS = str(Path(sys.executable).parent / "flowlens")
ROOT = Path(__file__).resolve().parents[2]


def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def env_for(cfg) -> dict[str, str]:
    return {
        **os.environ,
        "FLOWLENS_MODE": cfg.mode,
        "FLOWLENS_POSTGRES__DATABASE": cfg.postgres.database,
        "FLOWLENS_KAFKA__RAW_TOPIC": cfg.kafka.raw_topic,
        "FLOWLENS_INGEST__TIMESTAMP_SOURCE": "export",
        "FLOWLENS_PIPELINE__LAKE_DIR": str(cfg.lake_dir),
        "FLOWLENS_PIPELINE__INSTANCE_TIMEOUT_SECONDS": "1",  # the stopped daemon must not hold windows
        "FLOWLENS_PIPELINE__GRACE_SECONDS": "0",
        "FLOWLENS_DNS__ENABLED": "false",
    }


def land_generated_traffic(cfg, base, tmp_path: Path) -> Path:
    """Run the daemon, send ten simulated minutes, stop the daemon; return the truth file."""
    port, truth = free_udp_port(), tmp_path / "truth.parquet"
    env = env_for(cfg)
    daemon = subprocess.Popen(
        [FLOWLENS, "ingest", "--listen", f"127.0.0.1:{port}", "--processes", "1", "--metrics-port", "0",
         "--instance-id", "e2e", "--mode", cfg.mode],
        env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True,
    )  # fmt: skip
    try:
        time.sleep(3)  # sockets bound
        subprocess.run(
            [FLOWLENS, "generate", "--target", f"127.0.0.1:{port}", "--start", base.isoformat(), "--speed", "60",
             "--duration", "10", "--rate", "3000", "--versions", "9,10", "--seed", "11", "--truth", str(truth)],
            env=env, cwd=ROOT, check=True, capture_output=True, timeout=120,
        )  # fmt: skip
        time.sleep(cfg.ingest.batch_max_seconds + cfg.ingest.heartbeat_seconds + 1)
    finally:
        os.killpg(daemon.pid, signal.SIGTERM)
        out, _ = daemon.communicate(timeout=60)
    assert daemon.returncode == 0, out.decode()[-3000:]
    time.sleep(1.5)  # past the instance timeout: the daemon is silent now
    return truth


def tick_and_run(cfg, base, monkeypatch) -> list[str]:
    """One sensor tick from ``base``; run every requested window in order; return the partition keys."""
    for name, value in env_for(cfg).items():
        if name.startswith("FLOWLENS_"):
            monkeypatch.setenv(name, value)
    # What the code location loads with this environment (the test's Redis db kept): resources carry it.
    resources = build_resources(load_config().model_copy(update={"redis": cfg.redis}), use_env=False)
    sensor = defs.resolve_sensor_def(SENSOR_NAME)
    with dg.instance_for_test() as instance:
        cursor = json.dumps({"next_window": base.isoformat()})
        with dg.build_sensor_context(instance=instance, cursor=cursor, resources=resources) as context:
            result = sensor(context)
        assert isinstance(result, dg.SensorResult), result
        job = defs.resolve_job_def(window_job.name)
        keys = []
        for request in result.run_requests:
            # A single window is a partition run; several (catching up) may come as one range run.
            first = request.partition_key or request.tags[RANGE_START_TAG]
            last = request.partition_key or request.tags[RANGE_END_TAG]
            keys += five_minute_partitions.get_partition_keys_in_range(dg.PartitionKeyRange(first, last))
            run = job.execute_in_process(
                partition_key=request.partition_key, tags=dict(request.tags), instance=instance, resources=resources
            )
            assert run.success
            assert_window_checks_pass(run)
    return keys


# Every check the window job runs (a range run evaluates them over its whole range).
WINDOW_CHECKS = {
    names.LANDING_SUITE, names.ENRICHED_SUITE, names.LAKE_MATCHES_LOAD, names.LANDING_MATCHES_LOAD,
    names.FLOW_STATS_SUITE, names.STATS_CONSERVE_FLOWS, names.NO_WINDOW_GAP, names.ASSETS_SUITE,
    names.ASSETS_COVER_STATS, names.DEPENDENCIES_SUITE, names.DEPENDENCIES_COVER_STATS, names.CHANGES_SUITE,
}  # fmt: skip


def assert_window_checks_pass(run: dg.ExecuteInProcessResult) -> None:
    """The data-quality checks ran inside the pipeline's own runs, and clean generated traffic passes them."""
    evaluations = run.get_asset_check_evaluations()
    assert {e.check_name for e in evaluations} >= WINDOW_CHECKS  # plus Dagster's column_schema_change
    failed = [(e.check_name, e.description, dict(e.metadata)) for e in evaluations if not e.passed]
    assert not failed, failed


def totals_by_edge(dsn: str) -> dict[tuple, tuple]:
    with psycopg.connect(dsn) as conn:
        rows = conn.execute(
            "SELECT host(client_addr), host(server_addr), server_port, protocol, sum(bytes), sum(packets), sum(flows)"
            " FROM flowlens.flow_stats GROUP BY 1, 2, 3, 4"
        ).fetchall()
    return {tuple(r[:4]): (int(r[4]), int(r[5]), int(r[6])) for r in rows}


def truth_by_edge(path: Path) -> dict[tuple, tuple]:
    table = pq.read_table(path).to_pylist()
    return {
        (addr_text(r["src_addr"]), addr_text(r["dst_addr"]), r["dst_port"], r["protocol"]): (
            r["bytes"], r["packets"], r["flows"],
        )
        for r in table
    }  # fmt: skip


def assert_tables_match_truth(dsn: str, truth: dict[tuple, tuple]) -> None:
    assert totals_by_edge(dsn) == truth
    with psycopg.connect(dsn) as conn:
        deps = {
            tuple(r)
            for r in conn.execute(
                "SELECT host(client_addr), host(server_addr), server_port, protocol FROM flowlens.dependencies"
            )
        }
        assets = {r[0] for r in conn.execute("SELECT host(addr) FROM flowlens.assets")}
        changes = {(r[0], r[1]) for r in conn.execute("SELECT kind, subject FROM flowlens.changes")}
    assert deps == set(truth)
    assert assets == {a for edge in truth for a in edge[:2]}
    expected = {("new_asset", a) for a in assets} | {
        ("new_dependency", f"{c} -> {s}:{p}/{proto}") for c, s, p, proto in truth
    }
    assert {c for c in changes if c[0] != "dependency_gone"} == expected


def run_end_to_end(cfg, tmp_path, monkeypatch, dsn):
    base = scenario.base_window()
    truth_file = land_generated_traffic(cfg, base, tmp_path)
    keys = tick_and_run(cfg, base, monkeypatch)
    assert len(keys) >= 2  # ten simulated minutes: at least two windows
    assert_tables_match_truth(dsn, truth_by_edge(truth_file))


def test_minimal_mode_through_flow_raw(flowlens_config, clean_pg, tmp_path, monkeypatch):
    cfg = pipeline_config(flowlens_config)
    run_end_to_end(cfg, tmp_path, monkeypatch, clean_pg)


def test_kafka_mode_through_flows_raw(flowlens_config, clean_pg, kafka_topic, tmp_path, monkeypatch):
    cfg = pipeline_config(flowlens_config)
    cfg = cfg.model_copy(
        update={"mode": "standard", "kafka": cfg.kafka.model_copy(update={"raw_topic": kafka_topic("flows.raw.e2e")})}
    )
    run_end_to_end(cfg, tmp_path, monkeypatch, clean_pg)
    landing = open_landing(cfg)
    try:
        assert landing.read_window(scenario.base_window(), scenario.base_window() + timedelta(minutes=5)).source
    finally:
        landing.close()
    assert_consumer_group_at_the_last_read(cfg, clean_pg)


def assert_consumer_group_at_the_last_read(cfg, dsn: str) -> None:
    """The pipeline's consumer group sits where its window reads stopped (so Kafka tools see its lag)."""
    with psycopg.connect(dsn) as conn:
        positions = [p for (p,) in conn.execute(
            "SELECT source_position FROM flowlens.window_loads WHERE asset = 'enriched_flows'")]  # fmt: skip
    stops: dict[int, int] = {}
    for position in positions:
        for partition, (_first, stop) in position.items():
            stops[int(partition)] = max(stops.get(int(partition), 0), stop)
    assert stops and any(stops.values()), positions
    consumer = group_consumer(cfg.kafka.bootstrap_servers)
    try:
        tps = consumer.committed([TopicPartition(cfg.kafka.raw_topic, p) for p in stops], timeout=10)
    finally:
        consumer.close()
    assert {tp.partition: tp.offset for tp in tps} == stops
