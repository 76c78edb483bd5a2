"""The local stack against the real services: health, settings from the seed, topics, lifecycle."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import psycopg
import pytest
import redis as redis_lib

from flowlens_dagster.stack import cli as stack
from flowlens_dagster.stack import kafka, postgres, process
from flowlens_dagster.stack import redis as stack_redis
from ingest.config import FlowLensConfig

pytestmark = pytest.mark.integration
DAY_MS = 24 * 3600 * 1000


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_status_reports_every_service_healthy(flowlens_config: FlowLensConfig) -> None:
    report = stack.status(flowlens_config, "full")
    assert set(report) == {"postgresql", "redis", "kafka", "exporter", "alertmanager", "prometheus"}
    for name, entry in report.items():
        assert entry["healthy"], f"{name}: {entry['detail']}"
        assert isinstance(entry["pid"], int), f"{name} should be a process this stack started"


def test_status_command_exit_code_and_output(flowlens_config: FlowLensConfig) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "flowlens_dagster.cli", "stack", "status", "--mode", "full"],
        capture_output=True, text=True, check=False, timeout=60,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    lines = result.stdout.splitlines()
    assert [line.split()[:2] for line in lines] == [
        ["postgresql", "healthy"],
        ["redis", "healthy"],
        ["kafka", "healthy"],
        ["exporter", "healthy"],
        ["alertmanager", "healthy"],
        ["prometheus", "healthy"],
    ]


def test_status_command_fails_when_a_service_is_down(flowlens_config: FlowLensConfig) -> None:
    port = _free_port()
    env = {**os.environ, "FLOWLENS_REDIS__PORT": str(port)}
    result = subprocess.run(
        [sys.executable, "-m", "flowlens_dagster.cli", "stack", "status", "--mode", "standard", "--json"],
        capture_output=True, text=True, check=False, timeout=60, env=env,
    )  # fmt: skip
    report = json.loads(result.stdout)
    assert result.returncode == 1
    assert report["postgresql"]["healthy"] and report["kafka"]["healthy"]
    assert not report["redis"]["healthy"]
    assert f"127.0.0.1:{port}" in report["redis"]["detail"]


def test_second_up_is_a_no_op(flowlens_config: FlowLensConfig) -> None:
    pids = {name: module.running_pid(flowlens_config) for name, module in stack.ALL_SERVICES.items()}
    stack.up(flowlens_config, "full")
    assert {name: module.running_pid(flowlens_config) for name, module in stack.ALL_SERVICES.items()} == pids


def test_health_detects_a_service_that_is_not_there(flowlens_config: FlowLensConfig) -> None:
    port = _free_port()
    cfg = flowlens_config.model_copy(
        update={
            "postgres": flowlens_config.postgres.model_copy(update={"port": port}),
            "redis": flowlens_config.redis.model_copy(update={"port": port}),
            "kafka": flowlens_config.kafka.model_copy(update={"bootstrap_servers": f"127.0.0.1:{port}"}),
        }
    )
    for module in (postgres, stack_redis, kafka):
        healthy, detail = module.health(cfg)
        assert not healthy
        assert str(port) in detail


def test_postgres_runs_with_the_seed_settings(flowlens_config: FlowLensConfig, pg_dsn: str) -> None:
    with psycopg.connect(pg_dsn) as conn:
        show = {name: conn.execute(f"SHOW {name}").fetchone()[0] for name in (
            "synchronous_commit", "commit_delay", "commit_siblings", "wal_compression",
            "checkpoint_completion_target", "autovacuum_vacuum_scale_factor", "autovacuum_naptime",
            "max_connections", "port",
        )}  # fmt: skip
    assert show == {
        "synchronous_commit": "off",
        "commit_delay": "10000",
        "commit_siblings": "10",
        "wal_compression": "lz4",  # the seed's "on" (pglz), with the faster method
        "checkpoint_completion_target": "0.9",
        "autovacuum_vacuum_scale_factor": "0.05",
        "autovacuum_naptime": "10s",
        "max_connections": "200",
        "port": str(flowlens_config.postgres.port),
    }


def test_redis_runs_with_the_seed_settings(redis_url: str) -> None:
    client = redis_lib.Redis.from_url(redis_url, decode_responses=True)
    try:
        assert client.config_get("maxmemory-policy") == {"maxmemory-policy": "allkeys-lru"}
        assert client.config_get("appendonly") == {"appendonly": "yes"}
        assert client.config_get("appendfsync") == {"appendfsync": "everysec"}
        assert int(client.config_get("maxmemory")["maxmemory"]) >= 256 * 1024 * 1024
    finally:
        client.close()


def test_seed_topics_exist_with_partitions_and_retention(flowlens_config: FlowLensConfig) -> None:
    topics = kafka.describe_topics(flowlens_config)
    one = {"replicas": 1, "min.insync.replicas": "1"}  # one node: one replica
    assert topics == {
        "flows.raw": {"partitions": 6, "retention.ms": str(7 * DAY_MS), "cleanup.policy": "delete", **one},
        "flows.enriched": {"partitions": 6, "retention.ms": str(DAY_MS), "cleanup.policy": "delete", **one},
        "changes.detected": {"partitions": 3, "retention.ms": str(30 * DAY_MS), "cleanup.policy": "compact,delete"}
        | one,
        "flows.raw.watermarks": {"partitions": 1, "retention.ms": str(7 * DAY_MS), "cleanup.policy": "compact", **one},
        "flows.raw.landed": {"partitions": 1, "retention.ms": str(7 * DAY_MS), "cleanup.policy": "compact,delete"}
        | one,
    }


def test_ensure_topics_twice_creates_nothing_new(flowlens_config: FlowLensConfig) -> None:
    assert kafka.ensure_topics(flowlens_config) == []


def test_kafka_topic_fixture_round_trip(kafka_bootstrap: str, kafka_topic) -> None:
    from confluent_kafka import Consumer, Producer

    topic = kafka_topic("stacktest", partitions=2)
    producer = Producer({"bootstrap.servers": kafka_bootstrap})
    producer.produce(topic, key=b"k", value=b"hello", partition=1)
    assert producer.flush(10) == 0
    consumer = Consumer({"bootstrap.servers": kafka_bootstrap, "group.id": topic, "auto.offset.reset": "earliest"})
    try:
        from confluent_kafka import TopicPartition

        consumer.assign([TopicPartition(topic, 1, 0)])
        message = None
        deadline = time.monotonic() + 20
        while message is None and time.monotonic() < deadline:
            message = consumer.poll(0.5)
        assert message is not None and message.error() is None
        assert (message.key(), message.value()) == (b"k", b"hello")
    finally:
        consumer.close()


def test_clean_fixtures_empty_real_state(clean_pg: str, clean_redis: str) -> None:
    with psycopg.connect(clean_pg) as conn:
        rows = conn.execute("SELECT count(*) FROM flowlens.assets").fetchone()[0]
    client = redis_lib.Redis.from_url(clean_redis)
    try:
        assert client.dbsize() == 0
    finally:
        client.close()
    assert rows == 0


def test_port_taken_by_another_program_names_the_setting() -> None:
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        port = squatter.getsockname()[1]
        with pytest.raises(process.StackError) as err:
            process.check_port_free("127.0.0.1", port, "redis", "redis.port")
    message = str(err.value)
    assert f"127.0.0.1:{port}" in message
    assert "redis.port" in message and "FLOWLENS_REDIS__PORT" in message


def test_redis_lifecycle_in_its_own_state_dir(tmp_path: Path) -> None:
    """up -> healthy -> up again (same pid) -> down -> process gone, on a private port and dir."""
    cfg = FlowLensConfig(state_dir=tmp_path, redis={"port": _free_port(), "maxmemory": "64mb"})
    try:
        stack_redis.up(cfg)
        pid = stack_redis.running_pid(cfg)
        assert pid is not None
        healthy, detail = stack_redis.health(cfg)
        assert healthy, detail
        assert "policy=allkeys-lru" in detail
        stack_redis.up(cfg)
        assert stack_redis.running_pid(cfg) == pid
    finally:
        stopped = stack_redis.down(cfg)
    assert stopped
    assert not Path(f"/proc/{pid}").exists() or not process.is_ours(pid, "redis-server")
    assert not stack_redis.health(cfg)[0]
    assert stack_redis.down(cfg) is False  # nothing of ours left to stop


def test_down_never_signals_a_process_that_is_not_ours(tmp_path: Path) -> None:
    """A pidfile naming someone else's process (pid reuse) is treated as stale, not killed."""
    stranger = subprocess.Popen(["sleep", "30"])
    try:
        pidfile = tmp_path / "redis.pid"
        pidfile.write_text(f"{stranger.pid}\n")
        assert process.stop(pidfile, "redis-server 127.0.0.1:1", "redis") is False
        assert stranger.poll() is None
        assert not pidfile.exists()
    finally:
        stranger.send_signal(signal.SIGKILL)
        stranger.wait()
