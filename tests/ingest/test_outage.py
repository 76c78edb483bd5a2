"""A landing backend that goes away: the daemon buffers, backs off, counts, and loses nothing that fit.

The services stopped here are private throwaway instances, never the shared stack's.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

import pyarrow as pa
import pytest

from flowlens_dagster.migrate import migrate
from ingest.generate import Plan, _aggregate, run
from ingest.land import open_landing
from tests.ingest.harness import Daemon, daemon_env, free_udp_port, received_total
from tests.ingest.private_services import PrivatePostgres
from tests.ingest.test_daemon_e2e import assert_same, landed_truth

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


def test_postgres_outage_loses_nothing_that_fit(private_pg, tmp_path):
    server, cfg = private_pg
    port = free_udp_port()
    since = datetime.now(UTC) - timedelta(seconds=5)
    env = daemon_env(cfg, tmp_path, port, landing_backoff_max_seconds=1.0)
    daemon = Daemon(env, tmp_path)
    try:
        daemon.wait_ready(2)
        before = run(Plan(rate=20_000, flows=10_000, versions=(9,), exporters=2, seed=21), ("127.0.0.1", port))
        daemon.wait_for(lambda s: s.get("flows_landed") == 10_000, timeout=30, what="landing before the outage")
        server.stop()
        during = run(Plan(rate=20_000, flows=30_000, versions=(9,), exporters=2, seed=22), ("127.0.0.1", port))
        stats = daemon.wait_for(
            lambda s: received_total(s) == 40_000 and sum(s.get("landing_failures", {}).values()) > 0,
            timeout=30, what="flows buffered while PostgreSQL is down",
        )  # fmt: skip
        assert stats["queue_depth"] == 30_000 and stats["flows_landed"] == 10_000
        assert stats["landing_up"] == {"postgres": 0}
        time.sleep(1.5)
        server.start()
        final = daemon.wait_for(lambda s: s.get("flows_landed") == 40_000, timeout=60, what="recovery")
        assert final["landing_up"] == {"postgres": 1}
        final = daemon.terminate()
    finally:
        daemon.kill()
    assert final["sampled"] == 0 and sum(final["flows_dropped"].values()) == 0
    landing = open_landing(cfg)
    try:
        sent = before.truth()
        sent = during.truth() if sent.num_rows == 0 else sent
        both = landed_truth(landing, since)
    finally:
        landing.close()

    expected = _aggregate(pa.concat_tables([before.truth(), during.truth()])).sort_by(
        [(k, "ascending") for k in ("src_addr", "dst_addr", "dst_port", "protocol")]
    )
    assert_same(both, expected)
