"""The usual sFlow call in one compiled pass (numba): datagrams, samples, the common sample's fields.

``walk`` steps over every datagram of a call, sample by sample, and writes the fields of each
*common* flow sample straight into output columns: a raw-packet record first (format 1) holding
an Ethernet frame with at most one 802.1Q tag, IPv4 without options (not a later fragment) or
IPv6 without extension headers, not a GRE or VXLAN tunnel (the shape ``sflow_rows.py`` reads,
with the same answers). What it does not read itself it hands back by position, for the numpy
code in ``sflow.py``:

- flow samples of any other shape (other first records, MPLS, QinQ, non-IP, headers cut short):
  ``slow`` items, rows whose fixed fields are read here and whose packet fields are filled in by
  the numpy record walk and ``headers.parse`` (in place: flows stay in sample order);
- counter samples: ``counter`` items (``sflow._counters``);
- extended router and gateway records (1002, 1003) of the common samples: ``extended`` items
  (``sflow._routing``).

It refuses the whole call (``ok`` false; ``sflow.decode`` then takes the numpy walk, which counts
every error exactly) when the structure is not perfectly well formed: a datagram header that
does not fit or has an unknown address type, a sample or record running past its container or
breaking the 4-byte alignment, fewer samples than announced, a flow sample shorter than its
fixed fields, more extended records than ``EXTENDED_PER_SAMPLE`` per sample on average.

numba does not check bounds: every read here is at an offset proven to lie inside its
datagram (``offsets[d] + sizes[d] <= len(buf)``, checked first), and inside the container
(datagram, sample, record, captured header) whose length was checked before it.
Compiled once to numba's on-disk cache (``scripts/setup.sh`` calls ``warm``); ``nogil``: the
daemon's receiving thread runs while a call is decoded.
"""

from __future__ import annotations

import sys
from typing import NamedTuple

import numpy as np
from numba import njit

FLOW, COUNTER, FLOW_EXPANDED, COUNTER_EXPANDED = 1, 2, 3, 4  # sample formats
RAW_HEADER, ETHERNET = 1, 1  # record format, its header_protocol
EXTENDED = (1002, 1003)  # router, gateway records: handed back for ``sflow_routing``
EXTENDED_PER_SAMPLE = 2  # room for extended records, per flow sample of the call
VLAN, IPV4, IPV6 = 0x8100, 0x0800, 0x86DD
# EtherTypes after which ``headers.parse`` goes on (tags, IP, MPLS, bridged Ethernet): any other
# ends the frame with no IP layer
IP_BEARING = (0x8100, 0x88A8, 0x9100, IPV4, IPV6, 0x8847, 0x8848, 0x6558)
VXLAN_PORT, GRE = 4789, 47
UNKNOWN_IF = 0x3FFFFFFF
MAPPED_HIGH = np.uint64(0xFFFF0000)  # bytes 8-15 of ``::ffff:0.0.0.0`` as a little-endian word
USABLE = sys.byteorder == "little"  # addresses are written as native words (``_native32``)


class Walked(NamedTuple):
    """What ``walk`` returns: one row per flow sample (``n``, in sample order); the packet fields
    (``src`` to ``ip_length``) of the ``slow`` rows are not filled in."""

    n: int  # flow samples (but those of ``non_ip``)
    samples: int  # samples of every format
    non_ip: int  # flow samples of a frame with no IP packet and no other record: no flow, no row
    agent: np.ndarray  # (datagrams, 16) uint8: agent address, IPv4 as IPv4-mapped
    sub_agent: np.ndarray  # per datagram
    packet: np.ndarray  # per row: its datagram
    receive_time: np.ndarray  # per row: its datagram's (µs)
    domain: np.ndarray  # uint32, per row: its datagram's sub-agent
    rate: np.ndarray  # uint32
    input_if: np.ndarray  # uint32
    input_ok: np.ndarray
    output_if: np.ndarray
    output_ok: np.ndarray
    src: np.ndarray  # (n, 2) uint64: the 16 address bytes as stored (IPv4 as IPv4-mapped)
    dst: np.ndarray
    src_port: np.ndarray  # uint16
    dst_port: np.ndarray  # uint16
    protocol: np.ndarray  # uint8
    tcp_flags: np.ndarray  # uint16
    ip_length: np.ndarray  # uint64
    slow: np.ndarray  # (k, 5) int64: datagram, format, body offset, body length, row
    counter: np.ndarray  # (k, 5) int64: the same for counter samples (no row)
    extended: np.ndarray  # (k, 4) int64: row of a common sample, format, body offset, body length


@njit(cache=True, inline="always")
def _u8(b: np.ndarray, i: int) -> int:
    # An unsigned index: numba adds no negative-index wraparound, and LLVM can then merge the
    # byte reads of ``_u32`` into one load (measured: a quarter of the kernel's time).
    return np.int64(b[np.uint64(i)])


@njit(cache=True, inline="always")
def _u16(b: np.ndarray, i: int) -> int:
    return (_u8(b, i) << 8) | _u8(b, i + 1)


@njit(cache=True, inline="always")
def _u32(b: np.ndarray, i: int) -> int:
    return (_u16(b, i) << 16) | _u16(b, i + 2)


@njit(cache=True, inline="always")
def _native32(b: np.ndarray, i: int) -> np.uint64:
    """Four bytes as a little-endian word: stored back, they are the same bytes in memory."""
    return np.uint64(_u8(b, i) | (_u8(b, i + 1) << 8) | (_u8(b, i + 2) << 16) | (_u8(b, i + 3) << 24))


@njit(cache=True, inline="always")
def _native64(b: np.ndarray, i: int) -> np.uint64:
    return _native32(b, i) | (_native32(b, i + 4) << np.uint64(32))


@njit(cache=True, inline="always")
def _header_length(buf: np.ndarray, o: int, s: int) -> int:
    """Bytes of the datagram header at ``o`` (``s`` bytes), or 0: unknown address type, too short."""
    if s < 8:
        return 0
    kind = _u32(buf, o + 4)
    header = 28 if kind == 1 else 40 if kind == 2 else 0
    return header if s >= header else 0


@njit(cache=True, inline="always")
def _capacity(buf: np.ndarray, offsets: np.ndarray, sizes: np.ndarray) -> int:
    """Samples the call can hold at most (announced counts, capped by what fits), or -1: refused."""
    total = 0
    for d in range(len(offsets)):
        o, s = offsets[d], sizes[d]
        if o < 0 or s < 0 or o + s > len(buf):
            return -1
        header = _header_length(buf, o, s)
        if header == 0:
            return -1
        total += min(_u32(buf, o + header - 4), (s - header) // 8)
    return total


@njit(cache=True, inline="always")
def _frame(buf: np.ndarray, frame: int, captured: int) -> tuple[int, int, int, int]:
    """(family 4 or 6, protocol, IP length, IP header offset) of the common Ethernet frame at
    ``frame`` (``captured`` bytes, all inside the datagram); family 0 for any other shape, -1 for
    a frame that holds no IP packet (ARP, LLDP, ...: an EtherType ``headers.parse`` stops at)."""
    if captured < 14:
        return 0, 0, 0, 0
    l2, ethertype = 14, _u16(buf, frame + 12)
    if ethertype == VLAN:
        if captured < 18:
            return 0, 0, 0, 0
        l2, ethertype = 18, _u16(buf, frame + 16)
    if ethertype not in IP_BEARING:
        return -1, 0, 0, 0
    l3 = frame + l2
    if ethertype == IPV4:
        if captured < l2 + 34 or _u8(buf, l3) != 0x45 or (_u16(buf, l3 + 6) & 0x1FFF) != 0:
            return 0, 0, 0, 0
        family, proto, size, l4 = 4, _u8(buf, l3 + 9), _u16(buf, l3 + 2), l3 + 20
    elif ethertype == IPV6:
        if captured < l2 + 54 or (_u8(buf, l3) >> 4) != 6:
            return 0, 0, 0, 0
        family, proto, size, l4 = 6, _u8(buf, l3 + 6), _u16(buf, l3 + 4) + 40, l3 + 40
        if proto == 0 or proto == 43 or proto == 44 or proto == 51 or proto == 60:
            return 0, 0, 0, 0  # extension headers: ``headers.parse`` walks them
    else:
        return 0, 0, 0, 0
    if proto == GRE or (proto == 17 and _u16(buf, l4 + 2) == VXLAN_PORT):
        return 0, 0, 0, 0  # tunnels: inner or outer flow, ``headers.parse`` decides
    return family, proto, size, l3


@njit(cache=True, inline="always")
def _ports(buf: np.ndarray, l4: int, proto: int) -> tuple[int, int, int]:
    """(source port, destination port, TCP flags) of the transport header at ``l4``: ports of
    TCP, UDP and SCTP, ICMP type * 256 + code as the destination port (the NetFlow convention)."""
    first = _u16(buf, l4)
    if proto == 6:
        return first, _u16(buf, l4 + 2), _u8(buf, l4 + 13)
    if proto == 17 or proto == 132:
        return first, _u16(buf, l4 + 2), 0
    if proto == 1 or proto == 58:
        return 0, first, 0
    return 0, 0, 0


@njit(cache=True, inline="always")
def _interfaces(buf: np.ndarray, body: int, expanded: bool) -> tuple[int, int, bool, int, bool]:
    """(rate, input, input valid, output, output valid) of the flow sample at ``body`` (its fixed
    fields checked to fit)."""
    if expanded:
        value = _u32(buf, body + 36)
        return (_u32(buf, body + 12), _u32(buf, body + 28), _u32(buf, body + 24) == 0, value,
                _u32(buf, body + 32) == 0 and value != UNKNOWN_IF)  # fmt: skip
    word_in, word_out = _u32(buf, body + 20), _u32(buf, body + 24)
    value = word_out & UNKNOWN_IF
    return (_u32(buf, body + 8), word_in & UNKNOWN_IF, (word_in >> 30) == 0, value,
            (word_out >> 30) == 0 and value != UNKNOWN_IF)  # fmt: skip


@njit(cache=True, inline="always")
def _first_record(buf: np.ndarray, body: int, end: int, expanded: bool) -> tuple[int, int, int]:
    """(records, offset of the first, offset after it) of the flow sample at ``body`` (ending at
    ``end``); the first's end is -1 when it is not a whole raw-packet record of Ethernet, -2 when
    its length breaks the alignment (refused)."""
    fixed = 44 if expanded else 32
    records, first = _u32(buf, body + fixed - 4), body + fixed
    if records < 1 or first + 8 > end or _u32(buf, first) != RAW_HEADER:
        return records, first, -1
    length = _u32(buf, first + 4)
    if length < 16 or first + 8 + length > end or _u32(buf, first + 8) != ETHERNET:
        return records, first, -1
    return records, first, -2 if length & 3 else first + 8 + length


@njit(cache=True, inline="always")
def _extended(buf: np.ndarray, at: int, end: int, left: int, i: int, ext: np.ndarray, e: int) -> int:
    """The ``left`` records from ``at`` up to ``end`` of common sample ``i``: router and gateway
    ones into ``ext`` from row ``e``; the next free row, or -1 (refused: not whole, or no room)."""
    for _ in range(left):
        if at + 8 > end:
            return -1
        fmt, length = _u32(buf, at), _u32(buf, at + 4)
        if length & 3 or at + 8 + length > end:
            return -1
        if fmt == EXTENDED[0] or fmt == EXTENDED[1]:
            if e >= len(ext):
                return -1
            ext[e, 0], ext[e, 1], ext[e, 2], ext[e, 3] = i, fmt, at + 8, length
            e += 1
        at += 8 + length
    return e


@njit(cache=True, nogil=True)
def _walk(buf: np.ndarray, offsets: np.ndarray, sizes: np.ndarray, recv: np.ndarray) -> tuple:
    # One body on purpose: arrays passed to a helper cost numba a reference count update each
    # call (atomic; measured 4x slower per sample), so helpers get the buffer only and the
    # columns are written here.
    cap = _capacity(buf, offsets, sizes)
    nd, m = len(offsets), max(cap, 0)
    agent, sub_agent = np.zeros((nd, 16), np.uint8), np.empty(nd, np.int64)
    packet, rate = np.empty(m, np.int64), np.empty(m, np.uint32)
    receive_time, domain = np.empty(m, np.int64), np.empty(m, np.uint32)
    input_if, input_ok = np.empty(m, np.uint32), np.empty(m, np.bool_)
    output_if, output_ok = np.empty(m, np.uint32), np.empty(m, np.bool_)
    src, dst = np.empty((m, 2), np.uint64), np.empty((m, 2), np.uint64)  # 16 bytes each, as stored
    src_port, dst_port, protocol = np.empty(m, np.uint16), np.empty(m, np.uint16), np.empty(m, np.uint8)
    tcp_flags, ip_length = np.empty(m, np.uint16), np.empty(m, np.uint64)
    items = np.empty((m, 5), np.int64)  # slow flow samples from the front, counter samples from the back
    ext = np.empty((m * EXTENDED_PER_SAMPLE, 4), np.int64)
    n = slow = counter = e = seen = non_ip = 0
    ok = cap >= 0
    for d in range(nd if ok else 0):
        o, end = offsets[d], offsets[d] + sizes[d]
        header = _header_length(buf, o, sizes[d])
        if header == 28:
            agent[d, 10] = agent[d, 11] = 0xFF
            for j in range(4):
                agent[d, 12 + j] = buf[o + 8 + j]
        else:
            for j in range(16):
                agent[d, j] = buf[o + 8 + j]
        sub_agent[d] = _u32(buf, o + header - 16)
        at = o + header
        for _ in range(min(_u32(buf, o + header - 4), (sizes[d] - header) // 8)):
            if at + 8 > end:
                ok = False
                break
            fmt, length = _u32(buf, at), _u32(buf, at + 4)
            body, after = at + 8, at + 8 + length
            if length & 3 or after > end:
                ok = False
                break
            at, seen = after, seen + 1
            if fmt in (COUNTER, COUNTER_EXPANDED):
                counter += 1
                items[m - counter, 0], items[m - counter, 1], items[m - counter, 2] = d, fmt, body
                items[m - counter, 3] = length
                continue
            if fmt != FLOW and fmt != FLOW_EXPANDED:
                continue  # other sample formats: skipped, as the numpy walk does
            expanded = fmt == FLOW_EXPANDED
            if length < (44 if expanded else 32):
                ok = False
                break
            records, first, rest = _first_record(buf, body, after, expanded)
            if rest == -2:
                ok = False
                break
            rate[n], input_if[n], input_ok[n], output_if[n], output_ok[n] = _interfaces(buf, body, expanded)
            packet[n], receive_time[n], domain[n] = d, recv[d], sub_agent[d]
            family = proto = size = l3 = 0
            if rest > 0:
                captured = min(_u32(buf, first + 20), _u32(buf, first + 4) - 16)
                family, proto, size, l3 = _frame(buf, first + 24, captured)
            if family == -1 and records == 1:  # no IP packet and no other record: no flow
                non_ip += 1
                continue
            if family <= 0:  # not the common sample: its packet fields are left to the numpy walk
                items[slow, 0], items[slow, 1], items[slow, 2], items[slow, 3] = d, fmt, body, length
                items[slow, 4] = n
                slow, n = slow + 1, n + 1
                continue
            if family == 4:  # IPv4-mapped: ten zero bytes, two 0xFF, the address
                src[n, 0] = dst[n, 0] = 0
                src[n, 1] = MAPPED_HIGH | (_native32(buf, l3 + 12) << np.uint64(32))
                dst[n, 1] = MAPPED_HIGH | (_native32(buf, l3 + 16) << np.uint64(32))
                l4 = l3 + 20
            else:
                src[n, 0], src[n, 1] = _native64(buf, l3 + 8), _native64(buf, l3 + 16)
                dst[n, 0], dst[n, 1] = _native64(buf, l3 + 24), _native64(buf, l3 + 32)
                l4 = l3 + 40
            src_port[n], dst_port[n], tcp_flags[n] = _ports(buf, l4, proto)
            protocol[n], ip_length[n] = proto, size
            if records > 1:
                e = _extended(buf, rest, after, records - 1, n, ext, e)
                if e < 0:
                    ok = False
                    break
            n += 1
        if not ok:
            break
    inputs = (rate[:n], input_if[:n], input_ok[:n], output_if[:n], output_ok[:n])
    fields = (src[:n], dst[:n], src_port[:n], dst_port[:n], protocol[:n], tcp_flags[:n], ip_length[:n])
    per_flow = (packet[:n], receive_time[:n], domain[:n])
    handed = (items[:slow], items[m - counter :], ext[:e])
    return ok, (n, seen, non_ip), agent, sub_agent, per_flow, inputs, fields, handed


def walk(buf: np.ndarray, offsets: np.ndarray, sizes: np.ndarray, recv: np.ndarray) -> Walked | None:
    """The datagrams at ``offsets`` (``sizes`` bytes, received at ``recv`` µs) in ``buf`` (uint8),
    see the module; None: refused."""
    if not USABLE:
        return None
    # One compiled signature (read-only bytes, contiguous int64): any other would compile anew.
    if buf.flags.writeable:
        buf = buf.view()
        buf.flags.writeable = False
    offsets, sizes, recv = (np.ascontiguousarray(a, np.int64) for a in (offsets, sizes, recv))
    ok, counts, agent, sub_agent, per_flow, inputs, fields, handed = _walk(buf, offsets, sizes, recv)
    return Walked(*counts, agent, sub_agent, *per_flow, *inputs, *fields, *handed) if ok else None


def warm() -> None:
    """Compile (or load from numba's cache) the kernel: one empty call (then nothing)."""
    if _walk.signatures:
        return
    none = np.zeros(0, np.int64)
    walk(np.frombuffer(bytes(64), np.uint8), none, none, none)
