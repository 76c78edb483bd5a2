"""``flowlens bench monitoring [--json]``: what the monitoring costs, beside a reference in the same run.

- ``flush_ms_p50``/``_p99``: one flush of one window's pipeline counters (every window asset's
  ``observe_window``: flows, rows, latency buckets) into ``flowlens.pipeline_metrics``. Baseline: the
  ``window_loads`` upsert of the same window (``assets.pg.record_window_load``) on a connection of
  its own, the bookkeeping write every window already makes. Both include connecting.
- ``scrape_ms_p50``/``_p99``: ``GET /metrics`` of the pipeline exporter (PostgreSQL counters, Kafka
  lag of every ``flows.raw`` partition, Redis memory). Baseline: ``GET /metrics`` of the stack's
  Prometheus itself (a peer exporter of similar size), same client, same run.

Runs in a throwaway database (dropped at the end) against the running stack (full mode).
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import sys
import time
import urllib.request
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import psycopg

from assets import keys, metrics
from assets.pg import record_window_load
from assets.windows import WindowResult
from flowlens_dagster.bench.report import report
from flowlens_dagster.migrate import migrate
from flowlens_dagster.monitoring.exporter import serve
from flowlens_dagster.stack import postgres as pg_stack
from flowlens_dagster.stack.monitoring import PROMETHEUS_SERVICE
from flowlens_dagster.stack.postgres import drop_database
from ingest.config import FlowLensConfig, load_config
from ingest.services import ServiceUnavailable, require

BENCH_DATABASE = f"flowlens_monitoring_bench_{os.getpid()}"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _timed_ms(action: Callable[[], object], repeat: int) -> list[float]:
    out = []
    for _ in range(repeat):
        start = time.perf_counter()
        action()
        out.append((time.perf_counter() - start) * 1000)
    return out


def _percentiles(name: str, values: list[float]) -> dict[str, float]:
    cuts = statistics.quantiles(values, n=100, method="inclusive")
    return {f"{name}_p50": round(cuts[49], 3), f"{name}_p99": round(cuts[98], 3)}


def _window_results(window: datetime) -> list[WindowResult]:
    results = []
    for asset in keys.WINDOW_ASSETS:
        result = WindowResult(window, asset, source="postgres:flow_raw", rows_read=50_000, rows_written=20_000)
        result.seconds = {"write_pg": 0.12, "detect": 0.05, "rollup": 0.2}
        results.append(result)
    return results


def bench_flush(cfg: FlowLensConfig, repeat: int) -> tuple[list[float], list[float]]:
    """(flush ms, window_loads upsert ms) per window, ``repeat`` windows."""
    window = datetime(2026, 1, 1, tzinfo=UTC)
    flush, upsert = [], []
    for i in range(repeat):
        results = _window_results(window + i * timedelta(minutes=5))
        for result in results:
            metrics.observe_window(result)
        flush += _timed_ms(lambda: metrics.flush(cfg.postgres.dsn()), 1)
        upsert += _timed_ms(lambda r=results[1]: _upsert(cfg, r), 1)
    return flush, upsert


def _upsert(cfg: FlowLensConfig, result: WindowResult) -> None:
    # A connection of its own, as each asset opens one per window (the flush does the same).
    with psycopg.connect(cfg.postgres.dsn()) as conn, conn.transaction():
        record_window_load(conn.cursor(), result.load_row("bench"))


def _get(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=30) as response:
        return response.read()


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="flowlens bench monitoring", description=__doc__.split("\n\n")[0])
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--windows", type=int, default=200, help="windows flushed (default 200)")
    parser.add_argument("--scrapes", type=int, default=100, help="scrapes of each endpoint (default 100)")
    return parser


def main(argv: list[str]) -> int:
    args = _parser().parse_args(argv)
    base = load_config()
    prometheus = PROMETHEUS_SERVICE.url(base)
    try:
        require(base, ["postgres", "kafka", "redis"], "flowlens bench monitoring")
    except ServiceUnavailable as exc:
        print(exc, file=sys.stderr)
        return 1
    if not PROMETHEUS_SERVICE.ready(base):
        print(f"flowlens bench monitoring: Prometheus at {prometheus} does not answer; "
              "start it with `flowlens stack up --mode full`", file=sys.stderr)  # fmt: skip
        return 1
    cfg = base.model_copy(
        update={"mode": "full", "postgres": base.postgres.model_copy(update={"database": BENCH_DATABASE})}
    )
    pg_stack.ensure_database(base, BENCH_DATABASE)
    try:
        migrate(cfg, log=lambda _message: None)
        flush, upsert = bench_flush(cfg, args.windows)
        port = _free_port()
        serve(cfg, "127.0.0.1", port)
        exporter = f"http://127.0.0.1:{port}/metrics"
        samples = sum(1 for line in _get(exporter).splitlines() if line.startswith(b"flowlens_"))
        scrape = _timed_ms(lambda: _get(exporter), args.scrapes)
        peer = _timed_ms(lambda: _get(prometheus + "/metrics"), args.scrapes)
    finally:
        drop_database(base, BENCH_DATABASE)
    figures = {**_percentiles("flush_ms", flush), **_percentiles("scrape_ms", scrape), "exporter_samples": samples}
    baseline = {**_percentiles("flush_ms", upsert), **_percentiles("scrape_ms", peer)}
    config = {"windows": args.windows, "scrapes": args.scrapes, "kafka_partitions": cfg.kafka.raw_partitions,
              "baseline.flush": "window_loads upsert of the same window",
              "baseline.scrape": f"Prometheus's own /metrics ({prometheus})"}  # fmt: skip
    report("monitoring", figures, baseline, config, args.json)
    return 0
