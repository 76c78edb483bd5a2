"""The vectorized front end of ``Decoder.decode_many``: every packet of a call read at once.

A call's payloads are joined into one buffer (``b"".join``) and their offsets computed from
their lengths; the first 24 bytes of every packet are then gathered in one numpy fancy index
and read as big-endian words. That is enough to classify the common packets without a Python
step per packet:

- NetFlow v5 with ``24 + 48 * count <= size``: its records are the 48-byte blocks after the
  header;
- NetFlow v9 / IPFIX made of exactly one set that fills the packet (v9) or the message (IPFIX)
  with a data set id (>= 256): a *candidate*. ``Plan`` looks its template up once per distinct
  (exporter, version, domain, set id) and keeps it when the template is a known, fixed-length,
  unexpired data template; the decoder re-plans when a template changes during the call;
- a template set followed by one data set (``Shapes.refreshes``): left to the decoder, which
  takes them in order through a light path when the template set is a byte-for-byte refresh.

Records of a group's packets are copied out of the buffer with one more fancy index
(``Batch.records``), over a sliding-window view whose rows are the packets' record areas.

Nothing here raises on bad packet bytes (short packets are masked out); an argument that is not
a sequence of ``(exporter, bytes-like payload, int receive time)`` raises ``TypeError``,
``ValueError``, ``IndexError`` or ``OverflowError``, and the decoder falls back to its
per-packet loop.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from operator import itemgetter
from typing import Any, NamedTuple

import numpy as np

HEAD_LEN = 24  # what is read of every packet (the v5 header; v9 and IPFIX headers + first set header)
V5_RECORD_LEN = 48
MAX_EXPORTERS = 1 << 15  # distinct exporters a call may have for ``key`` packing (beyond: all slow)
_MAX_READ = 65535 + HEAD_LEN  # the widest fixed-width read past a packet's start (a set is < 64 KiB)
_PAD = bytes(_MAX_READ)  # joined after the last packet so those reads stay inside the buffer
_ZERO_ADDR = bytes(16)
_EXPORTER, _PAYLOAD, _RECEIVE = itemgetter(0), itemgetter(1), itemgetter(2)


class Batch:
    """The packets of one ``decode_many`` call as arrays (index ``i`` is the i-th packet).

    ``payloads``, ``exporters`` (the distinct 16-byte exporter addresses, None when unusable)
    and ``exporter_index`` (per packet, into ``exporters``; None when there is only one) come
    from the call; ``recv``, ``sizes``, ``offsets`` and ``head`` (``(n, 24) uint8``, zero-padded
    for short packets' neighbours: always mask with ``sizes``) are numpy arrays.
    """

    def __init__(self, packets: Sequence[tuple[Any, Any, int]], exporter_bytes: Callable[[Any], bytes | None]) -> None:
        # itemgetter maps, not zip(*packets): that makes an iterator per packet, which costs
        # more than the rest of the front end (through garbage collection rounds).
        n = self.n = len(packets)
        self.packets = packets
        exporters = list(map(_EXPORTER, packets))
        payloads = list(map(_PAYLOAD, packets))
        self.recv = np.fromiter(map(_RECEIVE, packets), np.int64, n)
        self.sizes = np.fromiter(map(len, payloads), np.int64, n)
        self.buffer = b"".join((*payloads, _PAD))
        if len(self.buffer) != int(self.sizes.sum()) + len(_PAD):
            # A buffer whose items are not bytes (a memoryview of wider items): len() is not its size.
            payloads = [p if type(p) is bytes else bytes(p) for p in payloads]
            self.sizes = np.fromiter(map(len, payloads), np.int64, n)
            self.buffer = b"".join((*payloads, _PAD))
        self.payloads = payloads
        self.offsets = np.cumsum(self.sizes) - self.sizes
        self.head = _window(self.buffer, HEAD_LEN)[self.offsets]
        self._exporters(exporters, exporter_bytes)

    def _exporters(self, exporters: list, exporter_bytes: Callable[[Any], bytes | None]) -> None:
        self.exporter_index, distinct = index(exporters)
        self.exporters = [exporter_bytes(e) for e in distinct]
        self.exporter_table = np.frombuffer(b"".join(e or _ZERO_ADDR for e in self.exporters), "V16")

    def receive_time(self, i: int) -> int:
        """The receive time of packet ``i`` as the caller gave it."""
        return self.packets[i][2]

    def payload(self, i: int) -> bytes:
        p = self.payloads[i]
        return p if type(p) is bytes else bytes(p)

    def exporter(self, i: int) -> bytes | None:
        return self.exporters[0 if self.exporter_index is None else self.exporter_index[i]]

    def exporter_of(self, rows: np.ndarray) -> np.ndarray:
        """Per-row exporter addresses (``V16``) of packets ``rows``."""
        if self.exporter_index is None:
            return np.repeat(self.exporter_table, len(rows))
        return self.exporter_table[self.exporter_index[rows]]

    def bad_exporter(self) -> np.ndarray | None:
        """Mask of packets whose exporter is not an address (None: there are none)."""
        bad = np.array([e is None for e in self.exporters])
        if not bad.any():
            return None
        return np.repeat(bad, self.n) if self.exporter_index is None else bad[self.exporter_index]

    def classify(self) -> Shapes:
        """Which packets are well-formed v5 and which are one-data-set candidates (see the module)."""
        return Shapes(self)

    def records(self, starts: np.ndarray, counts: np.ndarray, record_length: int, dtype: np.dtype) -> np.ndarray:
        """The ``counts[i]`` records at ``starts[i]`` of every packet, in order, as one array of ``dtype``.

        One copy: rows of ``max(counts) * record_length`` bytes are gathered from a window view
        of the buffer; when counts differ, the records past each packet's count are dropped
        (another copy, of the kept records only)."""
        most = int(counts.max())
        rows = _window(self.buffer, most * record_length)[starts]
        recs = rows.view(f"V{record_length}")
        if int(counts.min()) != most:
            recs = recs[np.arange(most) < counts[:, None]]
        return recs.reshape(-1).view(dtype)


class Shapes:
    """Header-level classification of a ``Batch``.

    ``v5`` (mask) and ``v5_count``: one entry per packet. ``candidates``: rows of v9/IPFIX
    packets made of one data set, with per-candidate ``version``, ``domain``, ``set_id``,
    ``data_start`` (buffer offset of the set body), ``data_length`` and ``exporter`` (index into
    ``Batch.exporters``) and ``key`` (those packed in one integer). ``refreshes``: row -> shape of
    a packet made of one template set then one data set (how exporters resend templates), for
    the decoder's light path: ``(version, domain, template set body start, end, data set id,
    data body start, data length)``, offsets within the payload.
    """

    def __init__(self, batch: Batch) -> None:
        w16 = batch.head.view(">u2")  # (n, 12) big-endian words; rows of short packets are junk
        version = np.where(batch.sizes >= HEAD_LEN, w16[:, 0], 0)
        self.v5_count = count = w16[:, 1].astype(np.int64)  # v5/v9 record count, IPFIX message length
        self.v5 = (version == 5) & (count > 0) & (HEAD_LEN + V5_RECORD_LEN * count <= batch.sizes)
        rows = np.flatnonzero((version == 9) | (version == 10))
        if len(batch.exporters) > MAX_EXPORTERS:  # ``key`` below could collide: no fast path
            rows = rows[:0]
        if len(rows):
            self._sets(batch, rows, version[rows] == 9, w16[rows], count[rows])
        else:  # NetFlow v5 only (or nothing usable): no sets to look at
            self.candidates = self.domain = self.set_id = self.data_length = self.data_start = self.key = rows
            self.version, self.exporter = rows.astype(np.uint8), rows
            self.refreshes = {}

    def _sets(self, batch: Batch, rows: np.ndarray, v9: np.ndarray, w16: np.ndarray, length: np.ndarray) -> None:
        # v9: a 20-byte header, sets up to the end of the packet. IPFIX: a 16-byte header, sets
        # up to the message length (<= size). Every set is at least its 4-byte header.
        sizes = batch.sizes[rows]
        pick = _chooser(v9)
        header = np.where(v9, 20, 16)
        end = pick(sizes, length)
        first_id = pick(w16[:, 10], w16[:, 8]).astype(np.int64)
        first_length = pick(w16[:, 11], w16[:, 9]).astype(np.int64)
        usable = (end <= sizes) & (first_length >= 4)
        one = usable & (header + first_length == end) & (first_id >= 256)
        domain = pick(w16[:, 8], w16[:, 6]).astype(np.int64) << 16 | pick(w16[:, 9], w16[:, 7])
        self.candidates = rows[one]
        is_v9 = v9[one]
        self.version = np.where(is_v9, 9, 10).astype(np.uint8)
        self.domain = domain[one]
        self.set_id = first_id[one]
        self.data_length = first_length[one] - 4
        self.data_start = batch.offsets[self.candidates] + header[one] + 4
        self.exporter = (
            batch.exporter_index[self.candidates]
            if batch.exporter_index is not None
            else np.zeros(len(self.candidates), np.intp)
        )
        # One integer per (exporter, version, domain, set id): what templates are looked up by.
        self.key = (self.exporter.astype(np.int64) << 49) | (self.domain << 17) | (self.set_id << 1) | ~is_v9
        two = usable & (header + first_length + 4 <= end) & (first_id == np.where(v9, 0, 2))
        self.refreshes = self._refreshes(batch, rows[two], v9[two], header[two], end[two], first_length[two],
                                         domain[two])  # fmt: skip

    @staticmethod
    def _refreshes(
        batch: Batch,
        rows: np.ndarray,
        v9: np.ndarray,
        header: np.ndarray,
        end: np.ndarray,
        first_length: np.ndarray,
        domain: np.ndarray,
    ) -> dict[int, tuple[int, ...]]:
        second = header + first_length  # payload offset of the second set
        words = _window(batch.buffer, 4)[batch.offsets[rows] + second].view(">u2")
        set_id, length = words[:, 0].astype(np.int64), words[:, 1].astype(np.int64)
        ok = (length >= 4) & (second + length == end) & (set_id >= 256)
        columns = (np.where(v9, 9, 10), domain, header + 4, second, set_id, second + 4, length - 4)
        shapes = zip(*(c[ok].tolist() for c in columns), strict=True)
        return dict(zip(rows[ok].tolist(), shapes, strict=True))


class Group(NamedTuple):
    """Packets of a call whose records are read straight from the batch buffer."""

    template: Any  # the decoder's ``Template``; None for NetFlow v5
    rows: np.ndarray  # packet indices in the batch, ascending
    counts: np.ndarray  # records per packet (all > 0)
    starts: np.ndarray  # buffer offset of each packet's first record


class Plan:
    """Which candidates (``Shapes``) decode straight from the buffer, and with which template.

    ``slot[i]`` is an index into ``templates`` for packet ``i``, or -1: not a candidate, or its
    template is unknown, not ``fast``, or expired at the packet's receive time (such packets go
    through the decoder's per-packet path). ``lookup(exporter, version, domain, set id)`` returns
    the decoder's current fast template or None; it is called once per distinct key.
    """

    def __init__(self, batch: Batch, shapes: Shapes, lookup: Callable[..., Any], timeout_us: float) -> None:
        self.batch, self.shapes, self.lookup, self.timeout_us = batch, shapes, lookup, timeout_us
        self.slot = np.full(batch.n, -1, np.intp)
        self.templates: list[Any] = []
        self._slot_of: dict[int, int] = {}  # id(template) -> slot
        if len(batch.exporters) <= MAX_EXPORTERS:  # else ``Shapes.key`` could collide: no fast path
            self.assign(0)

    def assign(self, first: int) -> None:
        """(Re)assign the candidates from packet ``first`` on with the templates as they are now."""
        shapes = self.shapes
        lo = int(np.searchsorted(shapes.candidates, first))
        rows, key = shapes.candidates[lo:], shapes.key[lo:]
        if not len(rows):
            return
        if (key == key[0]).all():  # one template for all: no sort
            firsts, inverse = np.zeros(1, np.intp), None
        else:
            _, firsts, inverse = np.unique(key, return_index=True, return_inverse=True)
        slots, seen = [], []
        for j in (firsts + lo).tolist():
            exporter = self.batch.exporters[shapes.exporter[j]]
            tmpl = self.lookup(exporter, int(shapes.version[j]), int(shapes.domain[j]), int(shapes.set_id[j]))
            slots.append(-1 if tmpl is None else self._slot(tmpl))
            seen.append(0 if tmpl is None else tmpl.last_seen_us)
        slot, last_seen = np.array(slots, np.intp), np.array(seen, np.int64)
        if inverse is not None:
            inverse = inverse.reshape(-1)
            slot, last_seen = slot[inverse], last_seen[inverse]
        fresh = self.batch.recv[rows] - last_seen <= self.timeout_us
        self.slot[rows] = np.where(fresh, slot, -1)

    def give_up(self, first: int) -> None:
        """No fast path for the candidates from packet ``first`` on (too many template changes)."""
        self.slot[self.shapes.candidates[int(np.searchsorted(self.shapes.candidates, first)) :]] = -1

    def _slot(self, tmpl: Any) -> int:
        slot = self._slot_of.get(id(tmpl))
        if slot is None:
            slot = self._slot_of[id(tmpl)] = len(self.templates)
            self.templates.append(tmpl)  # kept: ids stay unique while the plan lives
        return slot

    def groups(self, extra: Sequence[tuple[Any, int, int, int]] = ()) -> list[Group]:
        """One ``Group`` per template, in order of first packet, each with its packets in order.

        ``extra``: more ``(template, packet, start of its first record in the payload, count)``
        from packets the decoder walked itself (a template set and a data set in one packet)."""
        if not extra and not len(self.shapes.candidates):
            return []
        rows = np.flatnonzero(self.slot >= 0)
        position = np.searchsorted(self.shapes.candidates, rows)
        slot = self.slot[rows]
        lengths = np.array([t.record_length for t in self.templates], np.int64)
        counts = self.shapes.data_length[position] // lengths[slot] if len(rows) else position
        starts = self.shapes.data_start[position]
        if extra:
            tmpls, more_rows, more_starts, more_counts = zip(*extra, strict=True)
            more_rows = np.array(more_rows, np.intp)
            slot = np.concatenate([slot, np.array([self._slot(t) for t in tmpls], np.intp)])
            starts = np.concatenate([starts, self.batch.offsets[more_rows] + np.array(more_starts, np.int64)])
            rows, counts = np.concatenate([rows, more_rows]), np.concatenate([counts, np.array(more_counts, np.int64)])
        keep = counts > 0
        if not keep.all():
            slot, rows, starts, counts = slot[keep], rows[keep], starts[keep], counts[keep]
        if not len(rows):
            return []
        if len(self.templates) == 1:  # the common case: only the extras are out of order
            order = np.argsort(rows, kind="stable") if extra else None
        else:
            order = np.lexsort((rows, slot))
        if order is not None:
            slot, rows, starts, counts = slot[order], rows[order], starts[order], counts[order]
        cuts = np.flatnonzero(slot[1:] != slot[:-1]) + 1 if len(self.templates) > 1 else np.zeros(0, np.intp)
        bounds = zip([0, *cuts.tolist()], [*cuts.tolist(), len(rows)], strict=True)
        out = [Group(self.templates[int(slot[a])], rows[a:b], counts[a:b], starts[a:b]) for a, b in bounds]
        return sorted(out, key=lambda g: int(g.rows[0])) if len(out) > 1 else out

    def packets(self) -> tuple[int, int]:
        """How many NetFlow v9 and IPFIX packets the plan takes."""
        if not len(self.shapes.candidates):
            return 0, 0
        position = np.searchsorted(self.shapes.candidates, np.flatnonzero(self.slot >= 0))
        v9 = int((self.shapes.version[position] == 9).sum())
        return v9, len(position) - v9


def index(values: Sequence[Any]) -> tuple[np.ndarray | None, list[Any]]:
    """(per-item index into the distinct values or None when all are the same, distinct values)."""
    first = values[0]
    if values.count(first) == len(values):  # one exporter: the common case, no per-item index
        return None, [first]
    position = {v: i for i, v in enumerate(dict.fromkeys(values))}
    return np.fromiter(map(position.__getitem__, values), np.intp, len(values)), list(position)


def _chooser(mask: np.ndarray) -> Callable[[Any, Any], Any]:
    """``np.where(mask, a, b)``, or just ``a`` or ``b`` when the mask is all one way (the usual
    batch holds one version: no pass)."""
    if mask.all():
        return lambda a, b: a
    if not mask.any():
        return lambda a, b: b
    return lambda a, b: np.where(mask, a, b)


def _window(buffer: bytes, width: int) -> np.ndarray:
    """Read-only ``(len - width + 1, width) uint8`` view: row ``i`` is ``buffer[i : i + width]``."""
    return np.ndarray((len(buffer) - width + 1, width), np.uint8, buffer=buffer, strides=(1, 1))
