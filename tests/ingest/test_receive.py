"""Receiving: SO_REUSEPORT sockets, the allow-list, per-exporter fairness, export-time stamping."""

from __future__ import annotations

import socket
import struct
import time

import pytest

from ingest.metrics import WorkerStats, udp_socket_stats
from ingest.receive import AllowList, FairQueue, Receiver, export_time_us, open_udp_socket, set_receive_buffer


def test_allow_list_addresses_and_cidrs():
    allow = AllowList(["10.0.0.0/8", "192.0.2.7", "2001:db8::/32"])
    assert allow.allows("10.200.3.4") and allow.allows("192.0.2.7") and allow.allows("2001:db8::1")
    assert allow.allows("::ffff:10.1.1.1")  # IPv4-mapped senders on dual-stack sockets
    assert not allow.allows("192.0.2.8") and not allow.allows("172.16.0.1") and not allow.allows("2001:db9::1")


def test_flooding_exporter_sheds_its_own_packets():
    queue = FairQueue(max_packets=100)
    queue.put_many([("10.0.0.1", b"x", i) for i in range(1000)])  # a flood
    queue.put_many([("10.0.0.2", b"y", i) for i in range(20)])  # a quiet exporter after it
    assert queue.size == 100 and queue.dropped == 920
    taken = queue.take(100, timeout=0.1)
    by_exporter = {e: sum(1 for p in taken if p[0] == e) for e in ("10.0.0.1", "10.0.0.2")}
    assert by_exporter == {"10.0.0.1": 80, "10.0.0.2": 20}  # the quiet exporter lost nothing


def test_take_is_round_robin_and_tracks_in_flight():
    queue = FairQueue(max_packets=10_000)
    queue.put_many([("a", b"", 100 + i) for i in range(300)] + [("b", b"", 50 + i) for i in range(10)])
    first = queue.take(100, timeout=0.1)
    assert [p[0] for p in first[:64]] == ["a"] * 64 and [p[0] for p in first[64:74]] == ["b"] * 10
    assert queue.oldest_stamp() == 50  # taken, not released: still held
    queue.release()
    assert queue.oldest_stamp() == 100 + 90


def test_export_time_from_headers():
    v5 = struct.pack("!HHIIIIBBH", 5, 0, 1000, 1_700_000_000, 250_000_000, 0, 0, 0, 0)
    v9 = struct.pack("!HHIIII", 9, 0, 1000, 1_700_000_001, 0, 0)
    ipfix = struct.pack("!HHIII", 10, 16, 1_700_000_002, 0, 0)
    assert export_time_us(v5) == 1_700_000_000_250_000
    assert export_time_us(v9) == 1_700_000_001_000_000
    assert export_time_us(ipfix) == 1_700_000_002_000_000
    assert export_time_us(b"\x00\x07" + bytes(20)) is None and export_time_us(b"\x00\x09") is None


def test_reuseport_sockets_share_a_port_and_get_big_buffers():
    first = open_udp_socket("127.0.0.1", 0, 4 << 20)
    port = first.getsockname()[1]
    second = open_udp_socket("127.0.0.1", port, 4 << 20)
    try:
        assert second.getsockname()[1] == port
        assert first.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF) >= 4 << 20  # root: SO_RCVBUFFORCE
    finally:
        first.close()
        second.close()


def test_receive_buffer_cap_is_warned(caplog):
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        granted = set_receive_buffer(sock, 2**31 - 1)
        assert granted < 2**31 - 1
        assert "kernel caps it" in caplog.text
    finally:
        sock.close()


@pytest.mark.parametrize("use_export_time", [False, True])
def test_receiver_filters_and_stamps_real_packets(use_export_time):
    sock = open_udp_socket("127.0.0.1", 0, 1 << 20)
    port = sock.getsockname()[1]
    stats, queue = WorkerStats(), FairQueue(1000)
    receiver = Receiver([sock], queue, AllowList(["127.0.0.2"]), stats, use_export_time=use_export_time)
    receiver.start()
    senders = [socket.socket(socket.AF_INET, socket.SOCK_DGRAM) for _ in range(2)]
    try:
        senders[0].bind(("127.0.0.2", 0))
        senders[1].bind(("127.0.0.3", 0))
        packet = struct.pack("!HHIII", 10, 16, 1_600_000_000, 0, 0)
        before = time.time_ns() // 1000
        for _ in range(5):
            senders[0].sendto(packet, ("127.0.0.1", port))
            senders[1].sendto(packet, ("127.0.0.1", port))
        deadline = time.monotonic() + 5
        while (queue.size < 5 or stats.packets_dropped["not_allowed"] < 5) and time.monotonic() < deadline:
            time.sleep(0.01)
    finally:
        receiver.stopping.set()
        receiver.join()
        for s in senders:
            s.close()
    taken = queue.take(100, timeout=0.1)
    assert [p[0] for p in taken] == ["127.0.0.2"] * 5
    assert stats.packets_dropped["not_allowed"] == 5 and stats.packets_received == 5
    stamps = {p[2] for p in taken}
    assert stamps == {1_600_000_000_000_000} if use_export_time else min(stamps) >= before
    assert udp_socket_stats([port])[port]["sockets"] == 1
    sock.close()
