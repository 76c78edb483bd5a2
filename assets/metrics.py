"""The pipeline's Prometheus metrics, summed in PostgreSQL across step processes.

Dagster runs every step in a process of its own (and, scaled out, on other hosts), so a counter
kept in a step's memory would vanish with it. Steps count with ordinary prometheus_client
counters and histograms in :data:`REGISTRY`; :func:`flush` adds what changed since the previous
flush to ``flowlens.pipeline_metrics`` (one transaction, rows in key order so concurrent steps
never deadlock), and ``flowlens metrics`` (``flowlens_dagster/monitoring/exporter.py``) serves the
table's totals over HTTP. A flush that fails keeps its deltas for the next one: nothing is lost
while PostgreSQL is away, and nothing is counted twice.

Names and labels follow the scaling model's §9.1:

* ``flowlens_flows_processed_total{service}``: flows read by a pipeline asset (``service`` = asset)
* ``flowlens_kafka_messages_consumed_total{topic}``: ``flows.raw`` messages the pipeline read
* ``flowlens_pg_writes_total{table}`` (rows), ``flowlens_pg_write_latency_seconds{table}``
  (histogram of one window's write transaction): the pipeline's tables; the ingest daemon
  reports ``flow_raw`` under the same names
* ``flowlens_redis_cache_hits_total{cache}``, ``flowlens_redis_cache_misses_total{cache}``:
  enrichment caches (``geo``, ``dns``, ``asset``)
* ``flowlens_quality_checks_total{asset,check,result}``: asset check evaluations (``pass``/``fail``)
"""

from __future__ import annotations

import json
import logging
import threading
from typing import Any

import psycopg
from confluent_kafka import KafkaException
from prometheus_client import CollectorRegistry, Counter, Histogram

from assets import keys
from assets.consumer_group import commit_forward
from ingest.metrics import LATENCY_BUCKETS

log = logging.getLogger(__name__)

REGISTRY = CollectorRegistry(auto_describe=True)

FLOWS_PROCESSED = Counter("flowlens_flows_processed", "Flows read by a pipeline asset", ["service"], registry=REGISTRY)
KAFKA_CONSUMED = Counter(
    "flowlens_kafka_messages_consumed", "Landing messages read by the pipeline", ["topic"], registry=REGISTRY
)
PG_WRITES = Counter("flowlens_pg_writes", "Rows written by the pipeline", ["table"], registry=REGISTRY)
PG_WRITE_LATENCY = Histogram(
    "flowlens_pg_write_latency_seconds", "One window's write transaction", ["table"],
    buckets=LATENCY_BUCKETS, registry=REGISTRY,
)  # fmt: skip
CACHE_HITS = Counter("flowlens_redis_cache_hits", "Enrichment cache hits", ["cache"], registry=REGISTRY)
CACHE_MISSES = Counter("flowlens_redis_cache_misses", "Enrichment cache misses", ["cache"], registry=REGISTRY)
QUALITY_CHECKS = Counter(
    "flowlens_quality_checks", "Asset check evaluations", ["asset", "check", "result"], registry=REGISTRY
)

# Asset -> (PostgreSQL table it writes, WindowResult stage timing that write's transaction).
# enriched_flows writes the lake, not a table; topology_changes and rollups compute in their transaction.
PG_TABLES: dict[str, tuple[str, str]] = {
    keys.FLOW_STATS: ("flow_stats", "write_pg"),
    keys.NETWORK_ASSETS: ("assets", "write_pg"),
    keys.DEPENDENCIES: ("dependencies", "write_pg"),
    keys.TOPOLOGY_CHANGES: ("changes", "detect"),
    keys.FLOW_STATS_HOURLY: ("flow_stats_hourly", "rollup"),
    keys.FLOW_STATS_DAILY: ("flow_stats_daily", "rollup"),
}

Key = tuple[str, str]  # (sample name, labels as sorted JSON)

_lock = threading.Lock()
_flushed: dict[Key, float] = {}


def observe_window(result: Any) -> None:
    """Count one window's work (an ``assets.windows.WindowResult``)."""
    FLOWS_PROCESSED.labels(service=result.asset).inc(result.rows_read)
    if result.source.startswith("kafka:"):
        spans = result.source_position.values()
        KAFKA_CONSUMED.labels(topic=result.source.split(":", 1)[1]).inc(sum(max(0, b - a) for a, b in spans))
    if result.asset in PG_TABLES:
        table, stage = PG_TABLES[result.asset]
        PG_WRITES.labels(table=table).inc(result.rows_written)
        PG_WRITE_LATENCY.labels(table=table).observe(result.seconds.get(stage, 0.0))


def after_window(resources: Any, result: Any) -> None:
    """After a window is written: count it, flush the counters, move the Kafka consumer group forward.

    ``resources`` is the run's (``context.resources``); without ``postgres`` nothing is flushed yet
    (the next flush carries it), without an enabled ``kafka`` no offset is committed.
    """
    observe_window(result)
    postgres, kafka = getattr(resources, "postgres", None), getattr(resources, "kafka", None)
    if postgres is not None:
        flush(postgres.dsn())
    if result.source.startswith("kafka:") and kafka is not None and kafka.enabled:
        try:
            commit_forward(kafka.bootstrap_servers, result.source.split(":", 1)[1], result.source_position)
        except KafkaException as exc:  # the next window commits past this one
            log.warning("consumer group offsets not committed: %s", exc)


def _current() -> dict[Key, tuple[str, str, float]]:
    """Every additive sample of the registry: key -> (family, kind, value); ``_created`` is left out."""
    out = {}
    for family in REGISTRY.collect():
        for sample in family.samples:
            if not sample.name.endswith("_created"):
                key = (sample.name, json.dumps(sample.labels, sort_keys=True))
                out[key] = (family.name, family.type, sample.value)
    return out


def pending() -> list[tuple[str, str, str, str, float]]:
    """(sample, labels JSON, family, kind, delta) not yet flushed, in key order."""
    rows = []
    for key, (family, kind, value) in sorted(_current().items()):
        delta = value - _flushed.get(key, 0.0)
        if delta:
            rows.append((*key, family, kind, delta))
    return rows


def flush(conninfo: str) -> int:
    """Add the deltas since the last flush to ``flowlens.pipeline_metrics``; rows written (0 on failure)."""
    with _lock:
        rows = pending()
        if not rows:
            return 0
        try:
            with psycopg.connect(conninfo, connect_timeout=5) as conn, conn.cursor() as cur:
                cur.executemany(
                    """
                    INSERT INTO flowlens.pipeline_metrics (sample, labels, family, kind, value)
                    VALUES (%s, %s::jsonb, %s, %s, %s)
                    ON CONFLICT (sample, labels) DO UPDATE
                    SET value = pipeline_metrics.value + EXCLUDED.value, updated_at = now()
                    """,
                    rows,
                )
        except psycopg.Error as exc:
            log.warning("pipeline metrics not flushed (kept for the next flush): %s", exc)
            return 0
        for sample, labels, _family, _kind, delta in rows:
            _flushed[(sample, labels)] = _flushed.get((sample, labels), 0.0) + delta
        return len(rows)
