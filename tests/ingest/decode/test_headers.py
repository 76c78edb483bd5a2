"""The packet-header parser (``ingest.decode.headers``): every layer, tunnels both ways, truncation."""

from __future__ import annotations

import ipaddress
import struct

import numpy as np
import pytest

from ingest.decode import headers
from ingest.tools.encode_sflow import frame, gre, icmp_frame, ip_packet, mpls, vlan, vxlan


def _parse(packets: list[bytes], start: int = headers.ETHERNET, tunnel: str = "inner", **kw) -> headers.Headers:
    frames, lengths = headers.frames_matrix(packets)
    return headers.parse(frames, lengths, start, tunnel, **kw)


def _addr(value: np.void) -> str:
    ip = ipaddress.IPv6Address(value.tobytes())
    return str(ip.ipv4_mapped or ip)


def _row(parsed: headers.Headers, i: int = 0) -> dict:
    return {
        "src": _addr(parsed.src[i]), "dst": _addr(parsed.dst[i]), "protocol": int(parsed.protocol[i]),
        "ports": (int(parsed.src_port[i]), int(parsed.dst_port[i])), "flags": int(parsed.tcp_flags[i]),
        "ip_length": int(parsed.ip_length[i]), "ip": bool(parsed.is_ip[i]), "truncated": bool(parsed.truncated[i]),
    }  # fmt: skip


TCP4 = frame("10.0.0.1", "10.0.0.2", 6, 40000, 443, 100, 0x12)
UDP6 = frame("2001:db8::1", "2001:db8::2", 17, 5353, 53, 30)
EXPECT_TCP4 = {"src": "10.0.0.1", "dst": "10.0.0.2", "protocol": 6, "ports": (40000, 443), "flags": 0x12,
               "ip_length": 140, "ip": True, "truncated": False}  # fmt: skip
EXPECT_UDP6 = {"src": "2001:db8::1", "dst": "2001:db8::2", "protocol": 17, "ports": (5353, 53), "flags": 0,
               "ip_length": 78, "ip": True, "truncated": False}  # fmt: skip


@pytest.mark.parametrize(
    ("packet", "expected"),
    [
        (TCP4, EXPECT_TCP4),
        (UDP6, EXPECT_UDP6),
        (vlan(TCP4, 10), EXPECT_TCP4),  # 802.1Q
        (vlan(UDP6, 100, 200), EXPECT_UDP6),  # QinQ
        (vlan(TCP4, 100, 200, outer_tpid=0x9100), EXPECT_TCP4),
        (mpls(ip_packet(TCP4), [16]), EXPECT_TCP4),
        (mpls(ip_packet(UDP6), [16, 17, 18]), EXPECT_UDP6),  # a stack: read to the bottom-of-stack bit
        (mpls(TCP4, [3000, 4000], control_word=True), EXPECT_TCP4),  # EVPN: control word, inner Ethernet
        (vxlan("192.168.0.1", "192.168.0.2", TCP4), EXPECT_TCP4),  # the inner packet by default
        (gre("192.168.0.1", "192.168.0.2", ip_packet(UDP6)), EXPECT_UDP6),
        (gre("192.168.0.1", "192.168.0.2", ip_packet(TCP4), key=7), EXPECT_TCP4),
    ],
)
def test_layers(packet: bytes, expected: dict) -> None:
    assert _row(_parse([packet])) == expected


def test_a_batch_mixes_layers_row_by_row() -> None:
    """One call, rows of different shapes: each row gets its own answer (no row leaks into another)."""
    packets = [TCP4, vlan(UDP6, 5), mpls(ip_packet(TCP4), [1, 2]), vxlan("192.168.0.1", "192.168.0.2", UDP6)] * 3
    parsed = _parse(packets)
    for i, expected in enumerate([EXPECT_TCP4, EXPECT_UDP6, EXPECT_TCP4, EXPECT_UDP6] * 3):
        assert _row(parsed, i) == expected


def test_outer_tunnel_choice() -> None:
    outer = _parse([vxlan("192.168.0.1", "192.168.0.2", TCP4), gre("192.168.1.1", "192.168.1.2", ip_packet(UDP6))],
                   tunnel="outer")  # fmt: skip
    assert _row(outer, 0) | {"ip_length": 0} == {
        "src": "192.168.0.1", "dst": "192.168.0.2", "protocol": 17, "ports": (49152, 4789), "flags": 0,
        "ip_length": 0, "ip": True, "truncated": False,
    }  # fmt: skip
    assert int(outer.ip_length[0]) == 20 + 8 + 8 + len(TCP4)
    assert _row(outer, 1)["src"] == "192.168.1.1" and _row(outer, 1)["protocol"] == 47


def test_icmp_type_and_code() -> None:
    parsed = _parse([icmp_frame("10.0.0.1", "10.0.0.2", 3, 13), icmp_frame("2001:db8::1", "2001:db8::2", 128, 0)])
    assert (_row(parsed, 0)["protocol"], _row(parsed, 0)["ports"]) == (1, (0, 3 * 256 + 13))
    assert (_row(parsed, 1)["protocol"], _row(parsed, 1)["ports"]) == (58, (0, 128 * 256))


def test_ipv6_extension_headers_and_fragments() -> None:
    eth = frame("2001:db8::1", "2001:db8::2", 6, 1000, 2000, 20, 0x02)
    ip, tcp = eth[14:54], eth[54:]

    def with_ext(ext: bytes, first_next: int, payload: bytes) -> bytes:
        header = ip[:4] + struct.pack("!HB", len(ext) + len(payload), first_next) + ip[7:]
        return eth[:14] + header + ext + payload

    hop_dst = struct.pack("!BB6s", 60, 0, bytes(6)) + struct.pack("!BB14s", 6, 1, bytes(14))  # hop-by-hop, dest opts
    first_fragment = struct.pack("!BBHI", 6, 0, 0x0001, 1)
    later_fragment = struct.pack("!BBHI", 6, 0, (100 << 3), 1)
    parsed = _parse([with_ext(hop_dst, 0, tcp), with_ext(first_fragment, 44, tcp), with_ext(later_fragment, 44, tcp)])
    for i in (0, 1):
        assert _row(parsed, i)["ports"] == (1000, 2000) and _row(parsed, i)["flags"] == 0x02
        assert _row(parsed, i)["protocol"] == 6
    assert _row(parsed, 0)["ip_length"] == 40 + len(hop_dst) + len(tcp)
    assert _row(parsed, 2)["ports"] == (0, 0)  # a later fragment has no transport header
    assert not parsed.truncated.any()


def test_ipv4_later_fragment_has_no_ports() -> None:
    packet = bytearray(TCP4)
    packet[14 + 6 : 14 + 8] = struct.pack("!H", 185)  # fragment offset 185 * 8
    assert _row(_parse([bytes(packet)]))["ports"] == (0, 0)


@pytest.mark.parametrize(
    ("cut", "what"),
    [(10, "ethernet"), (14 + 10, "ip"), (14 + 20 + 2, "ports"), (14 + 20 + 10, "flags")],
)
def test_truncation_gives_what_it_can_and_is_flagged(cut: int, what: str) -> None:
    row = _row(_parse([TCP4[:cut]]))
    assert row["truncated"]
    assert row["ip"] == (what in ("ports", "flags"))
    if what == "flags":
        assert row["ports"] == (40000, 443) and row["flags"] == 0 and row["ip_length"] == 140
    if what == "ports":
        assert row["ports"] == (0, 0) and row["src"] == "10.0.0.1"


def test_starts_at_ip_or_transport() -> None:
    ip4, ip6 = ip_packet(TCP4), ip_packet(UDP6)
    parsed = _parse([ip4, ip6], headers.IP_ANY)
    assert _row(parsed, 0) == EXPECT_TCP4 and _row(parsed, 1) == EXPECT_UDP6
    assert _row(_parse([ip4], headers.IPV4)) == EXPECT_TCP4
    assert _row(_parse([ip4], headers.IPV6))["ip"] is False  # not what it claims: no flow fields
    transport = _parse([ip4[20:]], headers.TRANSPORT, protocol=np.array([6]))
    assert _row(transport)["ports"] == (40000, 443) and not transport.is_ip[0]


def test_not_ip_and_garbage() -> None:
    arp = b"\xff" * 6 + b"\x02" * 6 + b"\x08\x06" + bytes(28)
    rng = np.random.default_rng(3)
    noise = [rng.integers(0, 256, int(n), np.uint8).tobytes() for n in rng.integers(0, 200, 500)]
    parsed = _parse([arp, *noise])
    assert not parsed.is_ip[0]
    assert len(parsed.src) == 501  # every row answered, nothing raised


def test_bad_arguments_are_refused() -> None:
    with pytest.raises(ValueError):
        headers.parse(np.zeros((1, 10), np.uint8), np.array([10]))
    with pytest.raises(ValueError):
        headers.parse(np.zeros((1, 100), np.uint8), np.array([10]), tunnel="middle")
