"""Shared test fixtures: real services from the project's own local stack.

The first fixture that needs a service brings the stack up in ``full`` mode through
``flowlens_dagster.stack`` (the same code as ``flowlens stack up``). A stack that was already running
is reused and left running. Services this session started are stopped at the end, unless another
test session (several developers share one tree) is still using them, or FLOWLENS_TEST_KEEP_STACK=1.

Fixtures:
- ``flowlens_config`` (session): FlowLensConfig for the test stack: database ``flowlens_test``
  (or $FLOWLENS_TEST_DATABASE, for sessions that must not share it), migrated; Redis db 15; the
  Parquet lake in a temporary directory.
- ``pg_dsn`` (session): psycopg conninfo of that database.
- ``clean_pg`` (function): truncates every flowlens table (not schema_migrations), returns the DSN.
- ``redis_url`` (session) / ``clean_redis`` (function, flushes the test db): the Redis URL.
- ``kafka_bootstrap`` (session): the broker address.
- ``kafka_topic`` (function): factory ``kafka_topic(name_prefix, partitions=6) -> str`` creating a
  fresh uniquely named topic; the topics are deleted after the test.
Tests using them are marked ``@pytest.mark.integration``.
"""

from __future__ import annotations

import contextlib
import os
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import psycopg
import pytest
from confluent_kafka import KafkaException

from flowlens_dagster.migrate import migrate
from flowlens_dagster.stack import cli as stack
from flowlens_dagster.stack import kafka, postgres
from ingest.config import FlowLensConfig, load_config

TEST_DATABASE = os.environ.get("FLOWLENS_TEST_DATABASE", "flowlens_test")
TEST_REDIS_DB = 15  # far from the scaling model's databases 0-3 used by a developer's running stack
STACK_MODE = "full"


def _sessions_dir(cfg: FlowLensConfig) -> Path:
    return cfg.state_dir / "run" / "test-sessions"


def _other_live_sessions(cfg: FlowLensConfig) -> list[int]:
    """Pids of other pytest sessions that registered as stack users and are still alive."""
    alive = []
    for entry in _sessions_dir(cfg).glob("*"):
        pid = int(entry.name) if entry.name.isdigit() else -1
        if pid != os.getpid() and pid > 0 and Path(f"/proc/{pid}").exists():
            alive.append(pid)
        elif pid != os.getpid():
            entry.unlink(missing_ok=True)
    return alive


@pytest.fixture(scope="session")
def _stack() -> Iterator[FlowLensConfig]:
    """The running local stack (full mode), started here if needed."""
    cfg = load_config()
    before = {name: module.running_pid(cfg) for name, module in stack.ALL_SERVICES.items()}
    marker = _sessions_dir(cfg) / str(os.getpid())
    marker.parent.mkdir(parents=True, exist_ok=True)
    marker.touch()
    stack.up(cfg, STACK_MODE)
    yield cfg
    marker.unlink(missing_ok=True)
    started = [name for name, pid in before.items() if pid is None]
    if not started or os.environ.get("FLOWLENS_TEST_KEEP_STACK") == "1" or _other_live_sessions(cfg):
        return
    stack.down(cfg, only=started)


@pytest.fixture(scope="session")
def flowlens_config(_stack: FlowLensConfig, tmp_path_factory: pytest.TempPathFactory) -> FlowLensConfig:
    base = _stack
    postgres.ensure_database(base, TEST_DATABASE)
    cfg = base.model_copy(
        update={
            "postgres": base.postgres.model_copy(update={"database": TEST_DATABASE}),
            "redis": base.redis.model_copy(update={"db": TEST_REDIS_DB}),
            "pipeline": base.pipeline.model_copy(update={"lake_dir": tmp_path_factory.mktemp("lake")}),
        }
    )
    migrate(cfg, log=lambda _message: None)
    return cfg


@pytest.fixture(scope="session")
def pg_dsn(flowlens_config: FlowLensConfig) -> str:
    return flowlens_config.postgres.dsn()


def truncate_flowlens_tables(dsn: str) -> None:
    """Empty every table of schema flowlens except the migration record (partitions stay)."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("SET lock_timeout = '20s'")  # fail clearly if a leaked connection holds a lock
        names = [
            row[0]
            for row in conn.execute(
                """
                SELECT format('%I.%I', n.nspname, c.relname)
                FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
                WHERE n.nspname = 'flowlens' AND c.relkind IN ('r', 'p') AND NOT c.relispartition
                  AND c.relname <> 'schema_migrations'
                ORDER BY 1
                """
            ).fetchall()
        ]
        if names:
            conn.execute(f"TRUNCATE {', '.join(names)} RESTART IDENTITY CASCADE")


@pytest.fixture
def clean_pg(pg_dsn: str) -> str:
    truncate_flowlens_tables(pg_dsn)
    return pg_dsn


@pytest.fixture(scope="session")
def redis_url(flowlens_config: FlowLensConfig) -> str:
    return flowlens_config.redis.url()


@pytest.fixture
def clean_redis(redis_url: str) -> str:
    import redis as redis_lib

    client = redis_lib.Redis.from_url(redis_url)
    try:
        client.flushdb()
    finally:
        client.close()
    return redis_url


@pytest.fixture(scope="session")
def kafka_bootstrap(flowlens_config: FlowLensConfig) -> str:
    return flowlens_config.kafka.bootstrap_servers


@pytest.fixture
def kafka_topic(flowlens_config: FlowLensConfig) -> Iterator[Callable[..., str]]:
    from confluent_kafka.admin import NewTopic

    client = kafka.admin(flowlens_config)
    created: list[str] = []

    def make(name_prefix: str, partitions: int = 6) -> str:
        name = f"{name_prefix}.{uuid.uuid4().hex[:10]}"
        futures = client.create_topics([NewTopic(name, num_partitions=partitions, replication_factor=1)])
        futures[name].result(timeout=30)
        created.append(name)
        _wait_for_leaders(client, name, partitions)
        return name

    yield make
    if created:
        # A landing on a topic also creates its watermark and tally topics (ingest.land.kafka).
        created += [f"{name}{side}" for name in created for side in (".watermarks", ".landed")]
        for future in client.delete_topics(created, operation_timeout=30).values():
            with contextlib.suppress(KafkaException):  # a topic the test deleted itself is fine
                future.result(timeout=30)


def _wait_for_leaders(client, name: str, partitions: int, timeout: float = 30.0) -> None:
    """Topic creation returns before every partition has a leader; producers need the leaders."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        topic = client.list_topics(topic=name, timeout=5).topics.get(name)
        ready = topic is not None and topic.error is None and len(topic.partitions) == partitions
        if ready and all(p.leader >= 0 for p in topic.partitions.values()):
            return
        time.sleep(0.1)
    raise RuntimeError(f"topic {name}: partitions have no leader after {timeout:.0f}s")
