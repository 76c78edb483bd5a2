"""sFlow v5 datagrams to ``FLOW_SCHEMA`` columns, vectorized over the datagrams of a call.

The usual call is walked first by ``sflow_kernel.py``, one compiled pass that writes the common
samples' fields and hands back by position what it does not read (other samples, whose packet
fields ``_kernel_columns`` fills in place with the code below; counter samples; extended records);
it refuses a call whose structure is not well formed, which then takes the numpy walk below.

A datagram is a header (version 5, agent address, sub-agent id, sequence, uptime, sample count)
then samples, each ``(format, length, body)``; a flow sample holds flow records the same way.
Lengths make every level walkable without knowing every format, so the walk is done level by
level for all datagrams at once: round ``k`` steps over the ``k``-th sample of every datagram
(three numpy calls per round, a few rounds per datagram; the lengths are checked once afterwards,
with a few calls when every datagram is well formed, ``_walk``), then over the extended records
of the flow samples that have some. No Python runs per sample on that path. Reads at offsets of
the datagram buffer go through ``xdr.Buffer``.

What becomes a flow: one per flow sample (format 1, or 3 "expanded"), from its sampled packet
header (record 1, parsed by ``headers.py``: Ethernet, VLAN, MPLS, IPv4/IPv6, tunnels) or, when
there is none, its sampled IPv4/IPv6 record (3/4). ``bytes`` is the sampled packet's IP length
(IPv4 total length, IPv6 payload length + 40; the record's own length for records 3/4) times the
sample's sampling rate, ``packets`` the rate; the flow's exporter is the agent address and its
observation domain the sub-agent id (a switch with several sub-agents is several exporters).
Interfaces: the sample's input/output when they are single ifIndex values (null for "discarded"
or "multiple"). Extended gateway records (1003) give ``src_as``, ``dst_as``, ``next_hop``,
``as_path`` and ``communities``, router records (1002) ``next_hop`` (``sflow_routing.py``).
The common sample (one raw-packet record of an Ethernet/IPv4/IPv6 packet, then any extended
records) is read from one fixed-width row per sample (``sflow_rows.py``); only the others, and the
extended records, take the record walk and ``headers.parse``.
Samples whose header holds no IP layer (ARP, ...) give no flow (``events["sflow_non_ip"]``).

Counter samples (2, 4) are not flows: their generic interface counters (record 1) are kept per
(agent, sub-agent, ifIndex), latest wins, in ``InterfaceCounters`` for the metrics endpoint.

Nothing raises on bad input: a datagram whose header does not fit is counted (``truncated``,
``malformed``); a sample or record whose length runs past its container ends the walk of that
container (``truncated``), the samples before it are kept.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from typing import Any, NamedTuple

import numpy as np
import pyarrow as pa

from ingest.decode import columns, headers, sflow_kernel, sflow_routing, sflow_rows
from ingest.decode.columns import Columns
from ingest.decode.limits import DecoderStats
from ingest.decode.xdr import Buffer
from ingest.schema import AS_LIST, SFLOW_VERSION

FLOW_SAMPLE, COUNTER_SAMPLE, FLOW_SAMPLE_EXPANDED, COUNTER_SAMPLE_EXPANDED = 1, 2, 3, 4
SAMPLED_HEADER, SAMPLED_IPV4, SAMPLED_IPV6 = 1, 3, 4
GENERIC_INTERFACE = 1
MAX_HEADER = 512  # bytes of a sampled header that are parsed (agents send 128 by default)
UNKNOWN_IF = 0x3FFFFFFF
COMPACT_AFTER = 16  # rounds of ``_walk`` over every container before the lanes are compacted
# sFlow header_protocol -> where ``headers.parse`` starts (others: not parsed, no flow)
_HEADER_START = {1: headers.ETHERNET, 11: headers.IPV4, 12: headers.IPV6, 13: headers.MPLS}
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


Items = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]  # owner, format, body start, body length
_NO_ITEMS: Items = tuple(np.zeros(0, np.int64) for _ in range(4))  # type: ignore[assignment]


def _walk(buf: Buffer, start: np.ndarray, end: np.ndarray, count: np.ndarray, stats: DecoderStats) -> Items:
    """Walk ``count[i]`` ``(format, length, body)`` items from ``start[i]`` up to ``end[i]``, all
    containers at once: (container index, format, body start, body length) of every whole item,
    in container order. An item running past its container, or leaving the 4-byte alignment,
    ends that container (counted as ``truncated`` / ``malformed``).

    Round ``k`` reads the length word of the ``k``-th item of every container and steps over it
    (three numpy calls over all containers, nothing checked yet: a container past its end reads
    garbage, clipped to the buffer, that the checks then throw away). Rounds come in blocks of
    ``COMPACT_AFTER``: containers with items left after a block (more samples than a datagram of
    an agent holds) go on alone, so a datagram of many tiny samples costs rounds over the few
    containers like it, not over the whole call."""
    left = np.minimum(count, np.maximum(end - start, 0) // 8)  # an item takes 8 bytes at least
    lanes = np.flatnonzero(left > 0)
    cur, stop, left = start[lanes], end[lanes], left[lanes]
    lengths = buf.v0[1:]  # the length word of an item starting at byte ``4k`` is word ``k + 1``
    blocks: list[tuple[np.ndarray, ...]] = []  # (owner, body, length) of each block's whole items
    errors = [0, 0]  # truncated, malformed
    while len(lanes):
        rounds = min(int(left.max()), COMPACT_AFTER)
        at = np.empty((len(lanes), rounds), np.int64)  # item starts: a row per container
        length = np.empty((len(lanes), rounds), np.int64)
        for k in range(rounds):
            at[:, k] = cur
            step = length[:, k] = np.take(lengths, cur >> 2, mode="clip").view(">u4")
            cur = cur + step
            cur += 8
        taken = _checked(at, length, left, stop, errors)
        if taken is None:  # every item of the block whole and aligned, every container as long
            blocks.append((np.repeat(lanes, rounds), at.reshape(-1) + 8, length.reshape(-1)))
        else:
            blocks.append((np.broadcast_to(lanes[:, None], taken.shape)[taken], at[taken] + 8, length[taken]))
        goes_on = left > rounds if taken is None else taken[:, -1] & (left > rounds)
        lanes, cur, stop, left = lanes[goes_on], cur[goes_on], stop[goes_on], left[goes_on] - rounds
    _count(stats.errors, "truncated", errors[0])
    _count(stats.errors, "malformed", errors[1])
    if not blocks:
        return _NO_ITEMS
    if len(blocks) == 1:
        owner, body, length = blocks[0]
    else:  # containers lie in buffer order: an item's position is its place in container order
        owner, body, length = (np.concatenate(part) for part in zip(*blocks, strict=True))
        order = np.argsort(body, kind="stable")
        owner, body, length = owner[order], body[order], length[order]
    return owner, buf.u32(body - 8), body, length


def _checked(
    at: np.ndarray, length: np.ndarray, left: np.ndarray, stop: np.ndarray, errors: list[int]
) -> np.ndarray | None:
    """Which items of a block of rounds (``(containers, rounds)`` starts and lengths) are taken,
    as a mask of that shape; bad items counted into ``errors`` (truncated, malformed).

    None: all of them. Whole, aligned blocks are the usual ones and are told with a few calls
    over the matrices: steps never go back, so when the last item a container holds ends inside
    it, every item does, and then only the alignment is left to check."""
    rounds = at.shape[1]
    live = None if int(left.min()) >= rounds else np.arange(rounds) < left[:, None]
    last = np.minimum(left, rounds) - 1
    lanes = np.arange(len(at))
    if (at[lanes, last] + length[lanes, last] + 8 <= stop).all():
        bad = (length & 3) != 0
        if live is None and not bad.any():
            return None
        if live is not None and not (bad & live).any():
            return live
    live = np.arange(rounds) < left[:, None]
    nxt = at + length
    nxt += 8
    whole = nxt <= stop[:, None]
    ok = whole & ((length & 3) == 0)
    before = np.logical_and.accumulate(ok, axis=1) if rounds > 1 else ok  # all whole and aligned so far
    taken = live & before
    reached = live  # items read before a container ended: counted when they are bad
    if rounds > 1:
        reached = live.copy()
        reached[:, 1:] &= before[:, :-1]
    errors[0] += int(np.count_nonzero(reached & ~whole))
    errors[1] += int(np.count_nonzero(reached & whole & ~ok))
    return taken


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
    buf = Buffer(buffer)
    call = _Call(buf, recv, stats, rate_of, tunnel)
    walked = sflow_kernel.walk(np.frombuffer(buffer, np.uint8), offsets, sizes, recv)
    if walked is not None:
        return _kernel_columns(call, walked, counters)
    # The kernel refused (the structure is not well formed): the numpy walk counts each error.
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
    return _numpy_columns(call, dgram, (owner, fmt, body, length))


class _Call(NamedTuple):
    """What every step of one ``decode`` call reads."""

    buf: Buffer
    recv: np.ndarray
    stats: DecoderStats
    rate_of: RateOf
    tunnel: str


def _kernel_columns(call: _Call, walked: sflow_kernel.Walked, counters: InterfaceCounters) -> Columns | None:
    """Columns of a call ``sflow_kernel.walk`` took: one row per flow sample, the packet fields of
    the rows it handed back filled in by ``_packet_fields`` from their walked records, as in the
    numpy walk; its counter samples into ``counters``."""
    stats = call.stats
    stats.packets[SFLOW_VERSION] += len(walked.sub_agent)
    _count(stats.events, "sflow_samples", walked.samples)
    _count(stats.events, "sflow_non_ip", walked.non_ip)
    dgram = {"agent": walked.agent.view("V16").reshape(-1), "sub_agent": walked.sub_agent}
    if len(walked.counter):
        _counters(call.buf, dgram, _items(walked.counter[::-1]), counters, stats)
    n = walked.n
    if not n:
        return None
    records, fast = _items(walked.extended), columns.constant(True, np.bool_, n)
    if len(walked.slow):
        rows = walked.slow[:, 4]
        fast = np.ones(n, np.bool_)
        fast[rows] = False
        records = tuple(np.concatenate(pair) for pair in zip(records, _slow_records(call, walked.slow), strict=True))
    src, dst = walked.src.view("V16").reshape(-1), walked.dst.view("V16").reshape(-1)
    parsed = headers.Headers(src, dst, walked.protocol, walked.src_port, walked.dst_port, walked.tcp_flags,
                             walked.ip_length, fast, fast)  # fmt: skip
    per_sample = (walked.packet, walked.receive_time, walked.domain, walked.rate,
                  walked.input_if, walked.input_ok, walked.output_if, walked.output_ok)  # fmt: skip
    return _sample_columns(call, dgram["agent"], per_sample, (fast, parsed), records)


def _slow_records(call: _Call, slow: np.ndarray) -> Items:
    """The records of the flow samples ``sflow_kernel.walk`` handed back (its ``slow`` rows), walked
    by ``_walk``, owned by their rows."""
    fmt, body, length, rows = slow[:, 1], slow[:, 2], slow[:, 3], slow[:, 4]
    first = body + np.where(fmt == FLOW_SAMPLE_EXPANDED, sflow_rows.FIXED[sflow_rows.EXPANDED], sflow_rows.RECORD)
    owner, *rest = _walk(call.buf, first, body + length, call.buf.u32(first - 4), call.stats)
    return rows[owner], *rest


def _items(rows: np.ndarray) -> Items:
    """``(k, 4)`` rows of ``sflow_kernel.walk`` as ``Items`` columns."""
    return rows[:, 0], rows[:, 1], rows[:, 2], rows[:, 3]


def _numpy_columns(call: _Call, dgram: dict, flows: Items) -> Columns | None:
    """Columns of flow samples (their datagram, format, body offset and length) by the numpy
    walk: the fixed-width row reader, else their records and ``headers.parse``."""
    buf, stats = call.buf, call.stats
    owner, fmt, body, length = flows
    if not len(owner):
        return None
    sample = _flow_samples(buf, owner, fmt, body, length, stats)
    if sample is None:
        return None
    fixed: sflow_rows.Sample = sample["fixed"]
    fast, parsed = sflow_rows.read(sample["rows"], fixed, sample["length"])
    # Records are walked only where needed: samples the rows did not take, and the extended
    # records of those they took (from the record after the raw-packet one, which ``read`` checked).
    walked = np.flatnonzero(~fast | (fixed.records > 1))
    records = _NO_ITEMS
    if len(walked):
        skip = fast[walked]
        first = sample["first"][walked]
        first = np.where(skip, first + 8 + buf.u32(first + 4), first)
        records = _walk(buf, first, sample["end"][walked], fixed.records[walked] - skip, stats)
        records = (walked[records[0]], *records[1:])
    return _flows(call, dgram, sample, (fast, parsed), records)


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


def _datagrams(buf: Buffer, offsets: np.ndarray, sizes: np.ndarray, stats: DecoderStats) -> dict | None:
    """Per datagram: agent (V16), sub-agent, sample count, offset of the first sample."""
    atype = np.where(sizes >= 8, buf.u32(offsets + 4), 0)
    header = np.where(atype == 1, 28, np.where(atype == 2, 40, 0))
    fits = (header > 0) & (sizes >= header)
    n_fit = int(np.count_nonzero(fits))
    stats.packets[SFLOW_VERSION] += n_fit
    if n_fit == len(offsets):  # every datagram whole (the common case): nothing to count or mask
        agent = buf.bytes16(offsets + 8, header == 28)
    else:
        _count(stats.errors, "malformed", ((header == 0) & (sizes >= 8)).sum())
        _count(stats.errors, "truncated", ((sizes < 8) | ((header > 0) & ~fits)).sum())
        if not n_fit:
            return None
        agent = np.zeros(len(offsets), "V16")
        agent[fits] = buf.bytes16(offsets[fits] + 8, header[fits] == 28)
    tail = buf.u32s(offsets + np.maximum(header, 16) - 16, 4)  # sub-agent, sequence, uptime, samples
    return {
        "agent": agent,
        "sub_agent": tail[:, 0],
        "samples": np.where(fits, tail[:, 3], 0),
        "first": offsets + header,
    }


def _flow_samples(
    buf: Buffer, owner: np.ndarray, fmt: np.ndarray, body: np.ndarray, length: np.ndarray, stats: DecoderStats
) -> dict[str, Any] | None:
    """Fixed fields of flow samples (compact and expanded layouts), read from their rows
    (``sflow_rows.Rows``: the first bytes of each sample, normalized to the compact layout)."""
    expanded = fmt == FLOW_SAMPLE_EXPANDED
    fits = length >= np.where(expanded, 44, 32)
    if not fits.all():
        _count(stats.errors, "truncated", (~fits).sum())
        owner, expanded, body, length = owner[fits], expanded[fits], body[fits], length[fits]
    if not len(owner):
        return None
    rows = sflow_rows.Rows(buf.raw, body)
    fixed = sflow_rows.samples(rows, expanded)
    return {"packet": owner, "rows": rows, "fixed": fixed, "first": body + fixed.fixed, "end": body + length,
            "length": length}  # fmt: skip


def _first_of(owner: np.ndarray, mask: np.ndarray, n: int) -> np.ndarray:
    """Per sample (``n``), the index of its first record matching ``mask`` (-1: none)."""
    if not mask.any():
        return np.full(n, -1, np.int64)
    out = np.full(n, -1, np.int64)
    rows = np.flatnonzero(mask)
    if len(rows):
        owners, first = np.unique(owner[rows], return_index=True)
        out[owners] = rows[first]
    return out


def _flows(
    call: _Call, dgram: dict, sample: dict[str, Any], read: tuple[np.ndarray, headers.Headers], records: Items
) -> Columns | None:
    """Columns of the flow samples that give a flow (the numpy walk)."""
    fixed: sflow_rows.Sample = sample["fixed"]
    packet = sample["packet"]
    per_sample = (packet, call.recv[packet], dgram["sub_agent"][packet].astype(np.uint32), fixed.rate,
                  fixed.input_if, fixed.input_ok, fixed.output_if, fixed.output_ok)  # fmt: skip
    return _sample_columns(call, dgram["agent"], per_sample, read, records)


def _sample_columns(
    call: _Call,
    agents: np.ndarray,
    per_sample: tuple[np.ndarray, ...],
    read: tuple[np.ndarray, headers.Headers],
    records: Items,
) -> Columns | None:
    """Columns of the flow samples that give a flow, for both walks: their packet fields from
    ``read`` and ``records`` (``_packet_fields``), then, of the samples kept, what ``per_sample``
    holds for each (its datagram, receive time, sub-agent, sampling rate, input, input valid,
    output, output valid) and the routing columns."""
    n = len(per_sample[0])
    found = _packet_fields(call.buf, records, n, call.stats, call.tunnel, read)
    if found is None:
        return None
    fields, has = found
    keep: slice | np.ndarray = slice(None) if has.all() else np.flatnonzero(has)
    packet, receive_time, domain, rate, *interfaces = (values[keep] for values in per_sample)
    kept = {name: values[keep] for name, values in fields.items()}
    routing = _routing(call.buf, records, n, keep)
    return _columns(agents, (packet, receive_time, domain), rate, tuple(interfaces), kept, routing, call.rate_of)


def _columns(
    agents: np.ndarray,
    per_flow: tuple[np.ndarray, np.ndarray, np.ndarray],
    rate: np.ndarray,
    interfaces: tuple[np.ndarray, ...],
    fields: dict[str, np.ndarray],
    routing: Columns,
    rate_of: RateOf,
) -> Columns:
    """Flow columns (both paths) from the datagrams' ``agents`` and per flow: its datagram, receive
    time and sub-agent (``per_flow``), sampling rate, interfaces (input, input valid, output,
    output valid), packet fields and routing columns."""
    packet, receive_time, domain = per_flow
    k = len(packet)
    agent = _agents(agents, packet)
    if (rate == 0).any():  # an agent that reports no rate: the configured one, per distinct agent
        zero = np.flatnonzero(rate == 0)
        distinct, inverse = np.unique(agent[zero], return_inverse=True)
        rate = rate.astype(np.int64)
        rate[zero] = np.array([rate_of(a.tobytes()) for a in distinct], np.int64)[inverse.reshape(-1)]
    no_time = (columns.constant(0, np.int64, k), columns.constant(0, np.bool_, k))
    input_if, input_ok, output_if, output_ok = interfaces
    cols: Columns = {
        "receive_time": (receive_time, None),
        "exporter": (agent, None),
        "observation_domain": (domain, None),
        "flow_version": (columns.constant(SFLOW_VERSION, np.uint8, k), None),
        "flow_start": no_time,  # a sample is one packet at an unknown time: no flow times
        "flow_end": no_time,
        "input_if": (input_if.astype(np.uint32, copy=False), _mask(input_ok)),
        "output_if": (output_if.astype(np.uint32, copy=False), _mask(output_ok)),
        "direction": columns.absent("direction", k),
    }
    for name, dtype in (("src_addr", None), ("dst_addr", None), ("src_port", np.uint16), ("dst_port", np.uint16),
                        ("protocol", np.uint8), ("tcp_flags", np.uint16), ("bytes", np.uint64)):  # fmt: skip
        values = fields[name]
        cols[name] = (values if dtype is None else values.astype(dtype, copy=False), None)
    cols.update(routing)
    _scale(cols, rate)
    return cols


def _agents(agent: np.ndarray, packet: np.ndarray) -> np.ndarray:
    """The agent of each flow (``packet``: its datagram); one agent for all (the usual call) is a
    shared constant column, no gather."""
    words = agent.view(np.uint64).reshape(-1, 2)
    if len(words) and (words == words[0]).all():
        return columns.constant(agent[0].tobytes(), "V16", len(packet))
    return agent[packet]


def _scale(cols: Columns, rate: np.ndarray) -> None:
    """``packets`` (one sampled packet: the rate), ``bytes`` times the rate, ``sampling_rate``; a
    rate shared by every sample (one agent's setting) makes two shared constant columns."""
    k = len(rate)
    if k and (rate == rate[0]).all():
        same = int(rate[0])
        cols["sampling_rate"] = (columns.constant(same, np.uint32, k), None)
        cols["packets"] = (columns.constant(same, np.uint64, k), None)
        cols["bytes"] = (cols["bytes"][0] * np.uint64(same), None)
        return
    factor = rate.astype(np.uint64)
    cols["sampling_rate"] = (rate, None)
    cols["packets"] = (factor, None)
    cols["bytes"] = (cols["bytes"][0] * factor, None)


def _packet_fields(
    buf: Buffer, records: Items, n: int, stats: DecoderStats, tunnel: str, read: tuple[np.ndarray, headers.Headers]
) -> tuple[dict[str, np.ndarray], np.ndarray] | None:
    """Per sample: addresses, ports, protocol, flags and IP length from its rows
    (``sflow_rows.read``), else from its sampled header parsed by ``headers.parse``, else from its
    sampled IPv4/IPv6 record; and which samples have them."""
    owner, fmt, body, length = records
    fast, parsed = read
    fields = {"src_addr": parsed.src, "dst_addr": parsed.dst, "protocol": parsed.protocol,
              "src_port": parsed.src_port, "dst_port": parsed.dst_port, "tcp_flags": parsed.tcp_flags,
              "bytes": parsed.ip_length}  # fmt: skip
    has = fast.copy()
    if has.all():
        return fields, has
    head = _first_of(owner, (fmt == SAMPLED_HEADER) & (length >= 16), n)
    rows = np.flatnonzero((head >= 0) & ~has)
    if len(rows):
        slow = _parse_headers(buf, body[head[rows]], length[head[rows]], tunnel)
        _count(stats.events, "sflow_non_ip", (~slow.is_ip).sum())
        _count(stats.events, "header_truncated", slow.truncated.sum())
        for name, values in zip(("src_addr", "dst_addr", "protocol", "src_port", "dst_port", "tcp_flags", "bytes"),
                                slow[:7], strict=True):  # fmt: skip
            fields[name][rows] = values
        has[rows] = slow.is_ip
    for record, size, family in ((SAMPLED_IPV4, 32, 4), (SAMPLED_IPV6, 56, 6)):
        if has.all():
            break
        idx = _first_of(owner, (fmt == record) & (length >= size), n)
        rows = np.flatnonzero((idx >= 0) & ~has)
        if not len(rows):
            continue
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


def _parse_headers(buf: Buffer, at: np.ndarray, length: np.ndarray, tunnel: str) -> headers.Headers:
    """The sampled-header records at ``at`` (record bodies of ``length`` bytes), parsed."""
    fields = buf.u32s(at, 4)  # header protocol, frame length, stripped, header length
    protocol = fields[:, 0]
    captured = np.minimum(fields[:, 3], length - 16)
    start = np.zeros(len(at), np.int64)  # an unknown header protocol: not parsed
    for code, layer in _HEADER_START.items():
        start[protocol == code] = layer
    width = int(min(max(int(captured.max()), 1), MAX_HEADER))
    return headers.parse(buf.rows(at + 16, width + headers.PAD), np.minimum(captured, width), start, tunnel)


def _routing(buf: Buffer, records: Items, n: int, keep: slice | np.ndarray) -> Columns:
    """``src_as``, ``dst_as``, ``next_hop``, ``as_path`` and ``communities`` of the kept samples from
    their extended gateway records, else ``next_hop`` from their router records (``sflow_routing``).
    Without either the columns are null (the AS numbers) or left out (the routing columns)."""
    owner, fmt, body, length = records
    k = n if isinstance(keep, slice) else len(keep)
    cols: Columns = {name: columns.absent(name, k) for name in ("src_as", "dst_as")}
    if not len(fmt):  # no extended records at all (the usual call without BGP data)
        return cols
    gateway_of = _first_of(owner, fmt == sflow_routing.EXTENDED_GATEWAY, n)
    router_of = _first_of(owner, (fmt == sflow_routing.EXTENDED_ROUTER) & (gateway_of[owner] < 0), n)
    gateways, routers = np.flatnonzero(gateway_of >= 0), np.flatnonzero(router_of >= 0)
    if not len(gateways) and not len(routers):
        return cols
    next_hop, hop_ok = np.zeros(n, "V16"), np.zeros(n, bool)
    if len(routers):
        at = body[router_of[routers]]
        next_hop[routers], hop_ok[routers] = sflow_routing.routers(buf, at, at + length[router_of[routers]])
    if len(gateways):
        at = body[gateway_of[gateways]]
        found = sflow_routing.gateways(buf, at, at + length[gateway_of[gateways]])
        next_hop[gateways], hop_ok[gateways] = found["next_hop"], found["ok"]
        cols |= _gateway_columns(found, gateways, n, keep)
    cols["next_hop"] = (next_hop[keep], _mask(hop_ok[keep]))
    return cols


def _gateway_columns(found: dict[str, Any], gateways: np.ndarray, n: int, keep: slice | np.ndarray) -> Columns:
    """The AS numbers and lists of the ``n`` samples, those at ``gateways`` from ``found``, then kept."""
    cols: Columns = {}
    for name in ("src_as", "dst_as"):
        values, valid = np.zeros(n, np.uint32), np.zeros(n, bool)
        values[gateways], valid[gateways] = found[name], found["ok"]
        cols[name] = (values[keep], _mask(valid[keep]))
    if len(gateways) == n and isinstance(keep, slice):  # a gateway record in every sample, all kept
        return cols | {name: (found[name], None) for name in ("as_path", "communities")}
    spread = np.full(n, len(gateways), np.int64)  # sample -> its gateway row, or the null row past them
    spread[gateways] = np.arange(len(gateways))
    picked = pa.array(spread[keep])
    for name in ("as_path", "communities"):
        cols[name] = (pa.concat_arrays([found[name], pa.nulls(1, AS_LIST)]).take(picked), None)
    return cols


def _counters(
    buf: Buffer,
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
