"""sFlow v5 datagrams to ``FLOW_SCHEMA`` columns, vectorized over the datagrams of a call.

A datagram is a header (version 5, agent address, sub-agent id, sequence, uptime, sample count)
then samples, each ``(format, length, body)``; a flow sample holds flow records the same way.
Lengths make every level walkable without knowing every format, so the walk is done level by
level for all datagrams at once: round ``k`` reads the ``k``-th sample of every datagram that has
one (a handful of numpy operations per round, a few rounds per datagram), then the ``k``-th
record of every flow sample. No Python runs per sample on that path.

What becomes a flow: one per flow sample (format 1, or 3 "expanded"), from its sampled packet
header (record 1, parsed by ``headers.py``: Ethernet, VLAN, MPLS, IPv4/IPv6, tunnels) or, when
there is none, its sampled IPv4/IPv6 record (3/4). ``bytes`` is the sampled packet's IP length
(IPv4 total length, IPv6 payload length + 40; the record's own length for records 3/4) times the
sample's sampling rate, ``packets`` the rate; the flow's exporter is the agent address and its
observation domain the sub-agent id (a switch with several sub-agents is several exporters).
Interfaces: the sample's input/output when they are single ifIndex values (null for "discarded"
or "multiple"). Extended gateway records (1003) give ``src_as`` and ``dst_as`` (the last AS of the
path, or the router's own AS when the path is empty); they are few and read per record.
Samples whose header holds no IP layer (ARP, ...) give no flow (``events["sflow_non_ip"]``).

Counter samples (2, 4) are not flows: their generic interface counters (record 1) are kept per
(agent, sub-agent, ifIndex), latest wins, in ``InterfaceCounters`` for the metrics endpoint.

Nothing raises on bad input: a datagram whose header does not fit is counted (``truncated``,
``malformed``); a sample or record whose length runs past its container ends the walk of that
container (``truncated``), the samples before it are kept.
"""

from __future__ import annotations

import struct
from collections import Counter
from collections.abc import Callable
from typing import Any

import numpy as np

from ingest.addresses import V4_PREFIX
from ingest.decode import columns, headers
from ingest.decode.columns import Columns
from ingest.decode.limits import DecoderStats
from ingest.schema import SFLOW_VERSION

FLOW_SAMPLE, COUNTER_SAMPLE, FLOW_SAMPLE_EXPANDED, COUNTER_SAMPLE_EXPANDED = 1, 2, 3, 4
SAMPLED_HEADER, SAMPLED_IPV4, SAMPLED_IPV6 = 1, 3, 4
EXTENDED_SWITCH, EXTENDED_ROUTER, EXTENDED_GATEWAY = 1001, 1002, 1003
GENERIC_INTERFACE = 1
MAX_HEADER = 512  # bytes of a sampled header that are parsed (agents send 128 by default)
UNKNOWN_IF = 0x3FFFFFFF
# sFlow header_protocol -> where ``headers.parse`` starts (others: not parsed, no flow)
_HEADER_START = {1: headers.ETHERNET, 11: headers.IPV4, 12: headers.IPV6, 13: headers.MPLS}
_K4 = np.arange(4)
_K16 = np.arange(16)
# generic interface counters (record 1): name, offset, width
GENERIC_COUNTERS = (
    ("if_type", 4, 4), ("if_speed", 8, 8), ("if_direction", 16, 4), ("if_status", 20, 4),
    ("in_octets", 24, 8), ("in_unicast_packets", 32, 4), ("in_multicast_packets", 36, 4),
    ("in_broadcast_packets", 40, 4), ("in_discards", 44, 4), ("in_errors", 48, 4),
    ("in_unknown_protocols", 52, 4), ("out_octets", 56, 8), ("out_unicast_packets", 64, 4),
    ("out_multicast_packets", 68, 4), ("out_broadcast_packets", 72, 4), ("out_discards", 76, 4),
    ("out_errors", 80, 4), ("promiscuous", 84, 4),
)  # fmt: skip
GENERIC_LENGTH = 88
RateOf = Callable[[bytes], int]  # agent address -> the configured rate for samples that carry 0


class InterfaceCounters:
    """Latest generic interface counters per (agent, sub-agent, ifIndex), bounded."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.latest: dict[tuple[bytes, int, int], dict[str, int]] = {}

    def update(self, key: tuple[bytes, int, int], values: dict[str, int]) -> bool:
        if key not in self.latest and len(self.latest) >= self.limit:
            return False
        self.latest[key] = values
        return True


class _Buffer:
    """Big-endian reads at arrays of offsets into one byte buffer whose datagrams start at
    multiples of 4 (sFlow is XDR: every field of a well-formed datagram is 4-byte aligned, so a
    32-bit read is one gather from a word view), zero padded past its end."""

    def __init__(self, buffer: bytes) -> None:
        self.raw = buffer
        self.b = np.frombuffer(buffer, np.uint8)
        self.w = np.frombuffer(buffer, ">u4", len(buffer) // 4)
        self._native: np.ndarray | None = None

    @property
    def native(self) -> np.ndarray:
        """The words byte-swapped once (``uint32``): for the fast lane's many column operations."""
        if self._native is None:
            self._native = self.w.astype(np.uint32)
        return self._native

    def u32(self, at: np.ndarray) -> np.ndarray:
        return self.w[at >> 2].astype(np.int64)

    def u32s(self, at: np.ndarray, count: int) -> np.ndarray:
        """``count`` consecutive words at each offset: ``(len(at), count)``."""
        return self.w[(at >> 2)[:, None] + np.arange(count)].astype(np.int64)

    def bytes16(self, at: np.ndarray, v4: np.ndarray) -> np.ndarray:
        """Addresses at ``at``: 16 bytes, or IPv4-mapped from 4 bytes where ``v4``."""
        out = self.b[at[:, None] + _K16]
        if v4.any():
            out[v4, 12:] = out[v4, :4]
            out[v4, :12] = np.frombuffer(V4_PREFIX, np.uint8)
        return out.view("V16").reshape(-1)

    def rows(self, at: np.ndarray, width: int) -> np.ndarray:
        """``(len(at), width)`` bytes starting at each offset (one row copy each, no index matrix)."""
        view = np.ndarray((len(self.raw) - width + 1, width), np.uint8, self.raw, 0, (1, 1))
        return view[at]


Items = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]  # owner, format, body start, body length
_NO_ITEMS: Items = tuple(np.zeros(0, np.int64) for _ in range(4))  # type: ignore[assignment]


def _walk(buf: _Buffer, start: np.ndarray, end: np.ndarray, count: np.ndarray, stats: DecoderStats) -> Items:
    """Walk ``count[i]`` ``(format, length, body)`` items from ``start[i]`` up to ``end[i]``, all
    containers at once: (container index, format, body start, body length) of every whole item,
    in container order. An item running past its container, or leaving the 4-byte alignment,
    ends that container (counted as ``truncated`` / ``malformed``)."""
    uniform, rest = _uniform(buf, start, end, count)
    found = [uniform] if len(uniform[0]) else []
    cur, left = start.copy(), np.where(rest, count, 0)
    live = np.flatnonzero(left > 0)
    while len(live):
        c = cur[live]
        head_fits = c + 8 <= end[live]
        words = buf.u32s(np.where(head_fits, c, 0), 2)
        fmt, length = words[:, 0], words[:, 1]
        whole = head_fits & (c + 8 + length <= end[live])
        aligned = (length & 3) == 0
        _count(stats.errors, "truncated", (~whole).sum())
        _count(stats.errors, "malformed", (whole & ~aligned).sum())
        found.append((live[whole], fmt[whole], c[whole] + 8, length[whole]))
        cur[live] = c + 8 + length
        left[live] -= 1
        live = live[whole & aligned & (left[live] > 0)]
    if not found:
        return _NO_ITEMS
    if len(found) == 1:
        return found[0]
    owner, fmt, body, length = (np.concatenate(parts) for parts in zip(*found, strict=True))
    order = np.argsort(body, kind="stable")  # containers lie in buffer order: position = container order
    return owner[order], fmt[order], body[order], length[order]


def _uniform(buf: _Buffer, start: np.ndarray, end: np.ndarray, count: np.ndarray) -> tuple[Items, np.ndarray]:
    """The common case at once: containers whose items all have the first one's length and fill
    the container exactly (an agent's samples of one kind, a sample's single record). Returns
    their items and the mask of containers left for the walk."""
    first_fits = (count > 0) & (start + 8 <= end)
    first_len = np.where(first_fits, buf.u32(np.where(first_fits, start + 4, 0)), -1)
    stride = first_len + 8
    plausible = first_fits & ((first_len & 3) == 0) & (count <= (end - start) // 8)
    plausible &= start + np.where(plausible, count, 0) * stride == end
    rows = np.flatnonzero(plausible)
    if not len(rows):
        return _NO_ITEMS, count > 0
    counts = count[rows]
    owner = np.repeat(rows, counts)
    index = np.arange(len(owner)) - np.repeat(np.cumsum(counts) - counts, counts)
    pos = start[owner] + index * stride[owner]
    words = buf.u32s(pos, 2)
    bad = words[:, 1] != first_len[owner]
    if bad.any():  # lengths differ inside: those containers take the walk
        plausible[np.unique(owner[bad])] = False
        keep = plausible[owner]
        owner, pos, words = owner[keep], pos[keep], words[keep]
    return (owner, words[:, 0], pos + 8, words[:, 1]), (count > 0) & ~plausible


def decode(
    buffer: bytes,
    offsets: np.ndarray,
    sizes: np.ndarray,
    recv: np.ndarray,
    stats: DecoderStats,
    rate_of: RateOf,
    counters: InterfaceCounters,
    tunnel: str = "inner",
) -> Columns | None:
    """Flow columns of the sFlow datagrams at ``offsets`` (``sizes`` bytes, received at ``recv``
    µs) in ``buffer``, which must be zero padded by ``MAX_HEADER + headers.PAD`` bytes at least."""
    if (offsets & 3).any():  # datagrams of a call that also holds other packets: realign them
        buffer, offsets = _aligned(buffer, offsets, sizes)
    buf = _Buffer(buffer)
    dgram = _datagrams(buf, offsets, sizes, stats)
    if dgram is None:
        return None
    owner, fmt, body, length = _walk(buf, dgram["first"], offsets + sizes, dgram["samples"], stats)
    _count(stats.events, "sflow_samples", len(fmt))
    counter_rows = (fmt == COUNTER_SAMPLE) | (fmt == COUNTER_SAMPLE_EXPANDED)
    if counter_rows.any():
        items = (owner[counter_rows], fmt[counter_rows], body[counter_rows], length[counter_rows])
        _counters(buf, dgram, items, counters, stats)
    flow_rows = (fmt == FLOW_SAMPLE) | (fmt == FLOW_SAMPLE_EXPANDED)
    if not flow_rows.all():
        owner, fmt, body, length = owner[flow_rows], fmt[flow_rows], body[flow_rows], length[flow_rows]
    if not len(owner):
        return None
    sample = _flow_samples(buf, owner, fmt, body, length, stats)
    if sample is None:
        return None
    records = _walk(buf, sample["first"], sample["end"], sample["records"], stats)
    return _flows(buf, dgram, sample, records, recv, rate_of, stats, tunnel)


def _aligned(buffer: bytes, offsets: np.ndarray, sizes: np.ndarray) -> tuple[bytes, np.ndarray]:
    """The datagrams copied to a buffer where each starts at a multiple of 4 (same padding)."""
    view = memoryview(buffer)
    padded = (sizes + 3) & ~3
    parts = [
        view[o : o + s].tobytes().ljust(p, b"\x00")
        for o, s, p in zip(offsets.tolist(), sizes.tolist(), padded.tolist(), strict=True)
    ]
    parts.append(bytes(MAX_HEADER + headers.PAD + 64))
    return b"".join(parts), np.cumsum(padded) - padded


def _datagrams(buf: _Buffer, offsets: np.ndarray, sizes: np.ndarray, stats: DecoderStats) -> dict | None:
    """Per datagram: agent (V16), sub-agent, sample count, offset of the first sample."""
    atype = np.where(sizes >= 8, buf.u32(offsets + 4), 0)
    header = np.select([atype == 1, atype == 2], [28, 40], 0)
    fits = (header > 0) & (sizes >= header)
    _count(stats.errors, "malformed", ((header == 0) & (sizes >= 8)).sum())
    _count(stats.errors, "truncated", ((sizes < 8) | ((header > 0) & ~fits)).sum())
    stats.packets[SFLOW_VERSION] += int(fits.sum())
    if not fits.any():
        return None
    n = len(offsets)
    agent = np.zeros(n, "V16")
    agent[fits] = buf.bytes16(offsets[fits] + 8, header[fits] == 28)
    tail = buf.u32s(offsets + np.maximum(header, 16) - 16, 4)  # sub-agent, sequence, uptime, samples
    return {
        "agent": agent,
        "sub_agent": tail[:, 0],
        "samples": np.where(fits, tail[:, 3], 0),
        "first": offsets + header,
    }


def _flow_samples(
    buf: _Buffer, owner: np.ndarray, fmt: np.ndarray, body: np.ndarray, length: np.ndarray, stats: DecoderStats
) -> dict[str, np.ndarray] | None:
    """Fixed fields of flow samples (compact and expanded layouts)."""
    expanded = fmt == FLOW_SAMPLE_EXPANDED
    fixed = np.where(expanded, 44, 32)
    fits = length >= fixed
    if not fits.all():
        _count(stats.errors, "truncated", (~fits).sum())
        owner, expanded, body, length, fixed = owner[fits], expanded[fits], body[fits], length[fits], fixed[fits]
    if not len(owner):
        return None
    if expanded.any():
        w = buf.u32s(body, 11)
        pick = lambda compact, wide: np.where(expanded, w[:, wide], w[:, compact])  # noqa: E731
        word_in, word_out = pick(5, 7), pick(6, 9)
        fmt_in = np.where(expanded, w[:, 6], word_in >> 30)  # compact: the format in the top 2 bits
        fmt_out = np.where(expanded, w[:, 8], word_out >> 30)
        value_in = np.where(expanded, word_in, word_in & UNKNOWN_IF)
        value_out = np.where(expanded, word_out, word_out & UNKNOWN_IF)
        rate, pool, records = pick(2, 3), pick(3, 4), pick(7, 10)
    else:  # compact samples only (the common case): plain columns
        w = buf.u32s(body, 8)
        fmt_in, fmt_out = w[:, 5] >> 30, w[:, 6] >> 30
        value_in, value_out = w[:, 5] & UNKNOWN_IF, w[:, 6] & UNKNOWN_IF
        rate, pool, records = w[:, 2], w[:, 3], w[:, 7]
    return {
        "packet": owner,
        "rate": rate,
        "pool": pool,
        "input_if": value_in,
        "input_ok": fmt_in == 0,
        "output_if": value_out,
        "output_ok": (fmt_out == 0) & (value_out != UNKNOWN_IF),
        "records": records,
        "first": body + fixed,
        "end": body + length,
    }


def _one_each(owner: np.ndarray, n: int) -> bool:
    """Whether each of the ``n`` samples has exactly one record (records are in sample order)."""
    return len(owner) == n and (n == 0 or (owner[-1] == n - 1 and bool((owner[1:] != owner[:-1]).all())))


def _first_of(owner: np.ndarray, mask: np.ndarray, n: int, one_each: bool = False) -> np.ndarray:
    """Per sample (``n``), the index of its first record matching ``mask`` (-1: none)."""
    if one_each:
        return np.where(mask, np.arange(n), -1)
    if not mask.any():
        return np.full(n, -1, np.int64)
    out = np.full(n, -1, np.int64)
    rows = np.flatnonzero(mask)
    if len(rows):
        owners, first = np.unique(owner[rows], return_index=True)
        out[owners] = rows[first]
    return out


def _flows(
    buf: _Buffer,
    dgram: dict,
    sample: dict[str, np.ndarray],
    records: Items,
    recv: np.ndarray,
    rate_of: RateOf,
    stats: DecoderStats,
    tunnel: str,
) -> Columns | None:
    owner, fmt, body, length = records
    n = len(sample["packet"])
    found = _packet_fields(buf, records, n, stats, tunnel)
    if found is None:
        return None
    fields, has = found
    keep: slice | np.ndarray = slice(None) if has.all() else np.flatnonzero(has)
    packet = sample["packet"][keep]
    agent = dgram["agent"][packet]
    rate = sample["rate"][keep]
    if (rate == 0).any():  # an agent that reports no rate: the configured one, per distinct agent
        zero = np.flatnonzero(rate == 0)
        agents, inverse = np.unique(agent[zero], return_inverse=True)
        rate = rate.copy()
        rate[zero] = np.array([rate_of(a.tobytes()) for a in agents], np.int64)[inverse.reshape(-1)]
    k = len(packet)
    no_time = (columns.constant(0, np.int64, k), columns.constant(0, np.bool_, k))
    cols: Columns = {
        "receive_time": (recv[packet], None),
        "exporter": (agent, None),
        "observation_domain": (dgram["sub_agent"][packet].astype(np.uint32), None),
        "flow_version": (columns.constant(SFLOW_VERSION, np.uint8, k), None),
        "flow_start": no_time,  # a sample is one packet at an unknown time: no flow times
        "flow_end": no_time,
        "packets": (columns.constant(1, np.uint64, k), None),
        "input_if": (sample["input_if"][keep].astype(np.uint32), _mask(sample["input_ok"][keep])),
        "output_if": (sample["output_if"][keep].astype(np.uint32), _mask(sample["output_ok"][keep])),
        "direction": columns.absent("direction", k),
    }
    for name, dtype in (("src_addr", None), ("dst_addr", None), ("src_port", np.uint16), ("dst_port", np.uint16),
                        ("protocol", np.uint8), ("tcp_flags", np.uint16), ("bytes", np.uint64)):  # fmt: skip
        values = fields[name][keep]
        cols[name] = (values if dtype is None else values.astype(dtype), None)
    gateway = _gateways(buf, owner, fmt, body, length, n)
    for name in ("src_as", "dst_as"):
        values, valid = gateway[name]
        cols[name] = (values[keep].astype(np.uint32), _mask(valid[keep]))
    same = int(rate[0]) if (rate == rate[0]).all() else rate
    columns.scale(cols, same)
    return cols


def _packet_fields(
    buf: _Buffer, records: Items, n: int, stats: DecoderStats, tunnel: str
) -> tuple[dict[str, np.ndarray], np.ndarray] | None:
    """Per sample: addresses, ports, protocol, flags and IP length from its sampled header, else
    from its sampled IPv4/IPv6 record; and which samples have them."""
    owner, fmt, body, length = records
    one_each = _one_each(owner, n)
    head = _first_of(owner, (fmt == SAMPLED_HEADER) & (length >= 16), n, one_each)
    rows = np.flatnonzero(head >= 0)
    fields: dict[str, np.ndarray] = {}
    has = np.zeros(n, bool)
    if len(rows):
        parsed = _parse_headers(buf, body[head[rows]], length[head[rows]], stats, tunnel)
        ok = parsed.is_ip
        _count(stats.events, "sflow_non_ip", (~ok).sum())
        _count(stats.events, "header_truncated", parsed.truncated.sum())
        names = {"src_addr": parsed.src, "dst_addr": parsed.dst, "protocol": parsed.protocol,
                 "src_port": parsed.src_port, "dst_port": parsed.dst_port, "tcp_flags": parsed.tcp_flags,
                 "bytes": parsed.ip_length}  # fmt: skip
        if len(rows) == n:  # every sample has a header (the common case): the parser's arrays as they are
            fields, has = names, ok.copy()
        else:
            fields = {name: np.zeros(n, values.dtype) for name, values in names.items()}
            for name, values in names.items():
                fields[name][rows] = values
            has[rows] = ok
    for record, size, family in ((SAMPLED_IPV4, 32, 4), (SAMPLED_IPV6, 56, 6)):
        if has.all():
            break
        idx = _first_of(owner, (fmt == record) & (length >= size), n, one_each)
        rows = np.flatnonzero((idx >= 0) & ~has)
        if not len(rows):
            continue
        if not fields:
            fields = {name: np.zeros(n, "V16" if name.endswith("addr") else np.int64) for name in
                      ("src_addr", "dst_addr", "protocol", "src_port", "dst_port", "tcp_flags", "bytes")}  # fmt: skip
        at = body[idx[rows]]
        width = 4 if family == 4 else 16
        v4 = np.full(len(rows), family == 4)
        ports = at + 8 + 2 * width
        values = {"bytes": buf.u32(at), "protocol": buf.u32(at + 4), "src_addr": buf.bytes16(at + 8, v4),
                  "dst_addr": buf.bytes16(at + 8 + width, v4), "src_port": buf.u32(ports),
                  "dst_port": buf.u32(ports + 4), "tcp_flags": buf.u32(ports + 8)}  # fmt: skip
        for name, value in values.items():
            fields[name][rows] = value
        has[rows] = True
    return (fields, has) if has.any() else None


def _count(counter: Counter, reason: str, n: Any) -> None:
    """Add ``n`` (a numpy count) to a counter, creating no zero entries."""
    if n:
        counter[reason] += int(n)


def _mask(valid: np.ndarray) -> np.ndarray | None:
    return None if valid.all() else valid


def _parse_headers(
    buf: _Buffer, at: np.ndarray, length: np.ndarray, stats: DecoderStats, tunnel: str
) -> headers.Headers:
    """The sampled-header records at ``at`` (record bodies of ``length`` bytes), parsed."""
    fields = buf.u32s(at, 4)  # header protocol, frame length, stripped, header length
    protocol = fields[:, 0]
    captured = np.minimum(fields[:, 3], length - 16)
    if (protocol == 1).all():  # Ethernet, the common case
        start: int | np.ndarray = headers.ETHERNET
    else:
        start = np.zeros(len(at), np.int64)
        for code, layer in _HEADER_START.items():
            start[protocol == code] = layer
    fast = _fast_lane(buf, at + 16, captured) if (protocol == 1).any() else None
    if fast is not None and fast[0].all():
        return fast[1]
    slow = np.arange(len(at)) if fast is None else np.flatnonzero(~fast[0])
    at, captured = at[slow], captured[slow]
    start = start if isinstance(start, int) else start[slow]
    width = int(min(max(int(captured.max()), 1), MAX_HEADER))
    parsed = headers.parse(buf.rows(at + 16, width + headers.PAD), np.minimum(captured, width), start, tunnel)
    if fast is None:
        return parsed
    merged = fast[1]
    for name, values in zip(headers.Headers._fields, parsed, strict=True):
        getattr(merged, name)[slow] = values
    return merged


def _fast_lane(buf: _Buffer, frame: np.ndarray, captured: np.ndarray) -> tuple[np.ndarray, headers.Headers]:
    """The common sampled packet read straight from the datagram's words: Ethernet with at most
    one 802.1Q tag, then IPv4 without options and not a later fragment, or IPv6 without extension
    headers, then anything but a tunnel, captured through the TCP flags. The header's bytes sit at
    a multiple of 4 in the XDR record, so every field comes from one ``(n, 13)`` gather of 32-bit
    words (those at 4k + 2, behind the 14-byte Ethernet header, from two neighbours). Returns (the
    rows it took: ``headers.parse`` gives the same answer for them and reads the others, results
    with those rows filled)."""
    n = len(frame)
    k0 = frame >> 2
    words = buf.native
    ether = words[k0[:, None] + np.array([3, 4])]
    tagged = (ether[:, 0] >> 16) == 0x8100
    word = np.where(tagged, ether[:, 1], ether[:, 0])
    ethertype, first = word >> 16, (word >> 8) & 0xFF
    w = words[(k0 + tagged)[:, None] + np.arange(4, 17)]  # w[:, j]: word 4 + j of the frame

    def mid(j: int) -> np.ndarray:  # the word starting 2 bytes into w[:, j]
        return ((w[:, j] & 0xFFFF) << 16) | (w[:, j + 1] >> 16)

    v4 = (ethertype == 0x0800) & (first == 0x45) & ((w[:, 1] >> 16) & 0x1FFF == 0)
    v6 = (ethertype == 0x86DD) & ((first >> 4) == 6)
    proto = np.where(v4, w[:, 1] & 0xFF, w[:, 1] >> 24)
    ports = np.where(v4, mid(4), mid(9))
    l2 = 14 + 4 * tagged
    take = (v4 & (captured >= l2 + 34)) | (v6 & (captured >= l2 + 54))
    tunnel = (proto == 47) | ((proto == 17) & ((ports & 0xFFFF) == headers.VXLAN_PORT))
    ipv6_ext = (proto == 0) | (proto == 43) | (proto == 44) | (proto == 51) | (proto == 60)
    take &= ~tunnel & ~(v6 & ipv6_ext)
    src = np.zeros((n, 4), np.uint32)  # as four native words, swapped once below
    dst = np.zeros((n, 4), np.uint32)
    if v6.any():
        src[v6] = np.stack([mid(j) for j in (1, 2, 3, 4)], axis=1)[v6]
        dst[v6] = np.stack([mid(j) for j in (5, 6, 7, 8)], axis=1)[v6]
    src[:, 2] = np.where(v4, 0xFFFF, src[:, 2])
    dst[:, 2] = src[:, 2] if not v6.any() else np.where(v4, 0xFFFF, dst[:, 2])
    src[:, 3], dst[:, 3] = np.where(v4, mid(2), src[:, 3]), np.where(v4, mid(3), dst[:, 3])
    src, dst = src.astype(">u4"), dst.astype(">u4")
    ported = (proto == 6) | (proto == 17) | (proto == 132)
    icmp = (proto == 1) | (proto == 58)
    result = headers.Headers(
        src.view("V16").reshape(-1), dst.view("V16").reshape(-1), proto.astype(np.uint8),
        np.where(ported, ports >> 16, 0).astype(np.uint16),
        np.where(ported, ports & 0xFFFF, np.where(icmp, ports >> 16, 0)).astype(np.uint16),
        np.where(proto == 6, np.where(v4, w[:, 7], w[:, 12]) & 0xFF, 0).astype(np.uint16),
        np.where(v4, w[:, 0] >> 16, (w[:, 0] & 0xFFFF) + 40).astype(np.int64), take.copy(), np.zeros(n, bool),
    )  # fmt: skip
    return take, result


def _gateways(
    buf: _Buffer, owner: np.ndarray, fmt: np.ndarray, body: np.ndarray, length: np.ndarray, n: int
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """``src_as`` / ``dst_as`` per sample from its extended gateway record (read per record: rare)."""
    out = {name: (np.zeros(n, np.int64), np.zeros(n, bool)) for name in ("src_as", "dst_as")}
    idx = _first_of(owner, fmt == EXTENDED_GATEWAY, n)
    if not (idx >= 0).any():
        return out
    for s in np.flatnonzero(idx >= 0).tolist():
        i = int(idx[s])
        parsed = gateway(buf.raw, int(body[i]), int(body[i] + length[i]))
        if parsed is None:
            continue
        for name in ("src_as", "dst_as"):
            out[name][0][s] = parsed[name]
            out[name][1][s] = True
    return out


def gateway(raw: bytes, pos: int, end: int) -> dict[str, Any] | None:
    """An extended gateway record: next hop, AS numbers, AS path, communities (None: malformed)."""
    try:
        (atype,) = struct.unpack_from("!I", raw, pos)
        width = {1: 4, 2: 16}.get(atype)
        if width is None:
            return None
        next_hop = raw[pos + 4 : pos + 4 + width]
        pos += 4 + width
        router_as, src_as, peer_as, segments = struct.unpack_from("!IIII", raw, pos)
        pos += 16
        path: list[int] = []
        for _ in range(min(segments, (end - pos) // 8)):
            _, count = struct.unpack_from("!II", raw, pos)
            if pos + 8 + 4 * count > end:
                return None
            path += struct.unpack_from(f"!{count}I", raw, pos + 8)
            pos += 8 + 4 * count
        (ncomm,) = struct.unpack_from("!I", raw, pos)
        if pos + 4 + 4 * ncomm + 4 > end:
            return None
        communities = list(struct.unpack_from(f"!{ncomm}I", raw, pos + 4))
        (local_pref,) = struct.unpack_from("!I", raw, pos + 4 + 4 * ncomm)
    except struct.error:
        return None
    return {
        "next_hop": next_hop, "router_as": router_as, "src_as": src_as, "peer_as": peer_as,
        "as_path": path, "dst_as": path[-1] if path else router_as, "communities": communities,
        "local_pref": local_pref,
    }  # fmt: skip


def _counters(
    buf: _Buffer,
    dgram: dict,
    items: Items,
    counters: InterfaceCounters,
    stats: DecoderStats,
) -> None:
    """Generic interface counters of counter samples into ``counters`` (samples are few)."""
    owner, fmt, body, length = items
    expanded = fmt == COUNTER_SAMPLE_EXPANDED
    fixed = np.where(expanded, 16, 12)
    fits = length >= fixed
    _count(stats.errors, "truncated", (~fits).sum())
    owner, body, length, fixed = owner[fits], body[fits], length[fits], fixed[fits]
    if not len(owner):
        return
    rec_owner, rec_fmt, rec_body, rec_len = _walk(buf, body + fixed, body + length, buf.u32(body + fixed - 4), stats)
    for r in np.flatnonzero((rec_fmt == GENERIC_INTERFACE) & (rec_len >= GENERIC_LENGTH)).tolist():
        pos = int(rec_body[r])
        packet = int(owner[rec_owner[r]])
        values = {name: int.from_bytes(buf.raw[pos + off : pos + off + width], "big") for name, off, width in
                  GENERIC_COUNTERS}  # fmt: skip
        key = (
            dgram["agent"][packet].tobytes(),
            int(dgram["sub_agent"][packet]),
            int.from_bytes(buf.raw[pos : pos + 4]),
        )
        if counters.update(key, values):
            stats.events["interface_counters"] += 1
        else:
            stats.errors["counter_limit"] += 1
