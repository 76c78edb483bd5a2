"""Acceptance test of the monitoring: a PostgreSQL outage, seen as an operator sees it, in Prometheus.

The full path is real: the generator sends NetFlow v9 to ``flowlens ingest`` (a subprocess landing in
a private PostgreSQL on its own port, with the default 30 s pool timeout operators get), a private
Prometheus started by the stack's code scrapes the daemon every second and evaluates a test copy of
the shipped rules (``for:`` shortened to 2 s and range windows to 30 s, so alerts fire within an
outage of 30 s). PostgreSQL is stopped for 30 s; everything asserted is read from Prometheus's own
query API: ``flowlens_landing_up`` goes to 0 and the queue rises within 10 s; ``LandingDown``,
``IngestionSpooling`` (a 1 MB spool) and ``HighFlowDropRate`` (once the spool is full) fire from the
real series and reach Alertmanager; after recovery every flow sent is landed,
sampled or dropped, counted.
"""

from __future__ import annotations

import re
import threading
import time
from pathlib import Path

import pytest
import yaml

from flowlens_dagster.monitoring import RULES_FILE, asset_path
from ingest.tools.generate import Plan, run
from tests.flowlens_dagster.monitoring.prom import PrivatePrometheus, wait_until
from tests.ingest.harness import Daemon, daemon_env, free_udp_port
from tests.ingest.private_services import free_tcp_port
from tests.ingest.test_outage import private_pg  # noqa: F401  (fixture)

pytestmark = [pytest.mark.integration, pytest.mark.slow]

OUTAGE_SECONDS = 30
RATE = 5_000  # flows/s: the queue (4,000 / 8,000 here) fills within seconds of the outage


def shortened_rules(target: Path) -> Path:
    """The shipped rules with ``for: 2s`` and 30 s range windows (the exprs and thresholds unchanged)."""
    doc = yaml.safe_load(asset_path(RULES_FILE).read_text())
    for group in doc["groups"]:
        for rule in group["rules"]:
            rule["for"] = "2s"
            rule["expr"] = re.sub(r"\[\d+[mh]\]", "[30s]", rule["expr"])
    target.write_text(yaml.safe_dump(doc, sort_keys=False))
    return target


def test_postgres_outage_is_seen_and_alerted_in_prometheus(private_pg, tmp_path):  # noqa: F811
    server, cfg = private_pg
    # The default pool timeout (30 s), as an operator runs it.
    pool = cfg.backpressure.postgresql.model_copy(update={"pool_timeout_seconds": 30.0})
    cfg = cfg.model_copy(update={"backpressure": cfg.backpressure.model_copy(update={"postgresql": pool})})
    port, metrics_port = free_udp_port(), free_tcp_port()
    # A 1 MB disk spool fills within seconds at this rate, so the outage runs through every stage:
    # memory queue, spool, then counted sampling and drops.
    env = daemon_env(cfg, tmp_path / "ingest", port, queue=(4_000, 8_000), processes=1, metrics_port=metrics_port,
                     landing_backoff_max_seconds=1.0, spool_max_bytes=1_000_000)  # fmt: skip
    (tmp_path / "ingest").mkdir()
    daemon = Daemon(env, tmp_path / "ingest")
    rules = shortened_rules(tmp_path / "alerts.yaml")
    sent: list = []
    try:
        daemon.wait_ready(1)
        with PrivatePrometheus(cfg, tmp_path / "prom", rules, alertmanager=True, ingest_port=metrics_port) as prom:
            wait_until(lambda: prom.value('flowlens_landing_up{backend="postgres"}') == 1, 30, "landing up scraped")
            traffic = threading.Thread(
                target=lambda: sent.append(
                    run(Plan(rate=RATE, duration=OUTAGE_SECONDS + 20, seed=7), ("127.0.0.1", port))
                )
            )
            traffic.start()
            time.sleep(5)
            server.stop()
            stopped = time.monotonic()
            landing_down = wait_until(lambda: prom.value("min(flowlens_landing_up)") == 0, 10, "landing_up 0")
            seen_down = time.monotonic() - stopped
            wait_until(lambda: (prom.value("sum(flowlens_ingestion_queue_depth)") or 0) >= 4_000, 10 - seen_down,
                       "the queue rising to the sampling depth")  # fmt: skip
            seen_queue = time.monotonic() - stopped
            alerts = {"LandingDown", "IngestionSpooling", "HighFlowDropRate"}
            firing = wait_until(lambda: alerts <= set(prom.firing()) and prom.firing(),
                                OUTAGE_SECONDS - seen_queue, "LandingDown and HighFlowDropRate firing")  # fmt: skip
            assert firing["LandingDown"][0]["backend"] == "postgres"
            wait_until(lambda: alerts <= prom.alertmanager_alerts(), 10,
                       "the alerts delivered to Alertmanager")  # fmt: skip
            assert prom.value("sum(rate(flowlens_flows_dropped_total[30s]))") > 1000
            time.sleep(max(0.0, OUTAGE_SECONDS - (time.monotonic() - stopped)))
            server.start()
            traffic.join()
            wait_until(lambda: prom.value("min(flowlens_landing_up)") == 1, 60, "landing back up")
            wait_until(lambda: prom.value("sum(flowlens_ingestion_queue_depth)") == 0, 60, "queue drained")
            counted = " + ".join(f"sum(flowlens_flows_{c}_total)" for c in ("landed", "sampled", "dropped"))
            wait_until(lambda: prom.value(counted) == sent[0].sent_flows, 30, "every flow sent counted in Prometheus")
            wait_until(lambda: "LandingDown" not in prom.firing(), 30, "LandingDown resolved")
    finally:
        daemon.kill()
    assert landing_down and seen_down <= 10 and seen_queue <= 10
    print(f"landing_up 0 after {seen_down:.1f}s, queue >= 4000 after {seen_queue:.1f}s")
