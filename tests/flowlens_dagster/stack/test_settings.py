"""Service settings: the scaling model's values, scaled by RAM and cores as the comments in settings.py say."""

from __future__ import annotations

import pytest

from flowlens_dagster.stack.settings import (
    GB,
    MB,
    kafka_node_settings,
    kafka_settings,
    kafka_topics,
    parse_size,
    postgres_settings,
    redis_maxmemory,
    redis_settings,
)
from ingest.config import FlowLensConfig

CFG = FlowLensConfig()


def test_postgres_on_the_seed_reference_host_gets_the_seed_memory_fractions_of_its_share() -> None:
    seed_host = postgres_settings(CFG, ram=128 * GB, cores=8)  # PostgreSQL's share: 32 GB, the scaling model's host
    assert (seed_host["shared_buffers"], seed_host["effective_cache_size"]) == ("8192MB", "24576MB")
    assert (seed_host["work_mem"], seed_host["maintenance_work_mem"]) == ("256MB", "2048MB")
    assert (seed_host["max_wal_size"], seed_host["min_wal_size"]) == ("16384MB", "4096MB")
    assert (seed_host["max_parallel_workers_per_gather"], seed_host["max_parallel_workers"]) == ("4", "8")
    assert seed_host["max_worker_processes"] == "16"


def test_postgres_on_a_small_machine_scales_down_but_keeps_the_write_settings() -> None:
    small = postgres_settings(CFG, ram=8 * GB, cores=2)
    assert small["shared_buffers"] == "512MB"
    assert small["work_mem"] == "32MB"
    assert small["max_wal_size"] == "1024MB" and small["min_wal_size"] == "256MB"
    assert (small["max_parallel_workers_per_gather"], small["max_parallel_workers"]) == ("1", "2")
    assert (small["synchronous_commit"], small["commit_delay"], small["commit_siblings"]) == ("off", "10000", "10")
    assert small["autovacuum_vacuum_scale_factor"] == "0.05"
    assert small["port"] == str(CFG.postgres.port)


@pytest.mark.parametrize(
    ("ram", "expected"),
    [(2 * GB, 256 * MB), (24 * GB, int(24 * GB / 16)), (256 * GB, 4 * GB)],
)
def test_redis_auto_maxmemory_is_bounded(ram: int, expected: int) -> None:
    assert redis_maxmemory(CFG, ram) == expected


def test_redis_explicit_maxmemory_and_seed_policy() -> None:
    cfg = FlowLensConfig(redis={"maxmemory": "4gb"})
    conf = redis_settings(cfg, "/data")
    assert conf["maxmemory"] == str(4 * GB)
    assert (conf["maxmemory-policy"], conf["appendonly"], conf["appendfsync"]) == ("allkeys-lru", "yes", "everysec")


def test_parse_size_rejects_nonsense() -> None:
    assert parse_size("512mb") == 512 * MB
    with pytest.raises(ValueError, match="not a size"):
        parse_size("lots")


def test_kafka_single_node_settings() -> None:
    conf = kafka_settings(CFG, "/k", cores=2)
    assert conf["process.roles"] == "broker,controller"
    assert conf["listeners"] == "PLAINTEXT://127.0.0.1:59092,CONTROLLER://127.0.0.1:59093"
    assert (conf["default.replication.factor"], conf["min.insync.replicas"]) == ("1", "1")
    assert (conf["log.retention.hours"], conf["log.segment.bytes"]) == ("168", str(GB))
    assert (conf["num.io.threads"], conf["num.network.threads"]) == ("2", "2")
    assert kafka_settings(CFG, "/k", cores=16)["num.io.threads"] == "8"


def test_kafka_cluster_nodes_form_one_static_quorum_with_three_replicas() -> None:
    servers = "127.0.0.1:59092,127.0.0.1:59192,127.0.0.1:59292"
    cfg = FlowLensConfig(kafka={"brokers": 3, "bootstrap_servers": servers})
    second = kafka_node_settings(cfg, 2, "/k2", cores=2)
    assert second["node.id"] == "2" and "controller.quorum.bootstrap.servers" not in second
    assert second["controller.quorum.voters"] == "1@127.0.0.1:59093,2@127.0.0.1:59193,3@127.0.0.1:59293"
    assert second["listeners"] == "PLAINTEXT://127.0.0.1:59192,CONTROLLER://127.0.0.1:59193"
    assert (second["default.replication.factor"], second["min.insync.replicas"]) == ("3", "2")
    assert (second["offsets.topic.replication.factor"], second["transaction.state.log.min.isr"]) == ("3", "2")
    assert all(conf["min.insync.replicas"] == "2" for _, conf in kafka_topics(cfg).values())


def test_seed_topics() -> None:
    topics = kafka_topics(CFG)
    assert {name: parts for name, (parts, _) in topics.items()} == {
        "flows.raw": 6,
        "flows.enriched": 6,
        "changes.detected": 3,
        "flows.raw.watermarks": 1,
        "flows.raw.landed": 1,
    }
    assert topics["changes.detected"][1]["cleanup.policy"] == "compact,delete"
    assert topics["flows.raw"][1]["cleanup.policy"] == "delete"


def test_kafka_cluster_ids_never_read_as_an_option() -> None:
    from flowlens_dagster.stack.kafka import new_cluster_id

    ids = [new_cluster_id() for _ in range(2000)]  # about 1 in 64 random ids starts with "-"
    assert all(len(i) == 22 and not i.startswith("-") for i in ids)
