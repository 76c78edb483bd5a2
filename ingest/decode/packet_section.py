"""RFC 7133 packet sections (IE 315 ``dataLinkFrameSection``): headers of one sampled packet.

Exporters such as Juniper inline monitoring send the first bytes of each sampled frame instead
of flow fields. This parses Ethernet, up to two 802.1Q/802.1ad tags, IPv4 or IPv6 and the
TCP/UDP ports and TCP flags. A section cut short keeps what could be read; a section that is not
IP yields ``None``. Records are rare next to ordinary flows, so this is a per-record function.
"""

from __future__ import annotations

import struct
from typing import NamedTuple

from ingest.addresses import V4_PREFIX

_VLAN_TYPES = (0x8100, 0x88A8, 0x9100)


class SectionHeaders(NamedTuple):
    src: bytes  # 16 bytes (IPv4-mapped for IPv4)
    dst: bytes
    protocol: int
    src_port: int
    dst_port: int
    tcp_flags: int
    ip_length: int  # the IP header's total length: the packet's size on the wire above layer 2


def parse_frame(frame: bytes) -> SectionHeaders | None:
    """Parse an Ethernet frame's headers, or ``None`` when it holds no IPv4/IPv6 header."""
    if len(frame) < 14:
        return None
    (ethertype,) = struct.unpack_from("!H", frame, 12)
    pos = 14
    for _ in range(2):
        if ethertype not in _VLAN_TYPES or len(frame) < pos + 4:
            break
        (ethertype,) = struct.unpack_from("!H", frame, pos + 2)
        pos += 4
    if ethertype == 0x0800:
        return _ipv4(frame, pos)
    if ethertype == 0x86DD:
        return _ipv6(frame, pos)
    return None


def _ipv4(frame: bytes, pos: int) -> SectionHeaders | None:
    if len(frame) < pos + 20 or frame[pos] >> 4 != 4:
        return None
    ihl = (frame[pos] & 0x0F) * 4
    (total,) = struct.unpack_from("!H", frame, pos + 2)
    (frag,) = struct.unpack_from("!H", frame, pos + 6)
    protocol = frame[pos + 9]
    src, dst = V4_PREFIX + frame[pos + 12 : pos + 16], V4_PREFIX + frame[pos + 16 : pos + 20]
    first_fragment = frag & 0x1FFF == 0  # later fragments carry no transport header
    return _transport(frame, pos + ihl if first_fragment else len(frame), src, dst, protocol, total)


def _ipv6(frame: bytes, pos: int) -> SectionHeaders | None:
    if len(frame) < pos + 40 or frame[pos] >> 4 != 6:
        return None
    (payload,) = struct.unpack_from("!H", frame, pos + 4)
    protocol = frame[pos + 6]
    src, dst = frame[pos + 8 : pos + 24], frame[pos + 24 : pos + 40]
    pos += 40
    for _ in range(4):  # hop-by-hop, routing, destination options: skip to the transport header
        if protocol not in (0, 43, 60) or len(frame) < pos + 2:
            break
        protocol, length = frame[pos], (frame[pos + 1] + 1) * 8
        pos += length
    return _transport(frame, pos, src, dst, protocol, payload + 40)


def _transport(frame: bytes, pos: int, src: bytes, dst: bytes, protocol: int, ip_length: int) -> SectionHeaders:
    src_port = dst_port = flags = 0
    if protocol in (6, 17, 132) and len(frame) >= pos + 4:
        src_port, dst_port = struct.unpack_from("!HH", frame, pos)
        if protocol == 6 and len(frame) >= pos + 14:
            flags = frame[pos + 13]
    return SectionHeaders(src, dst, protocol, src_port, dst_port, flags, ip_length)
