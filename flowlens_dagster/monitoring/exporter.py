"""``flowlens metrics``: the pipeline's Prometheus endpoint, a small process beside Dagster.

Dagster runs steps in short-lived processes, so nothing there can serve ``/metrics``. Steps flush
their counters to PostgreSQL (``assets/metrics.py``); this exporter serves them, and reads the
state that no step owns at scrape time:

* the counters of ``flowlens.pipeline_metrics`` (flows processed, Kafka messages consumed,
  per-table write rows and latency, enrichment cache hits and misses, quality checks);
* ``flowlens_kafka_consumer_lag_seconds{topic,partition,consumer_group}``: per partition of
  ``flows.raw``, the newest landed receive time minus the newest one the pipeline's consumer group
  (``flowlens-pipeline``, committed after each window: ``assets/consumer_group.py``) consumed;
* ``flowlens_pipeline_lag_seconds``: the watermark sensor's lag (newest landed flow, from the ingest
  watermarks in PostgreSQL and the unconsumed ``flows.raw`` data, minus the end of the newest
  ``flow_stats`` window), in every mode;
  ``flowlens_pipeline_processed_through_timestamp``;
* ``flowlens_redis_memory_used_bytes`` (modes with Redis);
* ``flowlens_exporter_source_up{source}``: 1 when PostgreSQL / Kafka / Redis answered this scrape.
  A source that is down costs its series, never the scrape.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import signal
import sys
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator
from datetime import UTC, datetime
from typing import Any

import psycopg
import redis
from confluent_kafka import Consumer, KafkaException, TopicPartition
from prometheus_client import CollectorRegistry, start_http_server
from prometheus_client.core import GaugeMetricFamily, Metric

from assets import keys
from assets import metrics as pipeline_metrics
from assets.consumer_group import CONSUMER_GROUP, group_consumer
from ingest.config import ConfigError, FlowLensConfig, load_config
from ingest.window import WINDOW

log = logging.getLogger(__name__)

SOURCE_TIMEOUT_SECONDS = 5
COUNTERS = "SELECT sample, labels, family, kind, value FROM flowlens.pipeline_metrics ORDER BY family, sample"
PROCESSED = "SELECT max(window_start) FROM flowlens.window_loads WHERE asset = %s"
# The daemons' watermarks, not max(receive_time) of flow_raw: a scrape must not scan the landing table.
NEWEST_LANDED = "SELECT max(landed_through) FROM flowlens.ingest_watermarks"


# Gauges read at scrape time: name -> (help, labels).
GAUGES: dict[str, tuple[str, list[str]]] = {
    "flowlens_kafka_consumer_lag_seconds": (
        "Newest landed receive time minus the newest one the pipeline's consumer group consumed",
        ["topic", "partition", "consumer_group"],
    ),
    "flowlens_pipeline_lag_seconds": ("Newest landed flow minus the end of the newest flow_stats window", []),
    "flowlens_pipeline_processed_through_timestamp": ("End of the newest flow_stats window (Unix seconds)", []),
    "flowlens_redis_memory_used_bytes": ("Redis used_memory (INFO memory)", []),
    "flowlens_exporter_source_up": ("1 when the source answered this scrape", ["source"]),
}


def gauge(name: str, value: float | None = None) -> GaugeMetricFamily:
    doc, labels = GAUGES[name]
    return GaugeMetricFamily(name, doc, value=value, labels=labels or None)


def _docs() -> dict[str, str]:
    return {family.name: family.documentation for family in pipeline_metrics.REGISTRY.collect()}


class PipelineCollector:
    """A prometheus_client collector reading PostgreSQL, Kafka and Redis at every scrape."""

    def __init__(self, cfg: FlowLensConfig) -> None:
        self.cfg = cfg
        self.docs = _docs()
        self._lock = threading.Lock()  # scrapes may overlap; the clients below are shared
        self._clients: dict[str, Any] = {}  # source -> open connection, kept between scrapes

    def describe(self) -> list[Metric]:
        """Every family this collector serves (without samples): the step counters and the gauges."""
        return [*pipeline_metrics.REGISTRY.collect(), *(gauge(name) for name in GAUGES)]

    def collect(self) -> Iterator[Metric]:
        with self._lock:
            families = self._read_sources()
        yield from families

    def _read_sources(self) -> list[Metric]:
        up = gauge("flowlens_exporter_source_up")
        state: dict[str, Any] = {}
        sources: list[tuple[str, Callable[[], Iterable[Metric]]]] = [("postgresql", lambda: self._postgres(state))]
        if self.cfg.mode != "minimal":  # auto mode may land in Kafka too
            sources.append(("kafka", lambda: self._kafka(state)))
            sources.append(("redis", self._redis))
        out: list[Metric] = []
        for name, read in sources:
            try:
                out += read()
            except (psycopg.Error, KafkaException, redis.RedisError, OSError) as exc:
                log.warning("metrics: %s did not answer: %s", name, exc)
                self._drop(name)  # reconnect on the next scrape
                up.add_metric([name], 0)
                continue
            up.add_metric([name], 1)
        return [*out, up, *self._pipeline_lag(state)]

    def _client(self, name: str, connect: Callable[[], Any]) -> Any:
        if name not in self._clients:
            self._clients[name] = connect()
        return self._clients[name]

    def _drop(self, name: str) -> None:
        client = self._clients.pop(name, None)
        if client is not None:
            with contextlib.suppress(Exception):  # already broken: closing is best effort
                client.close()

    def _postgres(self, state: dict[str, Any]) -> list[Metric]:
        dsn = self.cfg.postgres.dsn()
        timeout = f"-c statement_timeout={SOURCE_TIMEOUT_SECONDS * 1000}"  # a scrape never hangs on a query
        conn = self._client("postgresql", lambda: psycopg.connect(dsn, connect_timeout=SOURCE_TIMEOUT_SECONDS,
                                                                  autocommit=True, options=timeout))  # fmt: skip
        rows = conn.execute(COUNTERS).fetchall()
        state["processed_through"] = _end(conn.execute(PROCESSED, (keys.FLOW_STATS,)).fetchone()[0])
        state["newest"] = _utc(conn.execute(NEWEST_LANDED).fetchone()[0])
        return counter_families(rows, self.docs)

    def _kafka(self, state: dict[str, Any]) -> list[Metric]:
        topic, bootstrap = self.cfg.kafka.raw_topic, self.cfg.kafka.bootstrap_servers
        consumer = self._client("kafka", lambda: group_consumer(bootstrap, **{"fetch.wait.max.ms": 10}))
        family = gauge("flowlens_kafka_consumer_lag_seconds")
        lag, newest = partition_lag(consumer, topic)
        if newest is not None:  # landed in Kafka after the newest ingest watermark in PostgreSQL (if any)
            state["newest"] = max(newest, state.get("newest") or newest)
        for partition, seconds in sorted(lag.items()):
            family.add_metric([topic, str(partition), CONSUMER_GROUP], seconds)
        return [family]

    def _redis(self) -> list[Metric]:
        url = self.cfg.redis.url()
        client = self._client("redis", lambda: redis.Redis.from_url(
            url, socket_timeout=SOURCE_TIMEOUT_SECONDS, socket_connect_timeout=SOURCE_TIMEOUT_SECONDS))  # fmt: skip
        return [gauge("flowlens_redis_memory_used_bytes", client.info("memory")["used_memory"])]

    def _pipeline_lag(self, state: dict[str, Any]) -> Iterator[Metric]:
        through, newest = state.get("processed_through"), state.get("newest")
        if through is None:
            return
        yield gauge("flowlens_pipeline_processed_through_timestamp", through.timestamp())
        if newest is not None:
            yield gauge("flowlens_pipeline_lag_seconds", max(0.0, (newest - through).total_seconds()))


def _utc(ts: datetime | None) -> datetime | None:
    return ts.astimezone(UTC) if ts is not None else None


def _end(window_start: datetime | None) -> datetime | None:
    return _utc(window_start) + WINDOW if window_start is not None else None


def counter_families(rows: Iterable[tuple[str, Any, str, str, float]], docs: dict[str, str]) -> list[Metric]:
    """Metric families from ``pipeline_metrics`` rows (sample, labels, family, kind, value)."""
    families: dict[str, Metric] = {}
    grouped: dict[str, list[tuple[str, dict[str, str], float]]] = defaultdict(list)
    for sample, labels, family, kind, value in rows:
        if family not in families:
            families[family] = Metric(family, docs.get(family, family), kind)
        grouped[family].append((sample, labels if isinstance(labels, dict) else json.loads(labels), value))
    for family, samples in grouped.items():
        for sample, labels, value in sorted(samples, key=_sample_order):
            families[family].add_sample(sample, labels, value)
    return list(families.values())


def _sample_order(entry: tuple[str, dict[str, str], float]) -> tuple:
    sample, labels, _ = entry
    series = sorted((k, v) for k, v in labels.items() if k != "le")
    le = float(labels.get("le", "inf"))  # histogram buckets in bound order
    return (series, sample, le)


def partition_lag(consumer: Consumer, topic: str) -> tuple[dict[int, float], datetime | None]:
    """Seconds per partition between the newest landed receive time and the newest one the pipeline's
    consumer group consumed (the message before its committed offset; the partition's oldest message
    when the group never committed), 0 when everything is consumed or the partition is empty; and the
    newest receive time of the unconsumed data (None when all is consumed)."""
    meta = consumer.list_topics(topic, timeout=SOURCE_TIMEOUT_SECONDS).topics.get(topic)
    if meta is None or meta.error is not None:
        raise KafkaException(f"topic {topic} is not available: {meta.error if meta else 'missing'}")
    partitions = sorted(meta.partitions)
    committed = {tp.partition: tp.offset for tp in consumer.committed(
        [TopicPartition(topic, p) for p in partitions], timeout=SOURCE_TIMEOUT_SECONDS)}  # fmt: skip
    lag, newest_at, consumed_at = {}, {}, {}
    for p in partitions:
        low, high = consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=SOURCE_TIMEOUT_SECONDS)
        position = max(committed.get(p, -1), low)
        lag[p] = 0.0
        if position < high:  # something unconsumed: compare the newest with the last consumed (or oldest)
            newest_at[p], consumed_at[p] = high - 1, max(position - 1, low)
    newest, consumed = _receive_times(consumer, topic, newest_at), _receive_times(consumer, topic, consumed_at)
    for p in newest_at:
        if p in newest and p in consumed:
            lag[p] = max(0.0, (newest[p] - consumed[p]).total_seconds())
    return lag, max(newest.values(), default=None)


def _receive_times(consumer: Consumer, topic: str, offsets: dict[int, int]) -> dict[int, datetime]:
    """Newest receive time of the message at each partition's offset, fetched in one round."""
    if not offsets:
        return {}
    consumer.assign([TopicPartition(topic, p, offset) for p, offset in offsets.items()])
    out: dict[int, datetime] = {}
    deadline = time.monotonic() + SOURCE_TIMEOUT_SECONDS
    while len(out) < len(offsets) and time.monotonic() < deadline:
        for msg in consumer.consume(len(offsets) - len(out), timeout=0.5):
            if msg.error() is None and msg.offset() == offsets.get(msg.partition()):
                out[msg.partition()] = _receive_time(msg)
    consumer.unassign()
    return out


def _receive_time(msg) -> datetime:
    max_us = dict(msg.headers() or []).get("flowlens-max-us")
    if max_us is not None:
        return datetime.fromtimestamp(int(max_us) / 1e6, UTC)
    return datetime.fromtimestamp(msg.timestamp()[1] / 1e3, UTC)  # watermark messages: landed_through


def serve(cfg: FlowLensConfig, host: str, port: int) -> CollectorRegistry:
    """Serve ``/metrics`` on host:port in a background thread; OSError when the port is taken."""
    registry = CollectorRegistry()
    registry.register(PipelineCollector(cfg))
    start_http_server(port, addr=host, registry=registry)
    return registry


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="flowlens metrics",
        description="Serve the pipeline's Prometheus metrics (counters the steps flushed to PostgreSQL, "
        "Kafka consumer lag per partition, Redis memory) until SIGTERM or Ctrl-C.",
    )
    parser.add_argument("--config", help="FlowLens YAML file (default: $FLOWLENS_CONFIG or ./flowlens.yaml)")
    parser.add_argument("--host", help="listen address (default: monitoring.host)")
    parser.add_argument("--port", type=int, help="listen port (default: monitoring.exporter_port)")
    parser.add_argument("--state-dir", help="state_dir override (the stack passes its own)")
    modes = ("minimal", "standard", "full", "auto")
    parser.add_argument("--mode", choices=modes, help="Kafka and Redis are read except in minimal (default: config)")
    parser.add_argument("--marker", help=argparse.SUPPRESS)  # the stack's pidfile check: a path on the command line
    return parser


def main(argv: list[str]) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        cfg = load_config(args.config)
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return 2
    if args.state_dir or args.mode:
        cfg = cfg.model_copy(update={"state_dir": args.state_dir or cfg.state_dir, "mode": args.mode or cfg.mode})
    host, port = args.host or cfg.monitoring.host, args.port or cfg.monitoring.exporter_port
    try:
        serve(cfg, host, port)
    except OSError as exc:
        print(f"flowlens metrics: cannot listen on {host}:{port} ({exc}); set monitoring.exporter_port "
              "in flowlens.yaml or FLOWLENS_MONITORING__EXPORTER_PORT=<port>", file=sys.stderr)  # fmt: skip
        return 1
    log.info("pipeline metrics on http://%s:%s/metrics", host, port)
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    stop.wait()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
