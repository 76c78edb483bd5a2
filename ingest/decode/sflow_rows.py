"""The common sFlow flow sample read from one fixed-width row of bytes per sample.

Almost every flow sample an agent sends has the same shape: the sample's fixed fields, then a
raw-packet record (format 1) whose header is an Ethernet frame, untagged or with one 802.1Q tag,
holding IPv4 without options or IPv6 without extension headers, then TCP/UDP/ICMP (extended
records may follow). For such a sample every field this decoder keeps lies at a fixed offset from
the sample's start, so the first ``WIDTH`` bytes of every sample are copied out of the datagram
buffer in one gather (a sliding-window view of the buffer indexed by the sample offsets: one row
copy each) and fields are read from that matrix as strided big-endian 32-bit words, each
converted in one numpy pass. One word often holds two fields, so it is read once: the EtherType
word also holds the IP header's first byte, the word at IP + 6 the IPv4 fragment field and
protocol (or the IPv6 next header), the word at the transport header both ports. Two
normalizations keep one layout for all rows: an expanded sample's record area is moved to where a
compact sample has it (12 bytes earlier), and a tagged frame's tag is cut out, so the IP header
always starts at ``L3``.

``read`` returns which rows it took and their fields; the rows it did not take (other records
first, MPLS, QinQ, tunnels, IPv4 options, IPv6 extension headers, fragments, headers captured
too short, non-IP) go through ``headers.parse`` in ``sflow.py``, which gives the same answer for
the rows taken here (``tests/ingest/decode/test_sflow.py`` checks it).
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from ingest.decode import columns, headers

COMPACT, EXPANDED = 1, 3  # flow sample formats
FIXED = {COMPACT: 32, EXPANDED: 44}  # bytes of a flow sample's fixed fields
RECORD = FIXED[COMPACT]  # after normalization: the first record's header (format, length)
FRAME = RECORD + 8 + 16  # the sampled header's bytes (after protocol, frame length, stripped, length)
L3 = FRAME + 14  # the IP header (after an untagged Ethernet header, or a tagged one cut short)
WIDTH = 144  # FIXED[EXPANDED] + 24 + 14 + 4 + 40 (IPv6) + 14 (TCP through its flags), rounded up
# Fixed fields kept (offset in the sample body), compact and expanded layouts (the sample pool,
# drops and sequence number are not flow fields).
COMPACT_FIELDS = {"rate": 8, "input": 20, "output": 24, "records": 28}
EXPANDED_FIELDS = {"rate": 12, "input_format": 24, "input": 28, "output_format": 32, "output": 36, "records": 40}
UNKNOWN_IF = 0x3FFFFFFF
IPV6_EXTENSIONS = (0, 43, 44, 51, 60)


class Rows:
    """The first ``WIDTH`` bytes of each sample body at ``at`` in ``raw`` (``(n, WIDTH)`` uint8).

    ``raw`` must extend ``WIDTH`` bytes past the last offset (the decoder's buffers are padded)."""

    def __init__(self, raw: bytes, at: np.ndarray) -> None:
        window = np.ndarray((len(raw) - WIDTH + 1, WIDTH), np.uint8, raw, 0, (1, 1))
        self.m = window[at]
        self.n = len(at)

    def u32(self, offset: int) -> np.ndarray:
        """The big-endian 32-bit word at ``offset`` (any) of every row, as native uint32 (one pass)."""
        return np.ndarray((self.n,), ">u4", self.m, offset, (WIDTH,)).astype(np.uint32)

    def shift(self, rows: np.ndarray, start: int, by: int) -> None:
        """Move bytes ``start + by ..`` of ``rows`` to ``start ..`` (cut ``by`` bytes out)."""
        self.m[rows, start : WIDTH - by] = self.m[rows, start + by :]


class Sample(NamedTuple):
    """Fixed fields of flow samples (``n`` each)."""

    rate: np.ndarray
    input_if: np.ndarray
    input_ok: np.ndarray
    output_if: np.ndarray
    output_ok: np.ndarray
    records: np.ndarray
    fixed: np.ndarray  # bytes of fixed fields: 32 or 44


def samples(rows: Rows, expanded: np.ndarray) -> Sample:
    """The fixed fields of every row, then the rows normalized to the compact layout."""
    c = {name: rows.u32(offset) for name, offset in COMPACT_FIELDS.items()}
    fmt_in, fmt_out = c["input"] >> 30, c["output"] >> 30  # compact: the format in the top 2 bits
    value_in, value_out = c["input"] & UNKNOWN_IF, c["output"] & UNKNOWN_IF
    rate, records = c["rate"], c["records"]
    if expanded.any():
        e = {name: rows.u32(offset) for name, offset in EXPANDED_FIELDS.items()}
        fmt_in, fmt_out = np.where(expanded, e["input_format"], fmt_in), np.where(expanded, e["output_format"], fmt_out)
        value_in, value_out = np.where(expanded, e["input"], value_in), np.where(expanded, e["output"], value_out)
        rate = np.where(expanded, e["rate"], rate)
        records = np.where(expanded, e["records"], records)
        rows.shift(np.flatnonzero(expanded), RECORD, FIXED[EXPANDED] - FIXED[COMPACT])
        fixed = np.where(expanded, FIXED[EXPANDED], FIXED[COMPACT])
    else:
        fixed = columns.constant(FIXED[COMPACT], np.int64, rows.n)
    return Sample(rate, value_in, fmt_in == 0, value_out, (fmt_out == 0) & (value_out != UNKNOWN_IF), records,
                  fixed)  # fmt: skip


def read(rows: Rows, sample: Sample, length: np.ndarray) -> tuple[np.ndarray, headers.Headers]:
    """(rows taken, their packet fields as ``headers.parse`` gives them; other rows: garbage)."""
    record_length = rows.u32(RECORD + 4).astype(np.int64)
    captured = np.minimum(rows.u32(RECORD + 20), record_length - 16)
    take = (sample.records >= 1) & (rows.u32(RECORD) == 1) & (record_length >= 16)
    take &= (sample.fixed + 8 + record_length <= length) & (rows.u32(RECORD + 8) == 1)  # Ethernet
    eth = rows.u32(FRAME + 12)  # EtherType, then the IP header's first two bytes
    tagged = (eth >> 16) == 0x8100
    any_tag = bool(tagged.any())
    if any_tag:
        rows.shift(np.flatnonzero(tagged), FRAME + 12, 4)
        eth = rows.u32(FRAME + 12)
    ethertype, first = eth >> 16, (eth >> 8) & 0xFF
    at6 = rows.u32(L3 + 6)  # IPv4: fragment field, TTL, protocol; IPv6: next header, hop limit, ...
    v4 = (ethertype == 0x0800) & (first == 0x45) & ((at6 & 0x1FFF0000) == 0)
    v6 = (ethertype == 0x86DD) & ((first >> 4) == 6)
    l2 = 14 + 4 * tagged if any_tag else 14
    take &= (v4 & (captured >= l2 + 34)) | (v6 & (captured >= l2 + 54))
    any6 = bool(v6.any())
    protocol = (np.where(v6, at6 >> 24, at6) if any6 else at6).astype(np.uint8)
    ports, flags = rows.u32(L3 + 20), rows.u32(L3 + 30)  # the TCP flags end the word at L3 + 30
    sizes = rows.u32(L3 + 2)  # IPv4: total length first; IPv6: payload length second
    if any6:
        ports = np.where(v6, rows.u32(L3 + 40), ports)
        flags = np.where(v6, rows.u32(L3 + 50), flags)
        ip_length = np.where(v6, (sizes & 0xFFFF) + 40, sizes >> 16).astype(np.int64)
        take &= ~(v6 & np.isin(protocol, IPV6_EXTENSIONS))
    else:
        ip_length = (sizes >> 16).astype(np.int64)
    src_port, dst_port = (ports >> 16).astype(np.uint16), (ports & 0xFFFF).astype(np.uint16)
    tunnel = (protocol == 47) | ((protocol == 17) & (dst_port == headers.VXLAN_PORT))
    take &= ~tunnel
    ported = (protocol == 6) | (protocol == 17) | (protocol == 132)
    if not ported.all():  # ports only for TCP, UDP and SCTP; ICMP: type * 256 + code as dst_port
        icmp = (protocol == 1) | (protocol == 58)
        src_port, dst_port = np.where(ported, src_port, 0), np.where(ported, dst_port, np.where(icmp, src_port, 0))
    flags = np.where(protocol == 6, flags & 0xFF, 0).astype(np.uint16)
    src, dst = _addresses(rows, v6 if any6 else None)
    parsed = headers.Headers(src, dst, protocol, src_port.astype(np.uint16, copy=False),
                             dst_port.astype(np.uint16, copy=False), flags, ip_length, take.copy(),
                             np.zeros(rows.n, bool))  # fmt: skip
    return take, parsed


def _addresses(rows: Rows, v6: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    """Source and destination as ``V16``: IPv4-mapped from the IPv4 header, or the IPv6 ones."""
    out = []
    for v4_at, v6_at in ((L3 + 12, L3 + 8), (L3 + 16, L3 + 24)):
        addr = columns.mapped(np.ndarray((rows.n,), "=u4", rows.m, v4_at, (WIDTH,)))  # the bytes as they are
        if v6 is not None:
            addr[v6] = rows.m[v6, v6_at : v6_at + 16].copy().view("V16").reshape(-1)
        out.append(addr)
    return out[0], out[1]
