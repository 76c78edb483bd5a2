"""``--stats-file`` stays true when the supervisor is killed outright: the orphaned receiving
processes drain and write their final counts into it themselves."""

from __future__ import annotations

import json
import os
import signal
import time

import psycopg
import pytest

from ingest import stats_file
from ingest.tools.generate import Plan, run
from tests.ingest.harness import Daemon, daemon_env, free_udp_port, received_total
from tests.ingest.test_daemon_e2e import pg_cfg  # noqa: F401  (fixture)

pytestmark = pytest.mark.integration


def test_replace_part_sums_the_parts_again(tmp_path):
    path = tmp_path / "stats.json"
    snap = {"received": {("10.0.0.1", "netflow_v9"): 5}, "flows_landed": 5, "queue_depth": 3,
            "latency": {"buckets": [0] * 14, "sum": 0.0, "count": 0}}  # fmt: skip
    stats_file.write(path, {"0": stats_file.jsonable(snap), "1": stats_file.jsonable(snap)}, {"pid": 1})
    final = {**snap, "received": {("10.0.0.1", "netflow_v9"): 8}, "flows_landed": 8, "queue_depth": 0}
    stats_file.replace_part(path, "1", final)
    data = json.loads(path.read_text())
    assert data["flows_landed"] == 13 and data["received"] == {"10.0.0.1|netflow_v9": 13}
    assert data["queue_depth"] == 3 and data["supervisor_lost"] and data["pid"] == 1


def test_kill_9_of_the_supervisor_leaves_the_final_counts_in_the_stats_file(pg_cfg, tmp_path):  # noqa: F811
    port = free_udp_port()
    daemon = Daemon(daemon_env(pg_cfg, tmp_path, port, batch_max_seconds=5.0), tmp_path)
    try:
        daemon.wait_ready(2)
        gen = run(Plan(rate=20_000, flows=20_000, versions=(9,), exporters=4, seed=5), ("127.0.0.1", port))
        before = daemon.wait_for(lambda s: received_total(s) == gen.sent_flows, 30, "flows decoded")
        killed_at = time.time()
        os.kill(daemon.proc.pid, signal.SIGKILL)  # the supervisor only: its workers get SIGTERM and drain
        daemon.proc.wait(10)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and daemon.stats().get("flows_landed") != gen.sent_flows:
            time.sleep(0.2)
        final = daemon.stats()
    finally:
        daemon.kill()
    assert before["pid"] == daemon.proc.pid and final["supervisor_lost"] and final["updated_at"] > killed_at
    assert final["flows_landed"] == gen.sent_flows == received_total(final) and final["queue_depth"] == 0
    with psycopg.connect(pg_cfg.postgres.dsn()) as conn:
        assert conn.execute("SELECT count(*) FROM flowlens.flow_raw").fetchone()[0] == gen.sent_flows
