"""sFlow extended router (1002) and gateway (1003) records, vectorized over the records of a call.

A gateway record is: next hop (address type, 4 or 16 bytes), the router's AS, the source AS,
the source peer AS, the destination AS path as segments (type, count, AS numbers), communities
(count, values), local preference. Routers that run BGP send one with every sample, so it is read
for all records at once: the fixed part with one gather, the path one round per segment (one
segment, an AS_SEQUENCE, is the usual path), the communities with one gather of all values.

What becomes of it per flow: ``src_as``, ``dst_as`` (the last AS of the path, or the router's own
AS when the path is empty: the destination is local), ``next_hop``, ``as_path`` (the segments'
AS numbers in order) and ``communities``. A router record gives ``next_hop`` to a sample that has
no gateway record. A record whose parts run past its length is left out (``malformed``).
"""

from __future__ import annotations

from typing import Any, Protocol

import numpy as np
import pyarrow as pa

from ingest.schema import AS_LIST

EXTENDED_ROUTER, EXTENDED_GATEWAY = 1002, 1003
MAX_SEGMENTS = 16  # AS path segments read per record (real paths have one or two)


class Words(Protocol):
    """What is read from the datagram buffer (``sflow._Buffer``)."""

    def u32(self, at: np.ndarray) -> np.ndarray: ...

    def u32s(self, at: np.ndarray, count: int) -> np.ndarray: ...

    def bytes16(self, at: np.ndarray, v4: np.ndarray) -> np.ndarray: ...


def _next_hop(buf: Words, at: np.ndarray, end: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(next hop ``V16``, where it is valid, offset after it) of records starting with an address."""
    atype = buf.u32(at)
    width = np.where(atype == 1, 4, np.where(atype == 2, 16, 0))
    ok = (width > 0) & (at + 4 + width <= end)
    return buf.bytes16(at + 4, atype == 1), ok, at + 4 + width


def _lists(buf: Words, owner: np.ndarray, start: np.ndarray, count: np.ndarray, n: int, valid: np.ndarray) -> pa.Array:
    """A ``list<uint32>`` of ``n`` rows: row ``owner[i]`` gets ``count[i]`` words from ``start[i]``
    (pieces in row order), rows where ``~valid`` are null."""
    mask = None if valid.all() else pa.array(~valid)
    if len(owner) == n and mask is None and n and (count == count[0]).all():
        # One piece per row, all the same length (a router's usual path, its fixed communities):
        # one gather of ``(n, count)`` words, no offset arithmetic per value.
        width = int(count[0])
        values = buf.u32s(start, width).astype(np.uint32).reshape(-1) if width else np.zeros(0, np.uint32)
        offsets = np.arange(n + 1, dtype=np.int32) * np.int32(width)
        return pa.ListArray.from_arrays(pa.array(offsets), pa.array(values), type=AS_LIST)
    per_row = np.bincount(owner, weights=count, minlength=n).astype(np.int64) * valid
    offsets = np.zeros(n + 1, np.int32)
    np.cumsum(per_row, out=offsets[1:])
    keep = valid[owner] & (count > 0)
    start, count = start[keep], count[keep]
    total = int(count.sum())
    first = np.repeat(np.cumsum(count) - count, count)
    values = buf.u32(np.repeat(start, count) + 4 * (np.arange(total) - first)).astype(np.uint32)
    return pa.ListArray.from_arrays(pa.array(offsets), pa.array(values), type=AS_LIST, mask=mask)


def gateways(buf: Words, at: np.ndarray, end: np.ndarray) -> dict[str, Any]:
    """Fields of the gateway records at ``at`` (bodies ending at ``end``), one row each, and
    ``ok``: which records were whole."""
    n = len(at)
    next_hop, ok, pos = _next_hop(buf, at, end)
    ok &= pos + 16 <= end
    fixed = buf.u32s(np.where(ok, pos, 0), 4)  # router AS, source AS, source peer AS, segments
    router_as, src_as, segments = fixed[:, 0], fixed[:, 1], fixed[:, 3]
    pos = pos + 16
    pieces: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []  # (row, first AS at, count) per segment
    last_as = np.full(n, -1, np.int64)
    left = np.where(ok, np.minimum(segments, MAX_SEGMENTS), 0)
    ok &= segments <= MAX_SEGMENTS
    for _ in range(MAX_SEGMENTS):
        live = np.flatnonzero(left > 0)
        if not len(live):
            break
        p = pos[live]
        count = np.where(p + 8 <= end[live], buf.u32(p + 4), 1 << 30)
        whole = p + 8 + 4 * count <= end[live]
        ok[live[~whole]] = False
        live, p, count = live[whole], p[whole], count[whole]
        pieces.append((live, p + 8, count))
        has = count > 0
        last_as[live[has]] = buf.u32(p[has] + 4 + 4 * count[has])
        pos[live] = p + 8 + 4 * count
        left[live] -= 1
        left[~ok] = 0
    ncomm = np.where(ok & (pos + 4 <= end), buf.u32(np.where(ok, pos, 0)), 1 << 30)
    ok &= pos + 8 + 4 * ncomm <= end  # the communities, then the local preference
    rows, first, count = (np.zeros(0, np.int64),) * 3
    if len(pieces) == 1:  # one segment a path: rows already in order
        rows, first, count = pieces[0]
    elif pieces:
        rows, first, count = (np.concatenate(part) for part in zip(*pieces, strict=True))
        order = np.lexsort((first, rows))  # row-major, segments in order
        rows, first, count = rows[order], first[order], count[order]
    everyone = np.arange(n)
    return {
        "ok": ok,
        "next_hop": next_hop,
        "src_as": src_as,
        "dst_as": np.where(last_as >= 0, last_as, router_as),
        "as_path": _lists(buf, rows, first, count, n, ok),
        "communities": _lists(buf, everyone, pos + 4, np.where(ok, ncomm, 0), n, ok),
    }


def routers(buf: Words, at: np.ndarray, end: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(next hop ``V16``, valid) of the router records at ``at``."""
    next_hop, ok, pos = _next_hop(buf, at, end)
    return next_hop, ok & (pos + 8 <= end)  # then the source and destination masks
