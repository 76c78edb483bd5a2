"""Pure sFlow v5 datagram builders (a developer tool, beside the NetFlow/IPFIX encoders).

Debian packages no sFlow agent, so the generator, the decoder tests, the tshark comparison and
the decode benchmark build sFlow here. Pieces compose the way the sFlow v5 specification nests
them: frames (``frame``, ``vlan``, ``mpls``, ``vxlan``, ``gre``) go into flow records
(``header_record``, ``ipv4_record``, ``gateway_record``, ...), records into samples
(``flow_sample``, ``counter_sample``), samples into a ``datagram``. ``SflowEncoder.datagrams``
turns flow columns (the names ``ingest.encode`` reads) into datagrams of raw-packet samples.

Example::

    from ingest.tools.encode_sflow import SflowEncoder
    datagrams = SflowEncoder("192.0.2.1", sampling_rate=1000).datagrams(flows)
"""

from __future__ import annotations

import ipaddress
import struct
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from ingest.tools.capture import ethernet_frame
from ingest.tools.encode import flow_columns

MAC_A, MAC_B = b"\x02\x00\x00\x00\x00\x02", b"\x02\x00\x00\x00\x00\x01"


def _u32(*values: int) -> bytes:
    return struct.pack(f"!{len(values)}I", *values)


def _opaque(data: bytes) -> bytes:
    """XDR variable-length opaque: length, data, zero padding to 4 bytes."""
    return _u32(len(data)) + data + b"\x00" * (-len(data) % 4)


def _address(addr: str | bytes) -> bytes:
    """An sFlow address: type 1 + 4 bytes, or type 2 + 16 bytes."""
    packed = ipaddress.ip_address(addr).packed if isinstance(addr, str) else addr
    if len(packed) == 16 and packed[:12] == b"\x00" * 10 + b"\xff\xff":
        packed = packed[12:]  # IPv4-mapped: the IPv4 address
    return _u32(1 if len(packed) == 4 else 2) + packed


# --- frames ------------------------------------------------------------------------------------
def frame(src: str, dst: str, protocol: int = 6, src_port: int = 40000, dst_port: int = 443,
          payload_len: int = 200, tcp_flags: int = 0x18, payload: bytes | None = None) -> bytes:  # fmt: skip
    """An Ethernet + IPv4/IPv6 + TCP/UDP frame between text addresses."""
    s, d = ipaddress.ip_address(src).packed, ipaddress.ip_address(dst).packed
    return ethernet_frame(s, d, protocol, src_port, dst_port, payload_len, tcp_flags, payload)


def ip_packet(eth_frame: bytes) -> bytes:
    """The IP packet inside an untagged Ethernet frame."""
    return eth_frame[14:]


def icmp_frame(src: str, dst: str, icmp_type: int, code: int) -> bytes:
    """An echo-style ICMP (IPv4) or ICMPv6 message of 8 bytes plus 32 of payload."""
    v6 = ipaddress.ip_address(src).version == 6
    body = struct.pack("!BBHI", icmp_type, code, 0, 0) + bytes(32)
    eth = frame(src, dst, 58 if v6 else 1, 0, 0, 0, payload=body)
    return eth


def vlan(eth_frame: bytes, *tags: int, outer_tpid: int = 0x88A8) -> bytes:
    """Insert 802.1Q tags (one) or QinQ (two: outer ``outer_tpid``, inner 0x8100)."""
    inserted = b""
    for i, tag in enumerate(tags):
        tpid = outer_tpid if len(tags) > 1 and i == 0 else 0x8100
        inserted += struct.pack("!HH", tpid, tag)
    return eth_frame[:12] + inserted + eth_frame[12:]


def mpls(payload: bytes, labels: Sequence[int], control_word: bool = False) -> bytes:
    """An Ethernet frame carrying MPLS labels (the last one bottom of stack) over ``payload``
    (an IP packet, or an Ethernet frame behind a pseudowire control word)."""
    stack = b"".join(
        struct.pack("!I", (label << 12) | (int(i == len(labels) - 1) << 8) | 64) for i, label in enumerate(labels)
    )
    return MAC_A + MAC_B + struct.pack("!H", 0x8847) + stack + (bytes(4) if control_word else b"") + payload


def vxlan(outer_src: str, outer_dst: str, inner: bytes, vni: int = 100) -> bytes:
    """``inner`` (an Ethernet frame) in VXLAN over UDP 4789."""
    header = struct.pack("!II", 0x08000000, vni << 8)
    return frame(outer_src, outer_dst, 17, 49152, 4789, 0, payload=header + inner)


def gre(outer_src: str, outer_dst: str, inner_ip: bytes, key: int | None = None) -> bytes:
    """``inner_ip`` (an IPv4/IPv6 packet) in GRE, with an optional key."""
    ethertype = 0x0800 if inner_ip[0] >> 4 == 4 else 0x86DD
    header = struct.pack("!HH", 0x2000 if key is not None else 0, ethertype)
    if key is not None:
        header += _u32(key)
    return frame(outer_src, outer_dst, 47, 0, 0, 0, payload=header + inner_ip)


# --- flow records ------------------------------------------------------------------------------
def _record(fmt: int, body: bytes) -> bytes:
    return _u32(fmt, len(body)) + body


def header_record(packet: bytes, header_len: int = 128, protocol: int = 1, frame_length: int | None = None) -> bytes:
    """Raw packet header (record 1): the first ``header_len`` bytes of ``packet``.
    ``protocol``: 1 Ethernet, 11 IPv4, 12 IPv6, 13 MPLS."""
    length = len(packet) + 4 if frame_length is None else frame_length  # + the FCS, as agents count
    head = packet[:header_len]
    return _record(1, _u32(protocol, length, 4) + _opaque(head))


def ipv4_record(src: str, dst: str, length: int, protocol: int, src_port: int, dst_port: int,
                tcp_flags: int = 0, tos: int = 0) -> bytes:  # fmt: skip
    """Sampled IPv4 (record 3)."""
    s, d = ipaddress.IPv4Address(src).packed, ipaddress.IPv4Address(dst).packed
    return _record(3, _u32(length, protocol) + s + d + _u32(src_port, dst_port, tcp_flags, tos))


def ipv6_record(src: str, dst: str, length: int, protocol: int, src_port: int, dst_port: int,
                tcp_flags: int = 0, priority: int = 0) -> bytes:  # fmt: skip
    """Sampled IPv6 (record 4)."""
    s, d = ipaddress.IPv6Address(src).packed, ipaddress.IPv6Address(dst).packed
    return _record(4, _u32(length, protocol) + s + d + _u32(src_port, dst_port, tcp_flags, priority))


def switch_record(src_vlan: int, dst_vlan: int, src_priority: int = 0, dst_priority: int = 0) -> bytes:
    """Extended switch (record 1001)."""
    return _record(1001, _u32(src_vlan, src_priority, dst_vlan, dst_priority))


def router_record(next_hop: str, src_mask: int, dst_mask: int) -> bytes:
    """Extended router (record 1002)."""
    return _record(1002, _address(next_hop) + _u32(src_mask, dst_mask))


AS_SET, AS_SEQUENCE = 1, 2  # AS path segment types


def gateway_record(next_hop: str, router_as: int, src_as: int, peer_as: int, as_path: Sequence[int] = (),
                   communities: Sequence[int] = (), local_pref: int = 100,
                   segments: Sequence[tuple[int, Sequence[int]]] | None = None) -> bytes:  # fmt: skip
    """Extended gateway (record 1003): one AS_SEQUENCE segment holding ``as_path``, or the
    ``(segment type, AS numbers)`` ``segments`` given."""
    if segments is None:
        segments = [(AS_SEQUENCE, as_path)] if as_path else []
    body = _address(next_hop) + _u32(router_as, src_as, peer_as, len(segments))
    body += b"".join(_u32(kind, len(path), *path) for kind, path in segments)
    body += _u32(len(communities), *communities) + _u32(local_pref)
    return _record(1003, body)


# --- samples and datagrams ------------------------------------------------------------------------
def flow_sample(records: Sequence[bytes], rate: int, pool: int = 0, input_if: int = 1, output_if: int = 2,
                seq: int = 1, source: int = 1, expanded: bool = False, drops: int = 0) -> bytes:  # fmt: skip
    """A flow sample (format 1) or expanded flow sample (format 3) of ``records``."""
    if expanded:
        body = _u32(seq, 0, source, rate, pool, drops, 0, input_if, 0, output_if, len(records))
    else:
        body = _u32(seq, source, rate, pool, drops, input_if, output_if, len(records))
    return _record(3 if expanded else 1, body + b"".join(records))


def interface_counters(if_index: int, values: Mapping[str, int] | None = None) -> bytes:
    """Generic interface counters (counter record 1); missing values are 0."""
    v = dict(values or {})
    body = _u32(if_index, v.get("if_type", 6)) + struct.pack("!Q", v.get("if_speed", 10**9))
    body += _u32(v.get("if_direction", 1), v.get("if_status", 3)) + struct.pack("!Q", v.get("in_octets", 0))
    body += _u32(*(v.get(name, 0) for name in ("in_unicast_packets", "in_multicast_packets",
                                               "in_broadcast_packets", "in_discards", "in_errors",
                                               "in_unknown_protocols")))  # fmt: skip
    body += struct.pack("!Q", v.get("out_octets", 0))
    body += _u32(*(v.get(name, 0) for name in ("out_unicast_packets", "out_multicast_packets",
                                               "out_broadcast_packets", "out_discards", "out_errors",
                                               "promiscuous")))  # fmt: skip
    return _record(1, body)


def counter_sample(records: Sequence[bytes], source: int = 1, seq: int = 1, expanded: bool = False) -> bytes:
    """A counter sample (format 2) or expanded counter sample (format 4)."""
    head = _u32(seq, 0, source, len(records)) if expanded else _u32(seq, source, len(records))
    return _record(4 if expanded else 2, head + b"".join(records))


def datagram(
    agent: str, samples: Sequence[bytes], sub_agent: int = 0, seq: int = 1, uptime_ms: int = 3_600_000
) -> bytes:
    """An sFlow v5 datagram."""
    return _u32(5) + _address(agent) + _u32(sub_agent, seq, uptime_ms, len(samples)) + b"".join(samples)


# --- examples -----------------------------------------------------------------------------------
def _ipv6_with_extensions() -> bytes:
    """Ethernet + IPv6 + hop-by-hop + fragment (first fragment) + TCP."""
    eth = frame("2001:db8::10", "2001:db8::20", 6, 33000, 22, 64, 0x10)
    ip, tcp = eth[14:54], eth[54:]
    hop_by_hop = struct.pack("!BB6s", 44, 0, bytes(6))
    fragment = struct.pack("!BBHI", 6, 0, 0x0001, 7)  # offset 0, more fragments
    payload_length = len(hop_by_hop) + len(fragment) + len(tcp)
    ip = ip[:4] + struct.pack("!HB", payload_length, 0) + ip[7:]
    return eth[:14] + ip + hop_by_hop + fragment + tcp


def example_packets() -> list[bytes]:
    """Sampled Ethernet frames of every kind the header parser reads (whole packets inside 128
    bytes where a tunnel is involved: tshark dissects no tunnel payload cut short)."""
    return [
        frame("10.0.0.1", "10.0.0.2", 6, 43210, 443, 1000, 0x18),
        frame("2001:db8::1", "2001:db8::2", 17, 5353, 53, 300),
        vlan(frame("10.1.0.1", "10.1.0.2", 17, 40000, 4789 + 1, 50), 100, 200),
        mpls(ip_packet(frame("10.2.0.1", "10.2.0.2", 6, 2222, 80, 500)), [16, 17]),
        mpls(frame("10.20.0.1", "10.20.0.2", 6, 1111, 8443, 200), [3000, 4000], control_word=True),  # EVPN
        _ipv6_with_extensions(),
        icmp_frame("10.3.0.1", "10.3.0.2", 8, 0),
        icmp_frame("2001:db8::3", "2001:db8::4", 128, 0),
        vxlan("192.168.1.1", "192.168.1.2", frame("10.4.0.1", "10.4.0.2", 6, 3333, 9000, 0)),
        gre("192.168.2.1", "192.168.2.2", ip_packet(frame("10.5.0.1", "10.5.0.2", 17, 4444, 161, 20))),
    ]


def example_flow_samples() -> list[bytes]:
    """Flow samples of every kind the decoder reads, one flow each (test captures and fuzz seeds)."""
    tcp4, udp6, qinq, labels, evpn, ipv6_ext, icmp4, icmp6, vxlan_frame, gre_frame = example_packets()
    return [
        flow_sample([header_record(tcp4), switch_record(10, 20)], 1000, 5000, 3, 4),
        flow_sample([header_record(udp6, 96)], 2048, 9000, 5, 6, seq=2, expanded=True),
        flow_sample([header_record(qinq)], 512),
        flow_sample([header_record(labels)], 100),
        flow_sample([header_record(evpn)], 100, input_if=7, output_if=0x3FFFFFFF),
        flow_sample([header_record(ipv6_ext)], 10),
        flow_sample([header_record(icmp4)], 10),
        flow_sample([header_record(icmp6)], 10),
        flow_sample([header_record(vxlan_frame)], 64),
        flow_sample([header_record(gre_frame)], 64),
        flow_sample([ipv4_record("198.51.100.1", "198.51.100.2", 1500, 6, 50000, 25, 0x02),
                     router_record("198.51.100.254", 24, 16),
                     gateway_record("198.51.100.253", 64500, 64501, 64502, [64510, 64511, 64512], [0xFDE80001])], 400),
        flow_sample([ipv6_record("2001:db8::5", "2001:db8::6", 700, 17, 123, 123)], 400, expanded=True),
        # cut inside the TCP header: truncated (no flags), still a flow
        flow_sample([header_record(frame("10.0.9.1", "10.0.9.2", 6, 4321, 80, 1000), 40)], 1000),
    ]  # fmt: skip


def example_datagrams() -> list[bytes]:
    """Three datagrams holding ``example_flow_samples`` and counter samples (IPv4 and IPv6 agents)."""
    samples = example_flow_samples()
    counters = [
        counter_sample([interface_counters(3, {"in_octets": 123456, "out_octets": 654321, "in_errors": 2})]),
        counter_sample([interface_counters(4, {"in_unicast_packets": 99})], source=4, expanded=True),
    ]
    return [
        datagram("192.0.2.1", samples[:5], sub_agent=1, seq=1),
        datagram("192.0.2.1", samples[5:9] + counters[:1], sub_agent=1, seq=2),
        datagram("2001:db8::99", samples[9:] + counters[1:], sub_agent=7, seq=1),
    ]


class SflowEncoder:
    """Flow columns -> datagrams of raw-packet flow samples (one sample per flow).

    Each flow becomes one sampled Ethernet/IP/TCP-or-UDP packet whose IP length is the flow's
    mean packet size (``bytes / packets``, 40 to 1500), standing for ``sampling_rate`` packets.
    With ``gateway``, each sample also carries an extended gateway record, as a router exporting
    BGP data sends: the flow's ``src_as``, a path ``[64512, dst_as]``, one community."""

    def __init__(self, agent: str, sampling_rate: int = 1, sub_agent: int = 0, header_len: int = 128,
                 max_payload: int = 1400, gateway: bool = False) -> None:  # fmt: skip
        self.agent, self.rate, self.sub_agent = agent, sampling_rate, sub_agent
        self.header_len, self.max_payload, self.gateway = header_len, max_payload, gateway
        self.seq = 0
        self.sample_seq = 0

    def datagrams(self, flows: Any) -> list[bytes]:
        cols = flow_columns(flows)
        n = len(cols["src_addr"])
        self._lengths = _ip_lengths(cols)
        out: list[bytes] = []
        samples: list[bytes] = []
        size = 0
        for i in range(n):
            sample = self._sample(cols, i)
            if samples and size + len(sample) > self.max_payload - 40:
                out.append(self._datagram(samples))
                samples, size = [], 0
            samples.append(sample)
            size += len(sample)
        if samples:
            out.append(self._datagram(samples))
        return out

    def as_decoded(self, flows: Any) -> dict[str, np.ndarray]:
        """``bytes`` and ``packets`` a collector reads from what ``datagrams`` sends for ``flows``:
        one sampled packet of the mean size, times the rate (the generator's ground truth)."""
        cols = flow_columns(flows)
        return {"bytes": _ip_lengths(cols) * self.rate, "packets": np.full(len(cols["src_addr"]), self.rate)}

    def _sample(self, cols: Mapping[str, np.ndarray], i: int) -> bytes:
        src, dst = bytes(cols["src_addr"][i]), bytes(cols["dst_addr"][i])
        if src[:12] == dst[:12] == b"\x00" * 10 + b"\xff\xff":
            src, dst = src[12:], dst[12:]
        ip_len = int(self._lengths[i])
        protocol = int(_get(cols, "protocol", i, 6))
        header = {6: 40 if len(src) == 4 else 60, 17: 28 if len(src) == 4 else 48}.get(
            protocol, 20 if len(src) == 4 else 40
        )
        eth = ethernet_frame(src, dst, protocol, int(_get(cols, "src_port", i, 0)), int(_get(cols, "dst_port", i, 0)),
                             max(ip_len - header, 0), int(_get(cols, "tcp_flags", i, 0)) & 0xFF)  # fmt: skip
        self.sample_seq += 1
        records = [header_record(eth, self.header_len)]
        if self.gateway:
            dst_as = int(_get(cols, "dst_as", i, 64513))
            records.append(gateway_record("192.0.2.254", 65000, int(_get(cols, "src_as", i, 64500)), 64512,
                                          [64512, dst_as], [65000 << 16 | 100]))  # fmt: skip
        return flow_sample(records, self.rate, self.sample_seq * self.rate, int(_get(cols, "input_if", i, 1)),
                           int(_get(cols, "output_if", i, 2)), seq=self.sample_seq)  # fmt: skip

    def _datagram(self, samples: list[bytes]) -> bytes:
        self.seq += 1
        return datagram(self.agent, samples, self.sub_agent, self.seq)


def _ip_lengths(cols: Mapping[str, np.ndarray]) -> np.ndarray:
    """Per flow, the IP length of its sampled packet: the mean packet size, 40 (IPv4) or 60 (IPv6)
    to 1500 bytes."""
    n = len(cols["src_addr"])
    v4 = (np.asarray(cols["src_addr"])[:, :12] == np.frombuffer(b"\x00" * 10 + b"\xff\xff", np.uint8)).all(axis=1)
    packets = np.maximum(np.asarray(cols.get("packets", np.ones(n)), np.int64), 1)
    mean = np.asarray(cols.get("bytes", np.full(n, 40)), np.int64) // packets
    return np.minimum(np.maximum(mean, np.where(v4, 40, 60)), 1500)


def _get(cols: Mapping[str, np.ndarray], name: str, i: int, default: int) -> int:
    values = cols.get(name)
    return default if values is None else int(values[i])
