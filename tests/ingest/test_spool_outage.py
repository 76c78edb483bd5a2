"""The disk spool under a real PostgreSQL outage (a private instance, never the stack's)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pyarrow as pa
import pytest

from ingest.land import open_landing
from ingest.tools.generate import TRUTH_KEYS, Plan, _aggregate, run
from tests.ingest.harness import Daemon, daemon_env, free_udp_port, received_total
from tests.ingest.test_daemon_e2e import assert_same, landed_truth
from tests.ingest.test_outage import private_pg  # noqa: F401  (fixture)

pytestmark = pytest.mark.integration


def outage_with_spool(server, cfg, tmp_path, spool_max_bytes: int) -> tuple[dict, dict, list]:
    """10k flows, PostgreSQL stops, 60k flows (the memory queue holds 5k), it comes back."""
    port = free_udp_port()
    env = daemon_env(cfg, tmp_path, port, queue=(5_000, 10_000), processes=1, landing_backoff_max_seconds=1.0,
                     spool_max_bytes=spool_max_bytes)  # fmt: skip
    daemon = Daemon(env, tmp_path)
    gens = []
    try:
        daemon.wait_ready(1)
        gens.append(run(Plan(rate=20_000, flows=10_000, versions=(9,), exporters=2, seed=31), ("127.0.0.1", port)))
        daemon.wait_for(lambda s: s.get("flows_landed") == 10_000, timeout=30, what="landing before the outage")
        server.stop()
        gens.append(run(Plan(rate=20_000, flows=60_000, versions=(9,), exporters=2, seed=32), ("127.0.0.1", port)))
        during = daemon.wait_for(lambda s: received_total(s) == 70_000, timeout=30, what="flows decoded")
        server.start()
        daemon.wait_for(lambda s: s.get("queue_depth") == 0 and s.get("spool_flows") == 0 and s.get("landing_up"),
                        timeout=120, what="queue and spool landed after recovery")  # fmt: skip
        final = daemon.terminate()
    finally:
        daemon.kill()
    return during, final, gens


def test_an_outage_longer_than_the_memory_queue_loses_nothing_with_a_spool(private_pg, tmp_path):  # noqa: F811
    server, cfg = private_pg
    since = datetime.now(UTC) - timedelta(seconds=5)
    during, final, gens = outage_with_spool(server, cfg, tmp_path, spool_max_bytes=64 << 20)
    # memory holds about its sampling level (5k), the rest waits on disk; nothing sampled or dropped
    assert during["queue_depth"] + during["spool_flows"] == 60_000 and during["spool_flows"] >= 50_000
    assert during["spool_bytes"] > 0 and during["sampled"] == 0
    assert 55_000 <= final["spooled"] <= 60_000 and final["sampled"] == 0 and sum(final["flows_dropped"].values()) == 0
    assert final["flows_landed"] == 70_000 and final["spool_bytes"] == 0
    assert not any((tmp_path / "ingest" / "spool" / "w0").iterdir())
    landing = open_landing(cfg)
    try:
        landed = landed_truth(landing, since)
    finally:
        landing.close()
    sent = _aggregate(pa.concat_tables([g.truth() for g in gens]))
    assert_same(landed, sent.sort_by([(k, "ascending") for k in TRUTH_KEYS]))


def test_a_full_spool_falls_back_to_counted_sampling_and_drops(private_pg, tmp_path):  # noqa: F811
    server, cfg = private_pg
    during, final, gens = outage_with_spool(server, cfg, tmp_path, spool_max_bytes=400_000)
    assert 0 < final["spooled"] < 55_000 and during["spool_bytes"] <= 400_000
    assert final["sampled"] > 0  # past the full spool, the sampling band (counted) as without a spool
    counted = final["sampled"] + final["flows_dropped"]["backpressure"]
    assert final["flows_landed"] + counted == sum(g.sent_flows for g in gens) == received_total(final)
