"""A landing backend that goes away: the daemon buffers, backs off, counts, and loses nothing that fit.

The services stopped here are private throwaway instances, never the shared stack's.
"""

from __future__ import annotations

import time
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pyarrow as pa
import pytest

from flowlens_dagster.migrate import migrate
from ingest.land import open_landing
from ingest.tools.generate import TRUTH_KEYS, Plan, _aggregate, run
from ingest.window import WINDOW
from tests.ingest.harness import Daemon, daemon_env, free_udp_port, received_total
from tests.ingest.private_services import PrivateKafka, PrivatePostgres
from tests.ingest.test_daemon_e2e import assert_same, landed_truth, windows_since

pytestmark = pytest.mark.integration


@pytest.fixture
def private_pg(flowlens_config):
    server = PrivatePostgres()
    try:
        server.start()
        pg = flowlens_config.postgres.model_copy(update={"port": server.port, "database": "flowlens_outage"})
        server.create_database(pg.user, pg.password, pg.database)
        pool = flowlens_config.backpressure.postgresql.model_copy(update={"pool_timeout_seconds": 1.0})
        cfg = flowlens_config.model_copy(
            update={"mode": "minimal", "postgres": pg,
                    "backpressure": flowlens_config.backpressure.model_copy(update={"postgresql": pool})}
        )  # fmt: skip
        migrate(cfg, log=lambda _m: None)
        yield server, cfg
    finally:
        server.destroy()


def outage_scenario(server, cfg, tmp_path, version: int) -> dict:
    """10k flows, the service stops, 30k flows while it is away, it comes back: all 40k land."""
    port = free_udp_port()
    since = datetime.now(UTC) - timedelta(seconds=5)
    daemon = Daemon(daemon_env(cfg, tmp_path, port, landing_backoff_max_seconds=1.0), tmp_path)
    backend = "postgres" if cfg.mode == "minimal" else "kafka"
    try:
        daemon.wait_ready(2)
        plan = Plan(rate=20_000, flows=10_000, versions=(version,), exporters=2, seed=21)
        before = run(plan, ("127.0.0.1", port))
        daemon.wait_for(lambda s: s.get("flows_landed") == 10_000, timeout=30, what="landing before the outage")
        server.stop()
        during = run(replace(plan, flows=30_000, seed=22), ("127.0.0.1", port))
        daemon.wait_for(lambda s: received_total(s) == 40_000, timeout=30, what="flows received")
        time.sleep(2.0)  # the service stays away a while: the daemon buffers and backs off
        away = daemon.wait_for(lambda s: s.get("landing_up") == {backend: 0}, timeout=30, what="landing down")
        assert away["flows_landed"] == 10_000 and away["queue_depth"] == 30_000
        server.start()
        daemon.wait_for(lambda s: s.get("flows_landed") == 40_000, timeout=90, what="recovery")
        back = daemon.wait_for(lambda s: s.get("landing_up") == {backend: 1}, timeout=60, what="landing up")
        final = daemon.terminate()
    finally:
        daemon.kill()
    assert final["sampled"] == 0 and sum(final["flows_dropped"].values()) == 0
    assert sum(back["landing_failures"].values()) > 0
    landing = open_landing(cfg)
    try:
        landed = landed_truth(landing, since)
    finally:
        landing.close()
    sent = _aggregate(pa.concat_tables([before.truth(), during.truth()]))
    assert_same(landed, sent.sort_by([(k, "ascending") for k in TRUTH_KEYS]))
    return final


def test_postgres_outage_loses_nothing_that_fit(private_pg, tmp_path):
    outage_scenario(*private_pg, tmp_path, version=9)


@pytest.fixture
def private_kafka(flowlens_config):
    broker = PrivateKafka(flowlens_config)
    try:
        broker.start()
        broker.create_topic("flows.raw", 6)
        kafka = broker.cfg.kafka.model_copy(update={"raw_topic": "flows.raw"})
        yield broker, broker.cfg.model_copy(update={"mode": "standard", "kafka": kafka})
    finally:
        broker.destroy()


def test_kafka_outage_loses_nothing_that_fit(private_kafka, tmp_path):
    outage_scenario(*private_kafka, tmp_path, version=10)


def test_full_queue_samples_then_drops_and_counts_every_flow(private_pg, tmp_path):
    """Landing down and a small queue: flows are sampled 1:N, then dropped; all of it is counted."""
    server, cfg = private_pg
    port = free_udp_port()
    env = daemon_env(cfg, tmp_path, port, queue=(4_000, 8_000), processes=1, landing_backoff_max_seconds=0.5)
    daemon = Daemon(env, tmp_path)
    try:
        daemon.wait_ready(1)
        server.stop()
        gen = run(Plan(rate=20_000, flows=60_000, versions=(9,), exporters=2, seed=41), ("127.0.0.1", port))
        stats = daemon.wait_for(lambda s: received_total(s) == 60_000, timeout=30, what="flows decoded")
        server.start()
        final = daemon.wait_for(lambda s: s.get("queue_depth") == 0 and s.get("flows_landed"), timeout=60,
                                what="queue landed after recovery")  # fmt: skip
        daemon.terminate()
    finally:
        daemon.kill()
    dropped = final["flows_dropped"]["backpressure"]
    assert stats["sampled"] == 4_000 * (10 - 1)  # the 4,000 queued between 4,000 and 8,000 kept 1 in 10
    assert final["flows_landed"] == 8_000
    assert final["flows_landed"] + final["sampled"] + dropped == gen.sent_flows
    landing = open_landing(cfg)
    try:
        start = datetime.now(UTC) - timedelta(minutes=10)
        flows = pa.concat_tables([landing.read_window(s, s + WINDOW).flows for s in windows_since(start)])
    finally:
        landing.close()
    rates = flows.column("sampling_rate").to_pylist()
    assert rates.count(10) == 4_000 and rates.count(1) == 4_000  # kept-while-sampling flows carry 1:10
