"""A PostgreSQL outage seen from outside while it lasts: metrics keep moving, SIGTERM keeps its deadline.

The PostgreSQL stopped here is a private throwaway instance (``private_pg``), never the stack's.
"""

from __future__ import annotations

import threading
import time
import urllib.request
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from ingest.tools.generate import Plan, run
from tests.ingest.harness import Daemon, daemon_env, free_udp_port, received_total
from tests.ingest.private_services import free_tcp_port
from tests.ingest.test_outage import private_pg  # noqa: F401  (fixture)

pytestmark = pytest.mark.integration
UP, DEPTH = "flowlens_landing_up{backend=postgres}", "flowlens_ingestion_queue_depth"
SAMPLED, DROPPED = "flowlens_flows_sampled_total", "flowlens_flows_dropped_total{reason=backpressure}"


def scrape(port: int) -> dict[str, float]:
    """``/metrics`` as {name or name{label=value}: value} (one label at most, as the daemon's are)."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
        text = resp.read().decode()
    out: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            labels = ",".join(f"{k}={v}" for k, v in sorted(sample.labels.items()))
            out[f"{sample.name}{{{labels}}}" if labels else sample.name] = sample.value
    return out


def scrape_until(port: int, predicate, timeout: float, what: str) -> tuple[dict[str, float], list[dict]]:
    """Scrape every 0.5 s until ``predicate(metrics)``; return the match and every scrape taken."""
    seen: list[dict[str, float]] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        metrics = scrape(port)
        seen.append(metrics)
        if predicate(metrics):
            return metrics, seen
        time.sleep(0.5)
    raise AssertionError(f"{what} not seen within {timeout:.0f}s; last scrape: {seen[-1] if seen else None}")


def test_metrics_move_during_a_postgres_outage_and_sigterm_keeps_the_drain_deadline(private_pg, tmp_path):  # noqa: F811
    server, cfg = private_pg
    # The default pool timeout (30 s), as an operator runs it: no wait on the pool may stall the daemon.
    pool = cfg.backpressure.postgresql.model_copy(update={"pool_timeout_seconds": 30.0})
    cfg = cfg.model_copy(update={"backpressure": cfg.backpressure.model_copy(update={"postgresql": pool})})
    port, metrics_port = free_udp_port(), free_tcp_port()
    env = daemon_env(cfg, tmp_path, port, queue=(10_000, 12_000), processes=1, metrics_port=metrics_port,
                     drain_timeout_seconds=3.0, landing_backoff_max_seconds=1.0)  # fmt: skip
    daemon = Daemon(env, tmp_path)
    sent: dict[str, Any] = {}
    try:
        daemon.wait_ready(1)
        warm = run(Plan(rate=20_000, flows=5_000, versions=(9,), exporters=2, seed=7), ("127.0.0.1", port))
        daemon.wait_for(lambda s: s.get("flows_landed") == 5_000, timeout=30, what="landing before the outage")
        assert scrape(metrics_port)[UP] == 1
        server.stop()
        plan = Plan(rate=10_000, flows=80_000, versions=(9,), exporters=2, seed=8)
        sender = threading.Thread(target=lambda: sent.setdefault("gen", run(plan, ("127.0.0.1", port))))
        sender.start()
        # Within 10 s of the stop, the endpoint says the landing is down and the queue rises ...
        down, first = scrape_until(metrics_port, lambda m: m[UP] == 0 and m[DEPTH] > 0, 10, "landing_up 0 with a queue")
        # ... then sampling and drops show while PostgreSQL is still away, not after it returns.
        live, seen = scrape_until(metrics_port, lambda m: m[SAMPLED] > 0 and m.get(DROPPED, 0) > 0, 30,
                                  "sampling and drops during the outage")  # fmt: skip
        sender.join()
        depths = [m[DEPTH] for m in first + seen]
        assert depths == sorted(depths) and depths[-1] == 12_000  # rose from scrape to scrape, up to the drop level
        assert live[UP] == 0 and live["flowlens_flows_landed_total"] == 5_000
        gen = sent["gen"]
        stats = daemon.wait_for(lambda s: received_total(s) == 5_000 + gen.sent_flows, 30, "every flow decoded")
        queued = stats["queue_depth"]
        assert queued > 0
        final = daemon.terminate(timeout=30)  # the landing is still down: the deadline, not the pool, decides
    finally:
        daemon.kill()
    assert "drain timeout" in daemon.log_file.read_text()
    dropped = final["flows_dropped"]
    assert dropped["shutdown_unlanded"] == queued
    assert final["flows_landed"] == 5_000 == warm.sent_flows
    total = final["flows_landed"] + final["sampled"] + dropped["backpressure"] + dropped["shutdown_unlanded"]
    assert total == received_total(final) == warm.sent_flows + gen.sent_flows
    assert down[DEPTH] <= queued
