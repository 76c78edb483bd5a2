"""End to end: generator -> loopback UDP -> ``flowlens ingest`` (2 processes) -> Kafka / PostgreSQL.

What lands must be exactly what was sent: per (src, dst, dst_port, protocol) the same bytes,
packets and flow counts, nothing missing, nothing duplicated.
"""

from __future__ import annotations

import contextlib
import struct
import threading
import time
from datetime import UTC, datetime, timedelta

import numpy as np
import pyarrow as pa
import pytest
from confluent_kafka.admin import AdminClient

from ingest import worker as worker_module
from ingest.config import ListenAddress
from ingest.land import open_landing
from ingest.tools.generate import TRUTH_KEYS, Enterprise, Plan, Sender, _aggregate, run
from ingest.window import WINDOW, window_start
from ingest.worker import Worker
from tests.ingest.harness import Daemon, daemon_env, free_udp_port, received_total

pytestmark = pytest.mark.integration


def windows_since(since: datetime):
    start = window_start(since)
    while start < datetime.now(UTC) + WINDOW:
        yield start
        start += WINDOW


def landed_truth(landing, since: datetime) -> pa.Table:
    """Everything landed from ``since`` on, aggregated like the generator's ground truth."""
    flows = pa.concat_tables([landing.read_window(s, s + WINDOW).flows for s in windows_since(since)])
    table = flows.select(["src_addr", "dst_addr", "dst_port", "protocol", "bytes", "packets"])
    table = table.append_column("flows", pa.array(np.ones(flows.num_rows, np.int64)))
    return _aggregate(table).sort_by([(k, "ascending") for k in TRUTH_KEYS])


def assert_same(landed: pa.Table, sent: pa.Table) -> None:
    assert landed.num_rows == sent.num_rows, f"{landed.num_rows} keys landed, {sent.num_rows} sent"
    for name in ("bytes", "packets", "flows"):
        got = landed.column(name).cast(pa.int64()).to_pylist()
        want = sent.column(name).cast(pa.int64()).to_pylist()
        assert got == want, f"{name} differ per key"
    for name in TRUTH_KEYS:
        assert landed.column(name).cast(sent.schema.field(name).type).equals(sent.column(name))


def delete_watermark_topic(cfg) -> None:
    admin = AdminClient({"bootstrap.servers": cfg.kafka.bootstrap_servers})
    for future in admin.delete_topics([f"{cfg.kafka.raw_topic}.watermarks"], operation_timeout=30).values():
        with contextlib.suppress(Exception):  # the landing may not have created it
            future.result(timeout=30)


@pytest.fixture
def kafka_cfg(flowlens_config, kafka_topic):
    topic = kafka_topic("flows.raw.e2e")
    cfg = flowlens_config.model_copy(update={"mode": "standard"})
    cfg = cfg.model_copy(update={"kafka": cfg.kafka.model_copy(update={"raw_topic": topic})})
    yield cfg
    delete_watermark_topic(cfg)


@pytest.fixture
def pg_cfg(flowlens_config, clean_pg):
    return flowlens_config.model_copy(update={"mode": "minimal"})


def send_and_drain(cfg, tmp_path, plan: Plan):
    port = free_udp_port()
    since = datetime.now(UTC) - timedelta(seconds=5)
    daemon = Daemon(daemon_env(cfg, tmp_path, port), tmp_path)
    try:
        daemon.wait_ready(2)
        gen = run(plan, ("127.0.0.1", port))
        daemon.wait_for(lambda s: received_total(s) >= plan.flows, timeout=60, what="all flows decoded")
        final = daemon.terminate()
    finally:
        daemon.kill()
    return gen, final, since


@pytest.mark.parametrize("backend", ["kafka", "postgres"])
def test_exactly_the_flows_sent_land(backend, request, tmp_path):
    cfg = request.getfixturevalue("kafka_cfg" if backend == "kafka" else "pg_cfg")
    plan = Plan(rate=20_000, flows=60_000, versions=(5, 9, 10), exporters=3, seed=7)
    gen, final, since = send_and_drain(cfg, tmp_path, plan)
    assert received_total(final) == plan.flows
    assert final["flows_landed"] == plan.flows
    assert final["sampled"] == 0 and sum(final["flows_dropped"].values()) == 0
    landing = open_landing(cfg)
    try:
        assert_same(landed_truth(landing, since), gen.truth())
        marks = landing.watermarks()
        assert len(marks) == 2  # one per receiving process, whether or not the kernel sent it traffic
        assert sum(m.flows_landed for m in marks) == plan.flows
        assert all(m.landed_through > since for m in marks)
    finally:
        landing.close()


def test_sigterm_mid_stream_loses_nothing_accepted(pg_cfg, tmp_path):
    port = free_udp_port()
    since = datetime.now(UTC) - timedelta(seconds=5)
    daemon = Daemon(daemon_env(pg_cfg, tmp_path, port), tmp_path)
    try:
        daemon.wait_ready(2)
        plan = Plan(rate=30_000, duration=6.0, versions=(9,), exporters=2, seed=3)
        sender = threading.Thread(target=run, args=(plan, ("127.0.0.1", port)))
        sender.start()
        daemon.wait_for(lambda s: received_total(s) > 20_000, timeout=30, what="traffic flowing")
        final = daemon.terminate()  # while the generator is still sending
        sender.join()
    finally:
        daemon.kill()
    accepted = received_total(final) - final["sampled"] - sum(final["flows_dropped"].values())
    assert accepted > 20_000
    assert final["flows_landed"] == accepted
    landing = open_landing(pg_cfg)
    try:
        rows = sum(landing.read_window(s, s + WINDOW).flows.num_rows for s in windows_since(since))
    finally:
        landing.close()
    assert rows == accepted


def test_unknown_exporter_is_rejected_and_counted(pg_cfg, tmp_path):
    port = free_udp_port()
    env = daemon_env(pg_cfg, tmp_path, port, allowed_exporters=["127.0.0.1/32", "127.0.0.2"])
    daemon = Daemon(env, tmp_path)
    try:
        daemon.wait_ready(2)
        # Three exporters take turns by chunk of 1000 flows: 127.0.0.1 and .2 are allowed, .3 is not.
        gen = run(Plan(rate=20_000, flows=9_000, versions=(9,), exporters=3, chunk=1000), ("127.0.0.1", port))
        daemon.wait_for(lambda s: received_total(s) >= 6_000, timeout=30, what="allowed flows decoded")
        final = daemon.terminate()
    finally:
        daemon.kill()
    assert {key.split("|")[0] for key in final["received"]} == {"127.0.0.1", "127.0.0.2"}
    assert received_total(final) == 6_000
    assert final["packets_dropped"]["not_allowed"] == gen.sent_packets - final["packets_received"] > 0


def test_restart_decodes_with_persisted_templates(pg_cfg, tmp_path):
    """v9/IPFIX data sent after a restart, with no template in it, decodes at once."""
    from ingest.tools.encode import IpfixEncoder, V9Encoder

    port = free_udp_port()
    env = daemon_env(pg_cfg, tmp_path, port, processes=1)
    rng = np.random.default_rng(5)
    encoders = {
        "127.0.0.1": V9Encoder(260, template_every=10_000),
        "127.0.0.2": IpfixEncoder(270, template_every=10_000),
    }
    sender = Sender(("127.0.0.1", port), list(encoders))

    def send(n: int) -> None:
        now = time.time_ns() // 1000
        for source, enc in encoders.items():
            cols = Enterprise().flows(n, rng, np.full(n, now - 1_000_000))
            sender.send(source, enc.packets(cols, export_time=now // 1_000_000))

    daemons = []
    try:
        daemons.append(Daemon(env, tmp_path))
        daemons[0].wait_ready(1)
        send(500)  # the first packets carry the templates
        daemons[0].wait_for(lambda s: received_total(s) == 1000, timeout=30, what="first flows")
        daemons[0].terminate()
        daemons.append(Daemon(env, tmp_path))
        daemons[1].wait_ready(1)
        send(500)  # data only: the encoders sent their templates already
        final = daemons[1].wait_for(lambda s: received_total(s) == 1000, timeout=30, what="flows after restart")
        daemons[1].terminate()
    finally:
        sender.close()
        for daemon in daemons:
            daemon.kill()
    assert not any(key.startswith("malformed") for key in final["packets_dropped"])


def test_export_time_fills_past_windows(pg_cfg, tmp_path):
    """``timestamp_source: export``: flows stamped two hours ago land in the windows of that time."""
    port = free_udp_port()
    start = window_start(datetime.now(UTC) - timedelta(hours=2))
    daemon = Daemon(daemon_env(pg_cfg, tmp_path, port, timestamp_source="export"), tmp_path)
    try:
        daemon.wait_ready(2)
        # 12 simulated minutes in about 2 real seconds: three 5-minute windows.
        plan = Plan(rate=10_000, duration=2.2, versions=(9, 10), exporters=2, seed=5,
                    start_us=int(start.timestamp() * 1e6), speed=330, chunk=500)  # fmt: skip
        gen = run(plan, ("127.0.0.1", port))
        daemon.wait_for(lambda s: received_total(s) == gen.sent_flows, timeout=30, what="flows decoded")
        final = daemon.terminate()
    finally:
        daemon.kill()
    landing = open_landing(pg_cfg)
    try:
        counts = [landing.read_window(start + i * WINDOW, start + (i + 1) * WINDOW).flows.num_rows for i in range(4)]
        marks = landing.watermarks()
    finally:
        landing.close()
    assert final["flows_landed"] == gen.sent_flows == sum(counts)
    assert sum(1 for c in counts if c) >= 3  # the simulated clock crossed window boundaries
    # Watermarks follow the exporters' clock: past the data, far behind the wall clock (a process
    # the kernel gave no traffic publishes none).
    assert marks and all(start < m.landed_through < start + 5 * WINDOW for m in marks)
    assert sum(m.flows_landed for m in marks) == gen.sent_flows


def packet(exporter: str, stamp_us: int) -> tuple[str, bytes, int]:
    """A received packet as the receive thread queues it: a NetFlow v9 header exported at ``stamp_us``."""
    header = struct.pack("!HHIIII", 9, 0, 3_600_000, stamp_us // 1_000_000, 1, 0)
    return exporter, header, stamp_us


def test_export_watermark_follows_the_slowest_sending_exporter(pg_cfg, tmp_path, monkeypatch):
    """``timestamp_source: export``: a process's watermark never runs ahead of an exporter it hears.

    No packet yet, or every exporter quiet: no position on the exporters' clock, so no heartbeat
    (the process neither holds windows open nor closes them on the wall clock). A packet that
    arrives behind the published watermark is moved up to it instead of reopening a closed window.
    """
    ingest = pg_cfg.ingest.model_copy(
        update={"listen": [ListenAddress(host="127.0.0.1", port=free_udp_port())], "timestamp_source": "export",
                "heartbeat_seconds": 0.05}
    )  # fmt: skip
    worker = Worker(pg_cfg.model_copy(update={"ingest": ingest, "state_dir": tmp_path}), 0, "unit/w0")
    monkeypatch.setattr(worker_module, "EXPORTER_IDLE_SECONDS", 0.0)  # idle after 2 heartbeats (0.1 s)
    t0 = int((window_start(datetime.now(UTC)) - timedelta(hours=2)).timestamp() * 1_000_000)
    try:
        assert worker.landed_through_us() is None
        worker._follow_export_clock([packet("10.0.0.1", t0 + 60_000_000), packet("10.0.0.2", t0)])
        assert worker.landed_through_us() == t0  # the slower exporter holds it
        worker._follow_export_clock([packet("10.0.0.2", t0 + 90_000_000)])
        assert worker.landed_through_us() == t0 + 60_000_000
        late = worker._follow_export_clock([packet("10.0.0.3", t0 - 30_000_000), packet("10.0.0.3", t0 + 61_000_000)])
        assert [p[2] for p in late] == [t0 + 60_000_000, t0 + 61_000_000]
        # a header without an export time (too short) was stamped with the wall clock: it moves no clock
        worker._follow_export_clock([("10.0.0.1", b"\x00\x09", time.time_ns() // 1000)])
        assert worker.landed_through_us() == t0 + 60_000_000
        assert worker.late_packets_clamped == 1
        time.sleep(0.3)  # every exporter quiet for longer than the idle time
        assert worker.landed_through_us() is None
    finally:
        worker.loop.close()
        for sock in worker.sockets:
            sock.close()
