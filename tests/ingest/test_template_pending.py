"""v9 data whose template never comes: held (gauge), expired after ``ingest.template_wait_seconds``
and at shutdown, each counted with its reason, never silently discarded."""

from __future__ import annotations

import socket
import time

import pytest

from ingest.tools.encode import V9Encoder
from tests.ingest.flows import random_flows
from tests.ingest.harness import Daemon, daemon_env, free_udp_port
from tests.ingest.test_daemon_e2e import pg_cfg  # noqa: F401  (fixture)

pytestmark = pytest.mark.integration


def data_only_packets(count: int, seed: int) -> list[bytes]:
    """``count`` v9 packets of one data set each, from an exporter whose template we never send."""
    encoder = V9Encoder(300, domain=7, template_every=10**6, flows_per_packet=10)
    packets = encoder.packets(random_flows(10 * (count + 1), 1_764_000_000_000_000, seed=seed), time.time())
    return packets[1:]  # the first packet carries the template: keep it back


def test_data_waiting_for_a_template_is_counted_while_held_expired_and_at_shutdown(pg_cfg, tmp_path):  # noqa: F811
    port = free_udp_port()
    env = daemon_env(pg_cfg, tmp_path, port, processes=1, template_wait_seconds=1.0)
    daemon = Daemon(env, tmp_path)
    sender = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        daemon.wait_ready(1)
        for packet in data_only_packets(5, seed=1):
            sender.sendto(packet, ("127.0.0.1", port))
        held = daemon.wait_for(lambda s: s.get("template_pending_sets") == 5, 30, "five sets held")
        assert held["template_pending_bytes"] > 0 and held["template_pending_dropped"] == {}
        time.sleep(1.5)  # longer than template_wait_seconds on the receive clock
        sender.sendto(data_only_packets(1, seed=2)[0], ("127.0.0.1", port))
        later = daemon.wait_for(lambda s: s.get("template_pending_dropped", {}).get("expired") == 5, 30,
                                "the five old sets expired")  # fmt: skip
        assert later["template_pending_sets"] == 1
        final = daemon.terminate()
    finally:
        sender.close()
        daemon.kill()
    assert final["template_pending_dropped"] == {"expired": 5, "shutdown": 1}
    assert final["template_pending_sets"] == 0 and final["flows_landed"] == 0
    assert not any(reason.startswith("malformed") for reason in final["packets_dropped"])
