"""Receiving: SO_REUSEPORT sockets, the allow-list, per-exporter fairness, export-time stamping."""

from __future__ import annotations

import socket
import struct
import time

import pytest

from ingest import mmsg
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


def _traffic(port: int) -> list[tuple[str, bytes]]:
    """Send datagrams to ``port`` from two IPv4 exporters and one IPv6 one; return (source, payload)."""
    senders = [
        (socket.socket(socket.AF_INET, socket.SOCK_DGRAM), "127.0.0.2", "127.0.0.1"),
        (socket.socket(socket.AF_INET6, socket.SOCK_DGRAM), "::1", "::1"),
        (socket.socket(socket.AF_INET, socket.SOCK_DGRAM), "127.0.0.3", "127.0.0.1"),
    ]
    sent = []
    try:
        for sock, source, _ in senders:
            sock.bind((source, 0))
        for i in range(700):  # several drains' worth (drain_limit is 256)
            sock, source, dest = senders[(i // 5) % 3]  # runs of 5 per exporter, then the next
            payload = struct.pack("!HHIII", 10, 16 + i % 50, 1_600_000_000 + i, i, 0) + bytes(i % 50)
            sock.sendto(payload, (dest, port))
            sent.append((source, payload))
    finally:
        for sock, _, _ in senders:
            sock.close()
    return sent


@pytest.mark.parametrize("use_mmsg", [True, False])
def test_recvmmsg_and_recvfrom_paths_queue_the_same_packets(use_mmsg):
    if use_mmsg and not mmsg.available():
        pytest.skip("recvmmsg needs Linux")
    sock = open_udp_socket("::", 0, 8 << 20)
    stats, queue = WorkerStats(), FairQueue(10_000)
    receiver = Receiver([sock], queue, AllowList(["127.0.0.2", "::1"]), stats, use_export_time=True)
    receiver.use_mmsg = use_mmsg
    try:
        sent = _traffic(sock.getsockname()[1])
        receiver.drain_all()  # what shutdown does: drains past drain_limit until empty
    finally:
        sock.close()
    allowed = [(s, p) for s, p in sent if s != "127.0.0.3"]
    assert stats.packets_received == len(allowed) and stats.packets_dropped["not_allowed"] == len(sent) - len(allowed)
    taken = queue.take(10_000, timeout=0.1)
    for exporter in ("127.0.0.2", "::1"):  # per exporter: all of its packets, in order, stamped
        mine = [p for p in taken if p[0] == exporter]
        assert [p[1] for p in mine] == [p for s, p in allowed if s == exporter]
        assert [p[2] for p in mine] == [export_time_us(p[1]) for p in mine]
    assert receiver.max_stamp == max(export_time_us(p) for _, p in allowed) and receiver.pending is None


def test_oversized_datagrams_are_counted_not_queued():
    if not mmsg.available():
        pytest.skip("recvmmsg needs Linux")
    sock = open_udp_socket("127.0.0.1", 0, 1 << 20)
    stats, queue = WorkerStats(), FairQueue(100)
    receiver = Receiver([sock], queue, AllowList(["127.0.0.0/8"]), stats)
    receiver.drain_limit = 16
    receiver._readers[sock] = mmsg.MmsgReceiver(sock, slots=16, slot_bytes=512)  # a small slot
    sender = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        for size in (100, 600, 512, 2000):
            sender.sendto(bytes(size), sock.getsockname())
        assert receiver._drain(sock) == 4  # datagrams read, kept or not
    finally:
        sender.close()
        sock.close()
    assert [len(p[1]) for p in queue.take(10, timeout=0.1)] == [100, 512]
    assert stats.packets_dropped["oversized"] == 2 and stats.packets_received == 2


@pytest.mark.parametrize("use_mmsg", [True, False])
def test_datagrams_over_max_datagram_bytes_are_oversized_not_malformed(use_mmsg):
    if use_mmsg and not mmsg.available():
        pytest.skip("recvmmsg needs Linux")
    sock = open_udp_socket("127.0.0.1", 0, 1 << 20)
    stats, queue = WorkerStats(), FairQueue(100)
    receiver = Receiver([sock], queue, AllowList(["127.0.0.0/8"]), stats, max_datagram_bytes=1500)
    receiver.use_mmsg = use_mmsg
    sender = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        for size in (1500, 1501, 60_000, 20):
            sender.sendto(b"\x00\x09" + bytes(size - 2), sock.getsockname())
        time.sleep(0.05)
        assert receiver._drain(sock) == 4
    finally:
        sender.close()
        sock.close()
    assert [len(p[1]) for p in queue.take(10, timeout=0.1)] == [1500, 20]
    assert stats.packets_dropped == {"oversized": 2} and stats.packets_received == 2


def test_put_many_keeps_order_per_exporter_when_interleaved():
    queue = FairQueue(max_packets=1000)
    packets = [(e, bytes([i]), i) for i in range(90) for e in ["a", "b", "a", "c"][i % 4 : i % 4 + 1]]
    queue.put_many(packets[:45])
    queue.put_many(packets[45:])
    assert queue.size == 90 and list(queue._order) == ["a", "b", "c"]
    taken = queue.take(1000, timeout=0.1)
    for exporter in "abc":
        assert [p for p in taken if p[0] == exporter] == [p for p in packets if p[0] == exporter]
