"""Service settings from the scaling model (§3.3, §4.4, §5.4), scaled to this machine.

The seed sizes each service for a dedicated host (PostgreSQL: 8 cores / 32 GB; Kafka: 32 GB per
broker; Redis: 8 GB). The local stack runs all three *plus* Dagster, the ingest daemon and Polars
on one machine, so memory settings keep the scaling model's fractions but apply them to this service's share
of RAM, and thread counts follow the core count. Every value that differs from the seed says why.
Functions return plain dicts so tests and ``stack status --settings`` can show what was applied.
"""

from __future__ import annotations

import os
import re

from ingest.config import FlowLensConfig
from ingest.land.ledger import TOPIC_CONFIG as LEDGER_CONFIG
from ingest.land.ledger import ledger_topic

MB = 1024 * 1024
GB = 1024 * MB

# Share of the machine's RAM each service may plan for (they share the box with the pipeline).
POSTGRES_RAM_SHARE = 0.25
REDIS_RAM_SHARE = 1 / 16
KAFKA_HEAP_SHARE = 1 / 24


def machine_ram_bytes() -> int:
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def machine_cores() -> int:
    return os.cpu_count() or 1


def _mb(value: int) -> str:
    return f"{max(1, value // MB)}MB"


def postgres_settings(cfg: FlowLensConfig, ram: int | None = None, cores: int | None = None) -> dict[str, str]:
    """postgresql.conf values (the scaling model §3.3), written to ``conf.d``-style include by the stack."""
    ram = ram or machine_ram_bytes()
    cores = cores or machine_cores()
    budget = int(ram * POSTGRES_RAM_SHARE)
    return {
        "listen_addresses": f"'{cfg.postgres.host}'",
        "port": str(cfg.postgres.port),
        # Memory: the scaling model's fractions (25% / 75%) of PostgreSQL's share of RAM, not of the whole
        # machine, because this host also runs Kafka, Redis, Dagster and the Polars pipeline.
        "shared_buffers": _mb(budget // 4),
        "effective_cache_size": _mb(budget * 3 // 4),
        # Seed: 256MB with 200 connections assumes 32 GB; scaled so 64 concurrent sorts fit the budget.
        "work_mem": _mb(min(256 * MB, budget // 64)),
        # Seed: 2GB; capped at 1/8 of the budget so a VACUUM cannot starve the pipeline.
        "maintenance_work_mem": _mb(min(2 * GB, budget // 8)),
        # WAL (the scaling model's values, max/min sizes scaled by the same budget: 16GB/4GB on a 32 GB host).
        "wal_level": "replica",
        "max_wal_size": _mb(min(16 * GB, max(1 * GB, budget // 2))),
        "min_wal_size": _mb(min(4 * GB, max(256 * MB, budget // 8))),
        # The seed's "on" selects pglz; lz4 compresses the same full-page images for a fraction of
        # the CPU. A window's flow_stats key (1M rows, built in one pass, every page logged whole):
        # 0.73-0.83 s with pglz, 0.39 s with lz4, 0.36 s uncompressed (psql, same session).
        "wal_compression": "lz4",
        "checkpoint_completion_target": "0.9",
        # Write performance: exactly the seed (asynchronous commit is the point of §3.3).
        "synchronous_commit": "off",
        "commit_delay": "10000",
        "commit_siblings": "10",
        "max_connections": "200",
        # Parallelism: the scaling model's 4/8/16 are for 8 cores; follow this machine's core count.
        "max_parallel_workers_per_gather": str(max(1, min(4, cores // 2))),
        "max_parallel_workers": str(min(8, cores)),
        "max_worker_processes": str(min(16, max(8, cores * 2))),
        # Autovacuum: seed values, aggressive for the high-write flow tables.
        "autovacuum_vacuum_scale_factor": "0.05",
        "autovacuum_analyze_scale_factor": "0.02",
        "autovacuum_naptime": "10s",
        # Not in the seed: keep the log readable and in the state dir's log file (stderr).
        "logging_collector": "off",
        "log_min_messages": "warning",
        "log_line_prefix": "'%m [%p] %q%u@%d '",
        "timezone": "'UTC'",
    }


_SIZE = re.compile(r"^\s*(\d+)\s*(b|kb|mb|gb)?\s*$", re.IGNORECASE)


def parse_size(value: str) -> int:
    match = _SIZE.match(value)
    if not match:
        raise ValueError(f"{value!r} is not a size like '512mb' or '4gb'")
    unit = (match.group(2) or "b").lower()
    return int(match.group(1)) * {"b": 1, "kb": 1024, "mb": MB, "gb": GB}[unit]


def redis_maxmemory(cfg: FlowLensConfig, ram: int | None = None) -> int:
    if cfg.redis.maxmemory != "auto":
        return parse_size(cfg.redis.maxmemory)
    ram = ram or machine_ram_bytes()
    # Seed: 4gb on an 8 GB Redis host (~700 MB working set per §5.3). Here Redis is one tenant of a
    # shared machine: 1/16 of RAM, at least 256 MB, never above the scaling model's 4 GB.
    return max(256 * MB, min(4 * GB, int(ram * REDIS_RAM_SHARE)))


def redis_settings(cfg: FlowLensConfig, data_dir: str, ram: int | None = None) -> dict[str, str]:
    """redis.conf values (the scaling model §5.4)."""
    return {
        "bind": cfg.redis.host,
        "port": str(cfg.redis.port),
        "protected-mode": "yes",
        "daemonize": "no",  # the stack tracks the pid itself
        # Not in the seed: keep the config file path in the process title, which is how the stack
        # recognises its own Redis (the default title holds only the address).
        "proc-title-template": '"{title} {listen-addr} {server-mode} {config-file}"',
        "dir": data_dir,
        "logfile": '""',  # stdout, captured to the state dir's log file
        "maxmemory": str(redis_maxmemory(cfg, ram)),
        "maxmemory-policy": "allkeys-lru",
        # Persistence: the scaling model's choice (AOF, fsync every second); RDB snapshots off because AOF
        # already covers restarts and a fork per snapshot would double memory on a shared host.
        "appendonly": "yes",
        "appendfsync": "everysec",
        "auto-aof-rewrite-percentage": "100",
        "auto-aof-rewrite-min-size": "64mb",
        "save": '""',
        "tcp-keepalive": "300",
        "timeout": "0",
        # Seed: 10000; Redis lowers it itself when the open-files limit is smaller.
        "maxclients": "10000",
    }


def kafka_heap_mb(ram: int | None = None) -> int:
    ram = ram or machine_ram_bytes()
    # Seed: 32 GB per broker, mostly page cache; the heap itself stays small. 1/24 of RAM, 512MB-2GB.
    return max(512, min(2048, int(ram * KAFKA_HEAP_SHARE) // MB))


def kafka_settings(cfg: FlowLensConfig, log_dir: str, cores: int | None = None) -> dict[str, str]:
    """server.properties for one KRaft node acting as broker and controller (the scaling model §4.4)."""
    cores = cores or machine_cores()
    host, port = cfg.kafka.servers[0]
    controller = f"{host}:{cfg.kafka.controller_port}"
    rf, isr = cfg.kafka.replication, cfg.kafka.min_isr
    return {
        "process.roles": "broker,controller",
        "node.id": "1",
        "controller.quorum.bootstrap.servers": controller,
        "listeners": f"PLAINTEXT://{host}:{port},CONTROLLER://{controller}",
        "advertised.listeners": f"PLAINTEXT://{host}:{port}",
        "controller.listener.names": "CONTROLLER",
        "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
        "inter.broker.listener.name": "PLAINTEXT",
        "log.dirs": log_dir,
        "num.partitions": str(cfg.kafka.raw_partitions),
        # Seed: RF=2, min ISR 1 on 3 brokers. Here kafka.replication_factor / min_insync_replicas: 1 on one
        # node; 3 and 2 on a cluster of 3 or more, so acks=all survives one broker lost without a
        # write acknowledged by a single copy. The internal topics follow, or a lost broker stops commits.
        "default.replication.factor": str(rf),
        "min.insync.replicas": str(isr),
        "offsets.topic.replication.factor": str(rf),
        "transaction.state.log.replication.factor": str(rf),
        "transaction.state.log.min.isr": str(isr),
        "share.coordinator.state.topic.replication.factor": str(rf),
        "share.coordinator.state.topic.min.isr": str(isr),
        # Retention and segments: seed values.
        "log.retention.hours": "168",
        "log.retention.bytes": "-1",
        "log.segment.bytes": str(1024 * MB),
        # Threads: the scaling model's 8 I/O / 4 network threads are for 8+ cores; follow the core count.
        "num.io.threads": str(max(2, min(8, cores))),
        "num.network.threads": str(max(2, min(4, cores // 2))),
        "socket.send.buffer.bytes": "102400",
        "socket.receive.buffer.bytes": "102400",
        "socket.request.max.bytes": "104857600",
        # Not in the seed: no 3 s wait before the first consumer group rebalance (tests, one node).
        "group.initial.rebalance.delay.ms": "0",
        # Not in the scaling model: topics are created explicitly with their own settings (the scaling model §4.2).
        "auto.create.topics.enable": "false",
    }


def kafka_node_settings(cfg: FlowLensConfig, node_id: int, log_dir: str, cores: int | None = None) -> dict[str, str]:
    """server.properties of node ``node_id`` (1-based) of a local cluster: every node is broker and
    controller (a static quorum of ``kafka.brokers`` voters). Node i listens on the i-th bootstrap
    address; its controller port keeps the distance between ``kafka.controller_port`` and the first
    broker's port (59092/59093, 59192/59193, ...)."""
    servers = cfg.kafka.servers
    offset = cfg.kafka.controller_port - servers[0][1]
    voters = ",".join(f"{i}@{h}:{p + offset}" for i, (h, p) in enumerate(servers[: cfg.kafka.brokers], start=1))
    host, port = servers[node_id - 1]
    controller = f"{host}:{port + offset}"
    conf = kafka_settings(cfg, log_dir, cores)
    del conf["controller.quorum.bootstrap.servers"]  # the static quorum below replaces it
    conf.update(
        {
            "node.id": str(node_id),
            "controller.quorum.voters": voters,
            "listeners": f"PLAINTEXT://{host}:{port},CONTROLLER://{controller}",
            "advertised.listeners": f"PLAINTEXT://{host}:{port}",
        }
    )
    return conf


def kafka_topics(cfg: FlowLensConfig) -> dict[str, tuple[int, dict[str, str]]]:
    """The scaling model's §4.2 topics plus the ingest watermarks: name -> (partitions, topic configs).

    Replication is ``kafka.replication`` (set at creation); ``min.insync.replicas`` is a topic config,
    so it is (re)applied like retention."""
    day_ms = 24 * 3600 * 1000
    isr = {"min.insync.replicas": str(cfg.kafka.min_isr)}
    return {
        cfg.kafka.raw_topic: (
            cfg.kafka.raw_partitions,
            {"retention.ms": str(7 * day_ms), "cleanup.policy": "delete", **isr},
        ),
        cfg.kafka.enriched_topic: (6, {"retention.ms": str(day_ms), "cleanup.policy": "delete", **isr}),
        # Compacted *and* time-bounded: the latest change per key survives, nothing older than 30 days.
        cfg.kafka.changes_topic: (3, {"retention.ms": str(30 * day_ms), "cleanup.policy": "compact,delete", **isr}),
        # The daemons' heartbeats (ingest.land.kafka): the latest per instance; the window sensor reads it.
        watermark_topic(cfg): (1, {"cleanup.policy": "compact", "segment.ms": str(3600 * 1000), **isr}),
        # What each landing acknowledged per window (ingest.land.ledger): the landing check's witness.
        ledger_topic(cfg.kafka.raw_topic): (1, {**LEDGER_CONFIG, **isr}),
    }


def watermark_topic(cfg: FlowLensConfig) -> str:
    return f"{cfg.kafka.raw_topic}.watermarks"


def render(settings: dict[str, str], sep: str = " = ") -> str:
    return "".join(f"{key}{sep}{value}\n" for key, value in settings.items())
