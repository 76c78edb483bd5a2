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
    """Big-endian reads at arrays of offsets into one byte buffer (zero padded past its end)."""

    def __init__(self, buffer: bytes) -> None:
        self.raw = buffer
        self.b = np.frombuffer(buffer, np.uint8)

    def u32(self, at: np.ndarray) -> np.ndarray:
        return self.b[at[:, None] + _K4].view(">u4").reshape(-1).astype(np.int64)

    def bytes16(self, at: np.ndarray, v4: np.ndarray) -> np.ndarray:
        """Addresses at ``at``: 16 bytes, or IPv4-mapped from 4 bytes where ``v4``."""
        out = self.b[at[:, None] + _K16]
        if v4.any():
            out[v4, 12:] = out[v4, :4]
            out[v4, :12] = np.frombuffer(V4_PREFIX, np.uint8)
        return out.view("V16").reshape(-1)


def _walk(buf: _Buffer, start: np.ndarray, end: np.ndarray, count: np.ndarray, stats: DecoderStats) -> tuple:
    """Walk ``count[i]`` ``(format, length, body)`` items from ``start[i]`` up to ``end[i]``, all
    containers at once: (container index, format, body start, body length) of every whole item,
    in container order. An item running past its container ends that container (counted)."""
    cur, left = start.copy(), count.copy()
    found: list[tuple[np.ndarray, ...]] = []
    live = np.flatnonzero(left > 0)
    while len(live):
        c = cur[live]
        head_fits = c + 8 <= end[live]
        fmt = np.where(head_fits, buf.u32(np.where(head_fits, c, 0)), 0)
        length = np.where(head_fits, buf.u32(np.where(head_fits, c + 4, 0)), 0)
        whole = head_fits & (c + 8 + length <= end[live])
        _count(stats.errors, "truncated", (~whole).sum())
        found.append((live[whole], fmt[whole], c[whole] + 8, length[whole]))
        cur[live] = c + 8 + length
        left[live] -= 1
        live = live[whole & (left[live] > 0)]
    if not found:
        empty = np.zeros(0, np.int64)
        return empty, empty, empty, empty
    owner, fmt, body, length = (np.concatenate(parts) for parts in zip(*found, strict=True))
    order = np.argsort(owner, kind="stable")  # rounds interleave containers: back to container order
    return owner[order], fmt[order], body[order], length[order]


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
    buf = _Buffer(buffer)
    dgram = _datagrams(buf, offsets, sizes, stats)
    if dgram is None:
        return None
    owner, fmt, body, length = _walk(buf, dgram["first"], offsets + sizes, dgram["samples"], stats)
    counter_rows = (fmt == COUNTER_SAMPLE) | (fmt == COUNTER_SAMPLE_EXPANDED)
    if counter_rows.any():
        _counters(buf, dgram, owner[counter_rows], fmt[counter_rows], body[counter_rows], length[counter_rows],
                  counters, stats)  # fmt: skip
    flow_rows = (fmt == FLOW_SAMPLE) | (fmt == FLOW_SAMPLE_EXPANDED)
    _count(stats.events, "sflow_samples", len(fmt))
    if not flow_rows.any():
        return None
    sample = _flow_samples(buf, owner[flow_rows], fmt[flow_rows], body[flow_rows], length[flow_rows], stats)
    if sample is None:
        return None
    rec_owner, rec_fmt, rec_body, rec_len = _walk(buf, sample["first"], sample["end"], sample["records"], stats)
    return _flows(buf, dgram, sample, (rec_owner, rec_fmt, rec_body, rec_len), recv, rate_of, stats, tunnel)


def _datagrams(buf: _Buffer, offsets: np.ndarray, sizes: np.ndarray, stats: DecoderStats) -> dict | None:
    """Per datagram: agent (V16), sub-agent, sample count, offset of the first sample."""
    atype = np.where(sizes >= 8, buf.u32(offsets + 4), 0)
    header = np.select([atype == 1, atype == 2], [28, 40], 0)
    fits = (header > 0) & (sizes >= header)
    _count(stats.errors, "malformed", ((header == 0) & (sizes >= 8)).sum())
    _count(stats.errors, "truncated", ((sizes < 8) | ((header > 0) & ~fits)).sum())
    stats.packets[SFLOW_VERSION] += int(fits.sum())
    keep = np.flatnonzero(fits)
    if not len(keep):
        return None
    off, header = offsets[keep], header[keep]
    samples = np.zeros(len(offsets), np.int64)
    first = np.zeros(len(offsets), np.int64)
    agent = np.zeros(len(offsets), "V16")
    sub_agent = np.zeros(len(offsets), np.int64)
    agent[keep] = buf.bytes16(off + 8, header == 28)
    sub_agent[keep] = buf.u32(off + header - 16)
    samples[keep] = buf.u32(off + header - 4)
    first[keep] = off + header
    return {"agent": agent, "sub_agent": sub_agent, "samples": samples, "first": first}


def _flow_samples(
    buf: _Buffer, owner: np.ndarray, fmt: np.ndarray, body: np.ndarray, length: np.ndarray, stats: DecoderStats
) -> dict[str, np.ndarray] | None:
    """Fixed fields of flow samples (compact and expanded layouts)."""
    expanded = fmt == FLOW_SAMPLE_EXPANDED
    fixed = np.where(expanded, 44, 32)
    fits = length >= fixed
    _count(stats.errors, "truncated", (~fits).sum())
    if not fits.all():
        owner, expanded, body, length, fixed = owner[fits], expanded[fits], body[fits], length[fits], fixed[fits]
    if not len(owner):
        return None
    rate = buf.u32(body + np.where(expanded, 12, 8))
    word_in = buf.u32(body + np.where(expanded, 28, 20))
    word_out = buf.u32(body + np.where(expanded, 36, 24))
    # compact: format in the top 2 bits; expanded: a format word before each value
    fmt_in = np.where(expanded, buf.u32(body + 24), word_in >> 30)
    fmt_out = np.where(expanded, buf.u32(body + 32), word_out >> 30)
    value_in = np.where(expanded, word_in, word_in & UNKNOWN_IF)
    value_out = np.where(expanded, word_out, word_out & UNKNOWN_IF)
    return {
        "packet": owner,
        "rate": rate,
        "pool": buf.u32(body + np.where(expanded, 16, 12)),
        "input_if": value_in,
        "input_ok": fmt_in == 0,
        "output_if": value_out,
        "output_ok": (fmt_out == 0) & (value_out != UNKNOWN_IF),
        "records": buf.u32(body + fixed - 4),
        "first": body + fixed,
        "end": body + length,
    }


def _first_of(owner: np.ndarray, mask: np.ndarray, n: int) -> np.ndarray:
    """Per sample (``n``), the index of its first record matching ``mask`` (-1: none)."""
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
    records: tuple[np.ndarray, ...],
    recv: np.ndarray,
    rate_of: RateOf,
    stats: DecoderStats,
    tunnel: str,
) -> Columns | None:
    owner, fmt, body, length = records
    n = len(sample["packet"])
    src, dst = np.zeros(n, "V16"), np.zeros(n, "V16")
    proto, sport, dport, flags = (np.zeros(n, np.int64) for _ in range(4))
    ip_len = np.zeros(n, np.int64)
    has = np.zeros(n, bool)
    head = _first_of(owner, (fmt == SAMPLED_HEADER) & (length >= 16), n)
    rows = np.flatnonzero(head >= 0)
    if len(rows):
        parsed = _parse_headers(buf, body[head[rows]], length[head[rows]], stats, tunnel)
        ok = parsed.is_ip
        _count(stats.events, "sflow_non_ip", (~ok).sum())
        _count(stats.events, "header_truncated", parsed.truncated.sum())
        take = rows[ok]
        src[take], dst[take] = parsed.src[ok], parsed.dst[ok]
        proto[take], sport[take], dport[take] = parsed.protocol[ok], parsed.src_port[ok], parsed.dst_port[ok]
        flags[take], ip_len[take] = parsed.tcp_flags[ok], parsed.ip_length[ok]
        has[take] = True
    for record, size, family in ((SAMPLED_IPV4, 32, 4), (SAMPLED_IPV6, 56, 6)):
        idx = _first_of(owner, (fmt == record) & (length >= size), n)
        rows = np.flatnonzero((idx >= 0) & ~has)
        if not len(rows):
            continue
        at = body[idx[rows]]
        width = 4 if family == 4 else 16
        v4 = np.full(len(rows), family == 4)
        ip_len[rows], proto[rows] = buf.u32(at), buf.u32(at + 4)
        src[rows], dst[rows] = buf.bytes16(at + 8, v4), buf.bytes16(at + 8 + width, v4)
        ports = at + 8 + 2 * width
        sport[rows], dport[rows], flags[rows] = buf.u32(ports), buf.u32(ports + 4), buf.u32(ports + 8)
        has[rows] = True
    if not has.any():
        return None
    gateway = _gateways(buf, owner, fmt, body, length, n)
    keep = np.flatnonzero(has)
    packet = sample["packet"][keep]
    agent = dgram["agent"][packet]
    rate = sample["rate"][keep]
    if (rate == 0).any():  # an agent that reports no rate: the configured one, per distinct agent
        zero = np.flatnonzero(rate == 0)
        agents, inverse = np.unique(agent[zero], return_inverse=True)
        rate = rate.copy()
        rate[zero] = np.array([rate_of(a.tobytes()) for a in agents], np.int64)[inverse.reshape(-1)]
    k = len(keep)
    no_time = (columns.constant(0, np.int64, k), columns.constant(0, np.bool_, k))
    cols: Columns = {
        "receive_time": (recv[packet], None),
        "exporter": (agent, None),
        "observation_domain": (dgram["sub_agent"][packet].astype(np.uint32), None),
        "flow_version": (columns.constant(SFLOW_VERSION, np.uint8, k), None),
        "flow_start": no_time,  # a sample is one packet at an unknown time: no flow times
        "flow_end": no_time,
        "src_addr": (src[keep], None),
        "dst_addr": (dst[keep], None),
        "src_port": (sport[keep].astype(np.uint16), None),
        "dst_port": (dport[keep].astype(np.uint16), None),
        "protocol": (proto[keep].astype(np.uint8), None),
        "tcp_flags": (flags[keep].astype(np.uint16), None),
        "bytes": (ip_len[keep].astype(np.uint64), None),
        "packets": (columns.constant(1, np.uint64, k), None),
        "input_if": (sample["input_if"][keep].astype(np.uint32), _mask(sample["input_ok"][keep])),
        "output_if": (sample["output_if"][keep].astype(np.uint32), _mask(sample["output_ok"][keep])),
        "direction": columns.absent("direction", k),
    }
    for name in ("src_as", "dst_as"):
        values, valid = gateway[name]
        cols[name] = (values[keep].astype(np.uint32), _mask(valid[keep]))
    same = int(rate[0]) if (rate == rate[0]).all() else rate
    columns.scale(cols, same)
    return cols


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
    protocol = buf.u32(at)
    captured = np.minimum(buf.u32(at + 12), length - 16)
    start = np.zeros(len(at), np.int64)
    for code, layer in _HEADER_START.items():
        start[protocol == code] = layer
    width = int(min(max(int(captured.max()), 1), MAX_HEADER))
    view = np.ndarray((len(buf.raw) - width - headers.PAD + 1, width + headers.PAD), np.uint8, buf.raw, 0, (1, 1))
    frames = view[at + 16]
    return headers.parse(frames, np.minimum(captured, width), start, tunnel)


def _gateways(
    buf: _Buffer, owner: np.ndarray, fmt: np.ndarray, body: np.ndarray, length: np.ndarray, n: int
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """``src_as`` / ``dst_as`` per sample from its extended gateway record (read per record: rare)."""
    out = {name: (np.zeros(n, np.int64), np.zeros(n, bool)) for name in ("src_as", "dst_as")}
    idx = _first_of(owner, fmt == EXTENDED_GATEWAY, n)
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
    owner: np.ndarray,
    fmt: np.ndarray,
    body: np.ndarray,
    length: np.ndarray,
    counters: InterfaceCounters,
    stats: DecoderStats,
) -> None:
    """Generic interface counters of counter samples into ``counters`` (samples are few)."""
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
