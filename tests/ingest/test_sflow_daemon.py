"""The daemon with sFlow: flows land exactly as the generator sent them, counter samples reach
the daemon's counters, extended router/gateway records land in ``flow_raw``'s routing columns
(real PostgreSQL landing, ``flowlens ingest`` as a subprocess)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import psycopg
import pytest

from ingest.land import open_landing
from ingest.schema import SFLOW_VERSION
from ingest.tools.capture import read_udp
from ingest.tools.encode_sflow import counter_sample, datagram, interface_counters
from ingest.tools.generate import Plan, Sender, run
from tests.ingest.decode import sflow_captures
from tests.ingest.harness import Daemon, daemon_env, free_udp_port, received_total
from tests.ingest.test_daemon_e2e import assert_same, landed_truth

pytestmark = pytest.mark.integration


@pytest.fixture
def pg_cfg(flowlens_config, clean_pg):
    return flowlens_config.model_copy(update={"mode": "minimal"})


def test_sflow_lands_exactly_and_counters_are_kept(pg_cfg, tmp_path):
    port = free_udp_port()
    since = datetime.now(UTC) - timedelta(seconds=5)
    plan = Plan(rate=20_000, flows=20_000, versions=(SFLOW_VERSION, 10), exporters=2, seed=3)
    counters = datagram("127.0.0.1", [counter_sample([interface_counters(7, {"in_octets": 4242})])], sub_agent=1)
    daemon = Daemon(daemon_env(pg_cfg, tmp_path, port), tmp_path)
    try:
        daemon.wait_ready(2)
        gen = run(plan, ("127.0.0.1", port))
        sender = Sender(("127.0.0.1", port), ["127.0.0.1"])
        sender.send("127.0.0.1", [counters])
        sender.close()
        daemon.wait_for(lambda s: received_total(s) >= plan.flows, timeout=60, what="all flows decoded")
        stats = daemon.wait_for(lambda s: s.get("interfaces"), timeout=30, what="interface counters reported")
        final = daemon.terminate()
    finally:
        daemon.kill()
    assert final["flows_landed"] == plan.flows
    assert stats["interfaces"]["127.0.0.1/1/7"]["in_octets"] == 4242
    by_protocol = {key.split("|")[1] for key in final["received"]}  # "exporter|protocol"
    assert by_protocol == {"sflow", "ipfix"}
    landing = open_landing(pg_cfg)
    try:
        assert_same(landed_truth(landing, since), gen.truth())
    finally:
        landing.close()


def test_routing_records_land_in_flow_raw(pg_cfg, pg_dsn, tmp_path):
    """The routing capture replayed to the daemon: each flow's next hop, AS path, communities and
    AS numbers in PostgreSQL are those its sample carried (NULL where it had no such record)."""
    port = free_udp_port()
    payloads = [d.payload for d in read_udp(sflow_captures.ROUTING_PCAP)]
    daemon = Daemon(daemon_env(pg_cfg, tmp_path, port), tmp_path)
    try:
        daemon.wait_ready(2)
        sender = Sender(("127.0.0.1", port), ["127.0.0.1"])
        sender.send("127.0.0.1", payloads)
        sender.close()
        daemon.wait_for(lambda s: received_total(s) >= len(sflow_captures.ROUTING), timeout=60, what="flows decoded")
        final = daemon.terminate()
    finally:
        daemon.kill()
    assert final["flows_landed"] == len(sflow_captures.ROUTING)
    with psycopg.connect(pg_dsn) as conn:
        rows = conn.execute(
            "SELECT host(src_addr), host(next_hop), as_path, communities, src_as, dst_as FROM flowlens.flow_raw"
            " WHERE flow_version = %s",
            (SFLOW_VERSION,),
        ).fetchall()
    assert sorted(rows, key=str) == sorted((tuple(r) for r in sflow_captures.ROUTING), key=str)
