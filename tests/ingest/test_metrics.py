"""Metrics: per-process snapshots summed on one endpoint, kernel socket counters, the alert rules."""

from __future__ import annotations

import re
import socket
import time
import urllib.request
from pathlib import Path

from ingest.metrics import DaemonCollector, WorkerStats, serve, udp_socket_stats
from ingest.receive import open_udp_socket

ROOT = Path(__file__).resolve().parents[2]


def _stats(received: int, dropped: int, latency: float) -> dict:
    stats = WorkerStats()
    stats.received[("10.0.0.1", "netflow_v9")] += received
    stats.flows_dropped["backpressure"] += dropped
    stats.latency.observe(latency, received)
    stats.pg_writes["flow_raw"] += received
    stats.pg_latency["flow_raw"].observe(0.02)
    stats.queue_depth = 7
    return stats.snapshot()


def test_endpoint_sums_processes_and_keeps_ended_ones():
    sock = open_udp_socket("127.0.0.1", 0, 1 << 20)
    port = sock.getsockname()[1]
    sender = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sender.sendto(b"x" * 100, ("127.0.0.1", port))  # stays queued: nobody reads
    collector = DaemonCollector([port])
    collector.update("0", _stats(100, 1, 0.3))
    collector.update("1", _stats(50, 2, 3.0))
    collector.update("1", _stats(60, 2, 3.0))  # a newer snapshot replaces the older one
    collector.update("2", _stats(5, 0, 0.01), final=True)  # an ended process still counts
    http_port = _free_tcp_port()
    serve(collector, "127.0.0.1", http_port)
    time.sleep(0.2)
    text = urllib.request.urlopen(f"http://127.0.0.1:{http_port}/metrics", timeout=5).read().decode()
    sock.close()
    sender.close()
    assert _value(text, 'flowlens_flows_received_total{exporter="10.0.0.1",protocol="netflow_v9"}') == 165
    assert _value(text, 'flowlens_flows_dropped_total{reason="backpressure"}') == 3
    assert _value(text, "flowlens_ingestion_queue_depth") == 14  # live processes only
    assert _value(text, 'flowlens_ingestion_latency_seconds_bucket{le="0.5"}') == 105
    assert _value(text, "flowlens_ingestion_latency_seconds_count") == 165
    assert _value(text, 'flowlens_pg_writes_total{table="flow_raw"}') == 165
    assert _value(text, f'flowlens_kernel_udp_queue_bytes{{port="{port}"}}') > 0


def _value(text: str, series: str) -> float:
    match = re.search(rf"^{re.escape(series)} (\S+)$", text, re.MULTILINE)
    assert match, f"{series} missing from:\n{text}"
    return float(match.group(1))


def _free_tcp_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_kernel_drops_are_read_for_our_port():
    sock = open_udp_socket("127.0.0.1", 0, 65536)
    port = sock.getsockname()[1]
    sender = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    for _ in range(2000):  # far more than a small buffer holds: the kernel drops the rest
        sender.sendto(b"y" * 1400, ("127.0.0.1", port))
    stats = udp_socket_stats([port])[port]
    sock.close()
    sender.close()
    assert stats["sockets"] == 1 and stats["drops"] > 0 and stats["rx_queue"] > 0
