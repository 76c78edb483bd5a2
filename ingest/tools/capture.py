"""pcap / pcapng reading (UDP datagrams with their IP source) and a small pcap writer.

``read_udp(path)`` yields every UDP datagram of a capture as ``Datagram(time_us, src, src_port,
dst_port, payload)`` with ``src`` as a 16-byte address (IPv4-mapped for IPv4): the exporter of a
NetFlow packet is the IP source of its datagram. Link types: Ethernet (with 802.1Q tags), raw
IP, Linux cooked (SLL, SLL2) and BSD loopback. Non-first IPv4 fragments and anything that is not
UDP are skipped and counted in ``CaptureStats``.

``write_pcap`` and ``ethernet_frame`` build captures for tests (softflowd replays them).
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, NamedTuple

from ingest.addresses import V4_PREFIX

PCAP_MAGICS = {
    b"\xd4\xc3\xb2\xa1": ("<", 1_000),  # little-endian, microseconds (factor to ns)
    b"\xa1\xb2\xc3\xd4": (">", 1_000),
    b"\x4d\x3c\xb2\xa1": ("<", 1),  # nanoseconds
    b"\xa1\xb2\x3c\x4d": (">", 1),
}
PCAPNG_SHB = b"\x0a\x0d\x0d\x0a"
LINK_NULL, LINK_ETHERNET, LINK_RAW, LINK_SLL, LINK_RAW4, LINK_RAW6, LINK_SLL2 = 0, 1, 101, 113, 228, 229, 276


class CaptureError(ValueError):
    """The file is not a pcap/pcapng capture this reader understands."""


class Datagram(NamedTuple):
    time_us: int
    src: bytes  # 16 bytes
    src_port: int
    dst_port: int
    payload: bytes


@dataclass
class CaptureStats:
    frames: int = 0
    udp: int = 0
    skipped: int = 0  # not IP/UDP, later fragments, truncated


def read_udp(path: str | Path, stats: CaptureStats | None = None) -> Iterator[Datagram]:
    """Every UDP datagram in a pcap or pcapng file, in file order."""
    stats = stats if stats is not None else CaptureStats()
    with open(path, "rb") as fh:
        magic = fh.read(4)
        fh.seek(0)
        if magic in PCAP_MAGICS:
            frames = _pcap_frames(fh)
        elif magic == PCAPNG_SHB:
            frames = _pcapng_frames(fh)
        else:
            raise CaptureError(f"{path}: not a pcap or pcapng file (magic {magic.hex()}); pass raw payloads as .dat")
        for time_us, link, frame in frames:
            stats.frames += 1
            datagram = _udp(link, frame, time_us)
            if datagram is None:
                stats.skipped += 1
                continue
            stats.udp += 1
            yield datagram


def _pcap_frames(fh: BinaryIO) -> Iterator[tuple[int, int, bytes]]:
    header = fh.read(24)
    if len(header) < 24:
        raise CaptureError("pcap file shorter than its 24-byte header")
    endian, ns_factor = PCAP_MAGICS[header[:4]]
    link = struct.unpack(endian + "I", header[20:24])[0] & 0x0FFFFFFF
    record = struct.Struct(endian + "IIII")
    while len(head := fh.read(16)) == 16:
        secs, frac, caplen, _ = record.unpack(head)
        data = fh.read(caplen)
        if len(data) < caplen:
            return  # truncated last frame: stop quietly, as tcpdump does
        yield secs * 1_000_000 + frac * ns_factor // 1000, link, data


def _pcapng_frames(fh: BinaryIO) -> Iterator[tuple[int, int, bytes]]:
    endian = "<"
    links: list[tuple[int, int]] = []  # (link type, ticks per second) per interface
    while len(head := fh.read(8)) == 8:
        block_type = struct.unpack(endian + "I", head[:4])[0]
        if head[:4] == PCAPNG_SHB:
            bom = fh.read(4)
            endian = "<" if bom == b"\x4d\x3c\x2b\x1a" else ">"
            length = struct.unpack(endian + "I", head[4:8])[0]
            fh.read(length - 12)
            links = []
            continue
        length = struct.unpack(endian + "I", head[4:8])[0]
        if length < 12:
            raise CaptureError(f"pcapng block of length {length} (corrupt file)")
        body = fh.read(length - 8)
        if block_type == 1:  # interface description
            link = struct.unpack(endian + "H", body[:2])[0]
            links.append((link, _tsresol(body[8:-4], endian)))
        elif block_type == 6 and len(body) >= 20:  # enhanced packet
            iface, high, low, caplen = struct.unpack(endian + "IIII", body[:16])
            if iface < len(links):
                link, ticks = links[iface]
                yield ((high << 32) | low) * 1_000_000 // ticks, link, body[20 : 20 + caplen]
        elif block_type == 3 and links:  # simple packet: no timestamp
            yield 0, links[0][0], body[4:-4]


def _tsresol(options: bytes, endian: str) -> int:
    pos = 0
    while pos + 4 <= len(options):
        code, length = struct.unpack(endian + "HH", options[pos : pos + 4])
        if code == 0:
            break
        if code == 9 and length >= 1:
            value = options[pos + 4]
            return 2 ** (value & 0x7F) if value & 0x80 else 10**value
        pos += 4 + length + (-length % 4)
    return 1_000_000


def _udp(link: int, frame: bytes, time_us: int) -> Datagram | None:
    ip = _ip_start(link, frame)
    if ip is None or ip >= len(frame):
        return None
    version = frame[ip] >> 4
    if version == 4 and len(frame) >= ip + 20:
        ihl = (frame[ip] & 0x0F) * 4
        (frag,) = struct.unpack_from("!H", frame, ip + 6)
        if frame[ip + 9] != 17 or frag & 0x1FFF or frag & 0x2000:
            return None  # not UDP, or a fragment (reassembly is out of scope)
        src, udp = V4_PREFIX + frame[ip + 12 : ip + 16], ip + ihl
    elif version == 6 and len(frame) >= ip + 40:
        if frame[ip + 6] != 17:
            return None
        src, udp = frame[ip + 8 : ip + 24], ip + 40
    else:
        return None
    if len(frame) < udp + 8:
        return None
    sport, dport, length = struct.unpack_from("!HHH", frame, udp)
    payload = frame[udp + 8 : udp + max(length, 8)]
    return Datagram(time_us, src, sport, dport, payload)


def _ip_start(link: int, frame: bytes) -> int | None:
    if link == LINK_ETHERNET:
        if len(frame) < 14:
            return None
        pos, (ethertype,) = 14, struct.unpack_from("!H", frame, 12)
        while ethertype in (0x8100, 0x88A8) and len(frame) >= pos + 4:
            (ethertype,) = struct.unpack_from("!H", frame, pos + 2)
            pos += 4
        return pos if ethertype in (0x0800, 0x86DD) else None
    if link in (LINK_RAW, LINK_RAW4, LINK_RAW6):
        return 0
    if link == LINK_SLL:
        return 16
    if link == LINK_SLL2:
        return 20
    if link == LINK_NULL:
        return 4
    return None


# --- writing (tests) ---------------------------------------------------------------------------
def ethernet_frame(
    src: bytes,
    dst: bytes,
    protocol: int,
    src_port: int,
    dst_port: int,
    payload_len: int,
    tcp_flags: int = 0x18,
    payload: bytes | None = None,
) -> bytes:
    """An Ethernet + IPv4/IPv6 + TCP/UDP frame (4- or 16-byte addresses); the payload is
    ``payload`` or ``payload_len`` zero bytes."""
    payload = b"\x00" * payload_len if payload is None else payload
    if protocol == 6:
        transport = struct.pack("!HHIIBBHHH", src_port, dst_port, 1, 0, 5 << 4, tcp_flags, 65535, 0, 0)
    elif protocol == 17:
        transport = struct.pack("!HHHH", src_port, dst_port, 8 + len(payload), 0)
    else:
        transport = b""
    body = transport + payload
    if len(src) == 4:
        ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(body), 0, 0, 64, protocol, 0, src, dst)
        ip = ip[:10] + struct.pack("!H", _checksum(ip)) + ip[12:]
        ethertype = 0x0800
    else:
        ip = struct.pack("!IHBB16s16s", 6 << 28, len(body), protocol, 64, src, dst)
        ethertype = 0x86DD
    return b"\x02\x00\x00\x00\x00\x02" + b"\x02\x00\x00\x00\x00\x01" + struct.pack("!H", ethertype) + ip + body


def _checksum(header: bytes) -> int:
    total = sum(struct.unpack(f"!{len(header) // 2}H", header))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def write_pcap(path: str | Path, frames: Iterable[tuple[int, bytes]], link: int = LINK_ETHERNET) -> int:
    """Write ``(time_us, frame)`` pairs as a classic microsecond pcap; returns the frame count."""
    count = 0
    with open(path, "wb") as fh:
        fh.write(struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, link))
        for time_us, frame in frames:
            fh.write(struct.pack("<IIII", time_us // 1_000_000, time_us % 1_000_000, len(frame), len(frame)))
            fh.write(frame)
            count += 1
    return count
