"""Prometheus metrics of the ingest daemon (the scaling model §9.1 names), aggregated over its processes.

Each receiving process keeps plain counters in a :class:`WorkerStats` and sends a snapshot to the
parent about once a second; the parent's :class:`DaemonCollector` sums the latest snapshot of every
process (plus the final totals of processes that ended) and serves them on one endpoint. This
avoids prometheus_client's multiprocess mode (files in a shared directory) and keeps the hot path
free of locks: a worker only adds to ints.

Metric names (the scaling model §9.1, plus the kernel's view of our sockets):

* ``flowlens_flows_received_total{exporter,protocol}``: flows decoded, by exporter and protocol
* ``flowlens_flows_dropped_total{reason}``: flows lost (``backpressure``)
* ``flowlens_packets_dropped_total{reason}``: packets refused before decoding (``not_allowed``,
  ``malformed``, ``fairness``: an exporter over its share of the receive queue, ``truncated``: a
  datagram longer than the receive slot)
* ``flowlens_flows_sampled_total``: flows skipped by 1:N sampling under backpressure
* ``flowlens_ingestion_queue_depth``: flows accepted and not yet landed
* ``flowlens_flows_spooled_total``, ``flowlens_spool_flows``, ``flowlens_spool_bytes``: the disk
  spool that takes what the queue cannot hold (:mod:`ingest.spool`)
* ``flowlens_template_pending_sets``, ``flowlens_template_pending_bytes``: v9/IPFIX data sets
  held until their template arrives; ``flowlens_template_pending_dropped_total{reason}`` those that
  never met it (``limit``: the decoder's bounds, ``expired``: ``ingest.template_wait_seconds``,
  ``shutdown``). Data sets, not flows: a set's flow count is unknown until its template arrives.
* ``flowlens_ingestion_sample_level``, ``flowlens_ingestion_drop_level``: the daemon's backpressure
  levels in force (they follow the measured rate, README "Backpressure")
* ``flowlens_ingestion_latency_seconds``: receive to landed, per flow (histogram)
* ``flowlens_kafka_messages_produced_total{topic}``, ``flowlens_kafka_delivery_errors_total{topic}``
* ``flowlens_pg_writes_total{table}`` (rows), ``flowlens_pg_write_latency_seconds{table}`` (histogram)
* ``flowlens_pg_connections_active``, ``flowlens_pg_connections_waiting``
* ``flowlens_landing_failures_total{backend}``, ``flowlens_landing_up{backend}``
* ``flowlens_interface_*``: sFlow counter samples (``interface_metrics.py``)
* ``flowlens_mode_switches_total{from,to}``: auto mode's landing switches (``postgres``, ``kafka``)
* ``flowlens_kernel_udp_drops_total{port}``, ``flowlens_kernel_udp_queue_bytes{port}``: from
  ``/proc/net/udp`` and ``/proc/net/udp6`` for the sockets bound to our ports
"""

from __future__ import annotations

import bisect
import logging
import threading
from collections import Counter, defaultdict
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily

from ingest import interface_metrics
from ingest.schema import SFLOW_VERSION

log = logging.getLogger(__name__)

LATENCY_BUCKETS: tuple[float, ...] = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
PROTOCOLS = {5: "netflow_v5", 9: "netflow_v9", 10: "ipfix", SFLOW_VERSION: "sflow"}


class Histogram:
    """Bucket counts (non-cumulative) plus sum and count; cheap to update and to pickle."""

    def __init__(self) -> None:
        self.buckets = [0] * (len(LATENCY_BUCKETS) + 1)
        self.sum = 0.0
        self.count = 0

    def observe(self, value: float, n: int = 1) -> None:
        self.buckets[bisect.bisect_left(LATENCY_BUCKETS, value)] += n
        self.sum += value * n
        self.count += n

    def add(self, other: dict[str, Any]) -> None:
        self.buckets = [a + b for a, b in zip(self.buckets, other["buckets"], strict=True)]
        self.sum += other["sum"]
        self.count += other["count"]

    def state(self) -> dict[str, Any]:
        return {"buckets": list(self.buckets), "sum": self.sum, "count": self.count}


class WorkerStats:
    """Every counter of one receiving process. Updated by its threads, snapshotted for the parent."""

    def __init__(self) -> None:
        self.received: Counter[tuple[str, str]] = Counter()  # (exporter, protocol) -> flows
        self.flows_dropped: Counter[str] = Counter()
        self.packets_dropped: Counter[str] = Counter()
        self.packets_received = 0
        self.sampled = 0
        self.queue_depth = 0
        self.latency = Histogram()
        self.kafka_produced: Counter[str] = Counter()
        self.kafka_errors: Counter[str] = Counter()
        self.pg_writes: Counter[str] = Counter()
        self.pg_latency: dict[str, Histogram] = defaultdict(Histogram)
        self.pg_active = 0
        self.pg_waiting = 0
        self.landing_failures: Counter[str] = Counter()
        self.landing_up: dict[str, int] = {}
        self.flows_landed = 0
        self.interfaces: dict[str, dict[str, int]] = {}  # sFlow interface counters (interface_metrics.py)
        self.mode_switches: Counter[str] = Counter()  # "from>to" -> switches (auto mode)
        self.spooled = 0  # flows written to the disk spool (counter)
        # v9/IPFIX data sets waiting for their template (flows cannot be counted before it arrives)
        self.template_pending_sets = 0
        self.template_pending_bytes = 0
        self.template_pending_dropped: Counter[str] = Counter()  # reason: limit, expired, shutdown
        self.sample_level = 0  # the daemon's backpressure levels in force (flows; the same in every process)
        self.drop_level = 0
        self.spool_flows = 0  # gauges: what the spool holds now
        self.spool_bytes = 0

    def snapshot(self) -> dict[str, Any]:
        return {
            "received": dict(self.received),
            "flows_dropped": dict(self.flows_dropped),
            "packets_dropped": dict(self.packets_dropped),
            "packets_received": self.packets_received,
            "sampled": self.sampled,
            "queue_depth": self.queue_depth,
            "latency": self.latency.state(),
            "kafka_produced": dict(self.kafka_produced),
            "kafka_errors": dict(self.kafka_errors),
            "pg_writes": dict(self.pg_writes),
            "pg_latency": {k: h.state() for k, h in self.pg_latency.items()},
            "pg_active": self.pg_active,
            "pg_waiting": self.pg_waiting,
            "landing_failures": dict(self.landing_failures),
            "landing_up": dict(self.landing_up),
            "flows_landed": self.flows_landed,
            "interfaces": self.interfaces,
            "mode_switches": dict(self.mode_switches),
            "spooled": self.spooled,
            "spool_flows": self.spool_flows,
            "spool_bytes": self.spool_bytes,
            "template_pending_sets": self.template_pending_sets,
            "template_pending_bytes": self.template_pending_bytes,
            "template_pending_dropped": dict(self.template_pending_dropped),
            "sample_level": self.sample_level,
            "drop_level": self.drop_level,
        }


_COUNTER_KEYS = (
    "received", "flows_dropped", "packets_dropped", "kafka_produced", "kafka_errors",
    "pg_writes", "landing_failures", "mode_switches", "template_pending_dropped",
)  # fmt: skip
_SCALAR_COUNTERS = ("packets_received", "sampled", "flows_landed", "spooled")
_DAEMON_LEVELS = ("sample_level", "drop_level")
_GAUGES = ("queue_depth", "pg_active", "pg_waiting", "spool_flows", "spool_bytes", "template_pending_sets",
           "template_pending_bytes")  # fmt: skip


def merge_snapshots(snapshots: Iterable[dict[str, Any]]) -> dict[str, Any]:
    """Sum the snapshots of several processes into one (gauges are summed too: depth, connections)."""
    snapshots = list(snapshots)
    total: dict[str, Any] = {key: Counter() for key in _COUNTER_KEYS}
    total.update({key: 0 for key in (*_SCALAR_COUNTERS, *_GAUGES)})
    latency = Histogram()
    pg_latency: dict[str, Histogram] = defaultdict(Histogram)
    landing_up: dict[str, int] = {}
    interfaces: dict[str, dict[str, int]] = {}
    for snap in snapshots:
        interfaces.update(snap.get("interfaces", {}))
        for key in _COUNTER_KEYS:
            total[key].update(snap.get(key, {}))
        for key in (*_SCALAR_COUNTERS, *_GAUGES):
            total[key] += snap.get(key, 0)
        latency.add(snap["latency"])
        for table, state in snap.get("pg_latency", {}).items():
            pg_latency[table].add(state)
        for backend, up in snap.get("landing_up", {}).items():
            landing_up[backend] = min(landing_up.get(backend, 1), up)
    for key in _DAEMON_LEVELS:  # each process reports the daemon's level: the newest is the largest
        total[key] = max((snap.get(key, 0) for snap in snapshots), default=0)
    total["latency"] = latency.state()
    total["pg_latency"] = {k: h.state() for k, h in pg_latency.items()}
    total["landing_up"] = landing_up
    total["interfaces"] = interfaces
    return total


def udp_socket_stats(ports: Iterable[int], proc_dir: Path = Path("/proc/net")) -> dict[int, dict[str, int]]:
    """Kernel drops and queued bytes of every UDP socket bound to ``ports`` (IPv4 and IPv6)."""
    wanted = set(ports)
    out: dict[int, dict[str, int]] = {p: {"drops": 0, "rx_queue": 0, "sockets": 0} for p in wanted}
    for name in ("udp", "udp6"):
        try:
            lines = (proc_dir / name).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            parts = line.split()
            if len(parts) < 13:
                continue
            port = int(parts[1].rsplit(":", 1)[1], 16)
            if port in wanted:
                out[port]["drops"] += int(parts[-1])
                out[port]["rx_queue"] += int(parts[4].split(":")[1], 16)
                out[port]["sockets"] += 1
    return out


class DaemonCollector:
    """A prometheus_client collector summing the snapshots of every receiving process."""

    def __init__(self, ports: Iterable[int]):
        self.ports = sorted(set(ports))
        self._lock = threading.Lock()
        self._live: dict[str, dict[str, Any]] = {}
        self._retired: list[dict[str, Any]] = []

    def update(self, worker: str, snapshot: dict[str, Any], final: bool = False) -> None:
        with self._lock:
            if final:
                self._live.pop(worker, None)
                self._retired = [merge_snapshots([*self._retired, snapshot])]
                for key in (*_GAUGES, *_DAEMON_LEVELS):  # an ended process holds nothing (its spool files wait on disk)
                    self._retired[0][key] = 0
            else:
                self._live[worker] = snapshot

    def totals(self) -> dict[str, Any]:
        with self._lock:
            return merge_snapshots([*self._retired, *self._live.values()])

    def parts(self) -> dict[str, dict[str, Any]]:
        """The snapshots the totals sum: ``ended`` (every process that ended) and each live one."""
        with self._lock:
            return {**({"ended": self._retired[0]} if self._retired else {}), **self._live}

    def collect(self):
        t = self.totals()
        yield _labelled(CounterMetricFamily, "flowlens_flows_received", "Flows decoded", ["exporter", "protocol"],
                        {k: v for k, v in t["received"].items()})  # fmt: skip
        yield _labelled(CounterMetricFamily, "flowlens_flows_dropped", "Flows lost, by reason", ["reason"],
                        {(k,): v for k, v in t["flows_dropped"].items()})  # fmt: skip
        yield _labelled(CounterMetricFamily, "flowlens_packets_dropped", "Packets refused before decoding",
                        ["reason"], {(k,): v for k, v in t["packets_dropped"].items()})  # fmt: skip
        yield CounterMetricFamily("flowlens_packets_received", "UDP packets read", value=t["packets_received"])
        yield CounterMetricFamily("flowlens_flows_sampled", "Flows skipped by 1:N sampling", value=t["sampled"])
        yield CounterMetricFamily("flowlens_flows_landed", "Flows durably landed", value=t["flows_landed"])
        yield GaugeMetricFamily("flowlens_ingestion_queue_depth", "Flows accepted, not yet landed",
                                value=t["queue_depth"])  # fmt: skip
        yield CounterMetricFamily("flowlens_flows_spooled", "Flows written to the disk spool", value=t["spooled"])
        yield GaugeMetricFamily("flowlens_spool_flows", "Flows waiting in the disk spool", value=t["spool_flows"])
        yield GaugeMetricFamily("flowlens_spool_bytes", "Bytes of the disk spool", value=t["spool_bytes"])
        yield GaugeMetricFamily("flowlens_ingestion_sample_level", "Queue depth (daemon) where sampling starts",
                                value=t["sample_level"])  # fmt: skip
        yield GaugeMetricFamily("flowlens_ingestion_drop_level", "Queue depth (daemon) where dropping starts",
                                value=t["drop_level"])  # fmt: skip
        yield GaugeMetricFamily("flowlens_template_pending_sets", "v9/IPFIX data sets waiting for their template",
                                value=t["template_pending_sets"])  # fmt: skip
        yield GaugeMetricFamily("flowlens_template_pending_bytes", "Bytes of data waiting for a template",
                                value=t["template_pending_bytes"])  # fmt: skip
        yield _labelled(CounterMetricFamily, "flowlens_template_pending_dropped",
                        "Data sets that never met their template, by reason", ["reason"],
                        {(k,): v for k, v in t["template_pending_dropped"].items()})  # fmt: skip
        yield _histogram("flowlens_ingestion_latency_seconds", "Receive to landed, per flow", [], {(): t["latency"]})
        yield _labelled(CounterMetricFamily, "flowlens_kafka_messages_produced", "Kafka messages delivered",
                        ["topic"], {(k,): v for k, v in t["kafka_produced"].items()})  # fmt: skip
        yield _labelled(CounterMetricFamily, "flowlens_kafka_delivery_errors", "Kafka delivery failures",
                        ["topic"], {(k,): v for k, v in t["kafka_errors"].items()})  # fmt: skip
        yield _labelled(CounterMetricFamily, "flowlens_pg_writes", "Rows written by COPY", ["table"],
                        {(k,): v for k, v in t["pg_writes"].items()})  # fmt: skip
        yield _histogram("flowlens_pg_write_latency_seconds", "One COPY + commit", ["table"],
                         {(k,): v for k, v in t["pg_latency"].items()})  # fmt: skip
        yield GaugeMetricFamily("flowlens_pg_connections_active", "Pool connections in use", value=t["pg_active"])
        yield GaugeMetricFamily("flowlens_pg_connections_waiting", "Requests waiting for a pool connection",
                                value=t["pg_waiting"])  # fmt: skip
        yield _labelled(CounterMetricFamily, "flowlens_landing_failures", "Failed landing attempts (retried)",
                        ["backend"], {(k,): v for k, v in t["landing_failures"].items()})  # fmt: skip
        yield _labelled(GaugeMetricFamily, "flowlens_landing_up", "1 when the last landing attempt worked",
                        ["backend"], {(k,): v for k, v in t["landing_up"].items()})  # fmt: skip
        yield from interface_metrics.families(t["interfaces"])
        switches = {tuple(k.split(">", 1)): v for k, v in t["mode_switches"].items()}
        yield _labelled(CounterMetricFamily, "flowlens_mode_switches", "Auto mode landing switches", ["from", "to"],
                        switches)  # fmt: skip
        kernel = udp_socket_stats(self.ports)
        yield _labelled(CounterMetricFamily, "flowlens_kernel_udp_drops", "Kernel drops on our UDP sockets",
                        ["port"], {(str(p),): s["drops"] for p, s in kernel.items()})  # fmt: skip
        yield _labelled(GaugeMetricFamily, "flowlens_kernel_udp_queue_bytes", "Bytes waiting in our sockets",
                        ["port"], {(str(p),): s["rx_queue"] for p, s in kernel.items()})  # fmt: skip


def _labelled(kind, name: str, doc: str, labels: list[str], values: dict[tuple[str, ...], float]):
    family = kind(name, doc, labels=labels)
    for key, value in sorted(values.items()):
        family.add_metric(list(key), value)
    return family


def _histogram(name: str, doc: str, labels: list[str], states: dict[tuple[str, ...], dict[str, Any]]):
    family = HistogramMetricFamily(name, doc, labels=labels)
    for key, state in states.items():
        cumulative, running = [], 0
        for bound, count in zip([*map(str, LATENCY_BUCKETS), "+Inf"], state["buckets"], strict=True):
            running += count
            cumulative.append((bound, running))
        family.add_metric(list(key), cumulative, state["sum"])
    return family


class MetricsPortError(OSError):
    """The metrics endpoint cannot listen; the message names the setting to change."""


def serve(collector: DaemonCollector, host: str, port: int) -> CollectorRegistry | None:
    """Start the /metrics HTTP endpoint (port 0 = none).

    A port that cannot be bound raises :class:`MetricsPortError`: a daemon running unmonitored
    would hide every fault the metrics exist to show.
    """
    if not port:
        return None
    registry = CollectorRegistry()
    registry.register(collector)
    try:
        start_http_server(port, addr=host, registry=registry)
    except OSError as exc:
        raise MetricsPortError(
            f"cannot serve metrics on {host}:{port}: {exc.strerror or exc}; pick a free port with --metrics-port, "
            "ingest.metrics_port or FLOWLENS_INGEST__METRICS_PORT (0 = no metrics endpoint), or stop the "
            "program holding it"
        ) from None
    log.info("metrics on http://%s:%s/metrics", host, port)
    return registry
