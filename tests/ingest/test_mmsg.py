"""recvmmsg/sendmmsg over real loopback sockets: payloads, order, sender addresses, truncation, errors."""

from __future__ import annotations

import errno
import socket
import sys

import pytest

from ingest import mmsg
from ingest.receive import open_udp_socket

pytestmark = pytest.mark.skipif(not mmsg.available(), reason="recvmmsg/sendmmsg need Linux and CPython")

SIZES = [1, 17, 300, 1400, 1401, 4096, 9000, 1464, 0, 65_000]


def _payload(i: int, size: int) -> bytes:
    """Distinct bytes per datagram, so a swapped or clipped payload cannot pass for another."""
    return bytes((i * 7 + k) % 251 for k in range(size))


@pytest.fixture
def dual_stack():
    """A receiving socket on [::] that also takes IPv4 (as ::ffff:a.b.c.d), like a daemon on '::'."""
    sock = open_udp_socket("::", 0, 8 << 20)
    yield sock
    sock.close()


def _senders():
    v4a = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    v4a.bind(("127.0.0.2", 0))
    v4b = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    v4b.bind(("127.0.0.3", 0))
    v6 = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
    v6.bind(("::1", 0))
    return [(v4a, "127.0.0.2", "127.0.0.1"), (v6, "::1", "::1"), (v4b, "127.0.0.3", "127.0.0.1")]


def _read_all(reader: mmsg.MmsgReceiver, count: int, batch: int) -> tuple[list[bytes], list[str]]:
    payloads: list[bytes] = []
    sources: list[str] = []
    for _ in range(10 * count):
        got, src = reader.read(batch)
        payloads += got
        sources += src
        if len(payloads) >= count:
            break
    return payloads, sources


def test_many_datagrams_from_ipv4_and_ipv6_arrive_intact_in_order(dual_stack):
    port = dual_stack.getsockname()[1]
    senders = _senders()
    expected = []
    try:
        for i in range(120):
            sock, source, dest = senders[i % 3]
            payload = _payload(i, SIZES[i % len(SIZES)])
            sock.sendto(payload, (dest, port))
            expected.append((payload, source))
        reader = mmsg.MmsgReceiver(dual_stack, slots=16)
        payloads, sources = _read_all(reader, len(expected), batch=16)
        assert list(zip(payloads, sources, strict=True)) == expected
        assert reader.read(16) == ([], [])  # nothing left: EAGAIN is an empty read
        assert reader.truncated == 0
    finally:
        for sock, _, _ in senders:
            sock.close()


def test_plain_ipv4_socket_and_max_packets():
    sock = open_udp_socket("127.0.0.1", 0, 4 << 20)
    sender = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sender.bind(("127.0.0.4", 0))
    try:
        payloads = [_payload(i, 100 + i) for i in range(50)]
        for p in payloads:
            sender.sendto(p, sock.getsockname())
        reader = mmsg.MmsgReceiver(sock, slots=64)
        first, src = reader.read(10)  # at most max_packets per call
        assert first == payloads[:10] and src == ["127.0.0.4"] * 10
        rest, _ = reader.read(1000)  # capped at the slots
        assert rest == payloads[10:]
    finally:
        sock.close()
        sender.close()


def test_datagram_longer_than_a_slot_is_counted_and_dropped():
    sock = open_udp_socket("127.0.0.1", 0, 1 << 20)
    sender = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        sizes = [100, 1024, 1025, 3000, 10, 2048]
        for i, size in enumerate(sizes):
            sender.sendto(_payload(i, size), sock.getsockname())
        reader = mmsg.MmsgReceiver(sock, slots=8, slot_bytes=1024)
        payloads, sources = reader.read(8)
        assert payloads == [_payload(0, 100), _payload(1, 1024), _payload(4, 10)]
        assert sources == ["127.0.0.1"] * 3 and reader.truncated == 3
    finally:
        sock.close()
        sender.close()


def test_errors_other_than_eagain_raise_like_socket():
    sock = open_udp_socket("127.0.0.1", 0, 1 << 20)
    reader = mmsg.MmsgReceiver(sock, slots=4)
    sock.close()  # fileno() is now -1
    with pytest.raises(OSError) as err:
        reader.read(4)
    assert err.value.errno == errno.EBADF


@pytest.mark.parametrize("connected", [False, True])
def test_send_many_matches_sendto(dual_stack, connected):
    """sendmmsg (in chunks, any number of payloads) and the sendto loop deliver the same datagrams."""
    target = ("127.0.0.1", dual_stack.getsockname()[1])
    sender = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sender.bind(("127.0.0.5", 0))
    if connected:
        sender.connect(target)
    reader = mmsg.MmsgReceiver(dual_stack, slots=256)
    payloads = [_payload(i, SIZES[i % len(SIZES)] % 9000) for i in range(150)]  # > SEND_CHUNK
    try:
        sent = mmsg.send_many(sender, payloads, None if connected else target)
        assert sent == sum(map(len, payloads))
        got, sources = _read_all(reader, len(payloads), batch=256)
        assert got == payloads and set(sources) == {"127.0.0.5"}
        assert mmsg.send_each(sender, payloads, None if connected else target) == sent
        assert _read_all(reader, len(payloads), batch=256)[0] == payloads
        repeat = mmsg.prepare(sender, payloads[:32], None if connected else target)
        assert repeat() == repeat() == sum(map(len, payloads[:32]))
        assert _read_all(reader, 64, batch=256)[0] == payloads[:32] * 2
    finally:
        sender.close()


def test_send_to_ipv6_and_by_name(dual_stack):
    port = dual_stack.getsockname()[1]
    v6 = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
    v4 = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    reader = mmsg.MmsgReceiver(dual_stack, slots=8)
    try:
        mmsg.send_many(v6, [b"six", b"6"], ("::1", port))
        mmsg.send_many(v4, [b"by name"], ("localhost", port))
        payloads, sources = _read_all(reader, 3, batch=8)
        assert payloads == [b"six", b"6", b"by name"] and sources == ["::1", "::1", "127.0.0.1"]
    finally:
        v6.close()
        v4.close()


def test_fallback_when_unavailable(monkeypatch, dual_stack):
    """Without recvmmsg/sendmmsg, send_all takes the sendto loop and the readers refuse to start."""
    monkeypatch.setattr(mmsg, "_FORCE_FALLBACK", True)
    assert not mmsg.available()
    with pytest.raises(OSError):
        mmsg.MmsgReceiver(dual_stack)
    sender = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        target = ("127.0.0.1", dual_stack.getsockname()[1])
        assert mmsg.send_all(sender, [b"a", b"bc"], target) == 3
        assert mmsg.prepare(sender, [b"d"], target)() == 1
        got = [dual_stack.recvfrom(100)[0] for _ in range(3)]
        assert got == [b"a", b"bc", b"d"]
    finally:
        sender.close()


def test_link_local_senders_keep_their_interface_like_recvfrom(dual_stack):
    """recvfrom names a link-local sender "fe80::1%lo"; the reader's address text must match."""
    reader = mmsg.MmsgReceiver(dual_stack, slots=1)
    index = socket.if_nametoindex("lo")
    key = socket.inet_pton(socket.AF_INET6, "fe80::1") + index.to_bytes(4, sys.byteorder)  # sin6_addr, scope
    expected = socket.getnameinfo(("fe80::1", 0, 0, index), socket.NI_NUMERICHOST)[0]
    assert reader._learn(key) == expected == "fe80::1%lo"
    assert reader._learn(socket.inet_pton(socket.AF_INET6, "2001:db8::7") + bytes(4)) == "2001:db8::7"
