"""The vectorized finish of a ``decode_many`` call: gathered records to one Arrow batch.

Per group of records (v5, or one template): the records are copied out of the buffer in one
fancy index and viewed with the template's structured dtype; the packet context (receive time,
exporter, header clock, sampling rate) is read from the gathered headers and spread to records
(``context.py``); the columns are built (``columns.py``; v5 records by ``v5.flow_columns``).
Then every group is concatenated into one Arrow batch.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pyarrow as pa

from ingest.decode import columns, frontend, headers, v5
from ingest.decode.calls import Call
from ingest.decode.context import Context, packet_table
from ingest.decode.fields import SAMPLING_ROLES
from ingest.decode.limits import DecoderStats
from ingest.decode.sampling import record_rate
from ingest.decode.store import TemplateStore
from ingest.decode.templates import Template, split_varlen_records
from ingest.schema import empty_flows

# Where the header parser starts for each packet section IE (see ``templates.SECTION_IES``).
SECTION_START = {315: headers.ETHERNET, 104: headers.ETHERNET, 313: headers.IP_ANY, 314: headers.TRANSPORT}
MAX_SECTION = 1024  # bytes of a packet section that are parsed


class Assembler:
    """Builds the columns of a call's record groups with the store's sampling state."""

    def __init__(self, store: TemplateStore, stats: DecoderStats, tunnel: str = "inner") -> None:
        self.store, self.stats, self.tunnel = store, stats, tunnel

    def finish(
        self, call: Call, batch: frontend.Batch | None, fast: list[frontend.Group], extra: list[columns.Columns]
    ) -> pa.RecordBatch:
        """One batch of the front end's groups, what the per-packet path gathered, then ``extra``
        (columns built elsewhere: sFlow)."""
        parts = [self._fast_columns(batch, group) for group in fast] if batch is not None else []
        parts += self._slow_columns(call)
        parts += extra
        parts = [p for p in parts if len(p["bytes"][0])]
        if not parts:
            return empty_flows()
        out = columns.to_batch(columns.concat(parts))
        self.stats.records += out.num_rows
        return out

    def _fast_columns(self, batch: frontend.Batch, group: frontend.Group) -> columns.Columns:
        """Columns of a front-end group: its records copied out of the batch buffer in one go."""
        tmpl, counts = group.template, group.counts
        same = int(counts[0]) if (counts == counts[0]).all() else counts  # an int: cheaper np.repeat
        if tmpl is None:  # NetFlow v5, from any of the call's exporters
            recs = batch.records(group.starts, counts, v5.RECORD_LEN, v5.RECORD)
            ids = batch.exporter_index[group.rows] if batch.exporter_index is not None else None
            exporters = [e or b"" for e in batch.exporters]  # packets of a bad exporter are never in a group
            key, version = None, 5
        else:  # one template: one exporter, version and domain
            recs = batch.records(group.starts, counts, tmpl.record_length, tmpl.dtype)
            ids, exporters, key, version = None, [tmpl.key[0]], tmpl.key, tmpl.key[1]
        resolve = self.store.resolve
        packet = packet_table(batch.recv[group.rows], batch.head[group.rows], ids, exporters, resolve, version)
        ctx = Context(packet, None, same, key)
        if tmpl is None and (cols := v5.flow_columns(recs, ctx)) is not None:
            return cols
        return self.group_columns(recs, tmpl, ctx, None)

    def _slow_columns(self, call: Call) -> list[columns.Columns]:
        """Columns of what the per-packet path gathered (``Call``)."""
        if not call.v5_chunks and not call.groups:
            return []
        slow = call.v5_chunks or any(group.bodies for group in call.groups.values())
        packet = self._call_table(call.recvs, call.heads, call.exps) if slow else {}
        parts: list[columns.Columns] = []
        if call.v5_chunks:
            recs = np.frombuffer(b"".join(call.v5_chunks), v5.RECORD)
            ctx = Context(packet, np.asarray(call.v5_pidx, np.int64), _counts(call.v5_chunks, v5.RECORD_LEN))
            parts.append(self.group_columns(recs, None, ctx, None))
        for tmpl, group in call.groups.items():
            if group.chunks:
                recs = np.frombuffer(b"".join(group.chunks), tmpl.dtype)
                counts = _counts(group.chunks, tmpl.record_length)
                own = self._call_table(group.recvs, group.heads, [tmpl.key[0]])
                parts.append(self.group_columns(recs, tmpl, Context(own, None, counts, tmpl.key), None))
            if group.bodies:
                recs, sections, pidx = _slow_records(tmpl, group.bodies)
                if len(recs):
                    parts.append(self.group_columns(recs, tmpl, Context(packet, pidx, None, tmpl.key), sections))
        return parts

    def _call_table(self, recvs: list[int], heads: list[bytes], exps: list[bytes]) -> dict[str, Any]:
        """``packet_table`` from the per-packet path's lists (``exps``: one per packet, or one for all)."""
        head = np.frombuffer(b"".join(heads), np.uint8).reshape(-1, frontend.HEAD_LEN)
        ids, distinct = frontend.index(exps)
        return packet_table(np.array(recvs, np.int64), head, ids, distinct, self.store.resolve)

    def group_columns(
        self, recs: np.ndarray, tmpl: Template | None, ctx: Context, sections: list[bytes] | None
    ) -> columns.Columns:
        # Reduced-size fields of odd widths (3, 5, 6, 7 bytes) arrive as byte columns: widen them
        # once here so every rule below sees one integer per record.
        values = {name: columns.widen(recs[name]) if recs[name].ndim == 2 else recs[name] for name in recs.dtype.names}
        parsed = None
        if sections is not None and tmpl is not None and tmpl.section_ie is not None:
            parsed = self._sections(sections, tmpl.section_ie, values.get("protocol"))
        cols = columns.forward(values, ctx, parsed)
        rate = self._rates(values, ctx)
        reverse = columns.reverse(cols, values)
        keep = columns.nsel_keep(values, cols)
        forward_rate = rate
        if keep is not None and not keep.all():
            self.stats.events["nsel_create_skipped"] += int((~keep).sum())
            cols = columns.select(cols, keep)
            forward_rate = columns.pick(rate, keep)
        columns.scale(cols, forward_rate)
        if reverse is None:
            return cols
        rev_cols, rev_keep = reverse
        self.stats.events["reverse_records"] += len(rev_cols["bytes"][0])
        columns.scale(rev_cols, columns.pick(rate, rev_keep))
        return columns.concat([cols, rev_cols])

    def _sections(self, sections: list[bytes], ie: int, protocol: np.ndarray | None) -> headers.Headers:
        """Packet sections of a group's records, parsed at once (``headers.py``)."""
        frames, lengths = headers.frames_matrix(sections, min(max(map(len, sections), default=0), MAX_SECTION))
        parsed = headers.parse(frames, lengths, SECTION_START[ie], self.tunnel, protocol)
        if truncated := int(parsed.truncated.sum()):
            self.stats.events["header_truncated"] += truncated
        return parsed

    def _rates(self, values: dict[str, np.ndarray], ctx: Context) -> np.ndarray | int:
        """Per-record sampling rate (see ``sampling.py`` for the order): an int when all the same."""
        in_record = any(role in values for role in SAMPLING_ROLES)
        if not in_record:
            return ctx.shared("rate")
        rate = record_rate(values, ctx.n)
        samplers = self.store.samplers
        if (sampler := values.get("sampler_id")) is not None and samplers:
            sid = (columns.widen(sampler).astype(np.uint64) & np.uint64(0xFFFFFFFF)).astype(np.int64)
            combo = (ctx["exdom"] << 32) | sid
            uniq, inverse = np.unique(combo, return_inverse=True)
            owners = ctx.packet["_owners"]  # exdom index -> (exporter, domain)
            found = [samplers.get((*owners[int(u) >> 32], int(u) & 0xFFFFFFFF), 0) for u in uniq]
            table = np.array(found, np.int64)
            rate = np.where(rate == 0, table[inverse.reshape(-1)], rate)
        return np.where(rate == 0, ctx["rate"], rate)


def _slow_records(tmpl: Template, bodies: list) -> tuple[np.ndarray, list[bytes], np.ndarray]:
    rows, sections, pidx = [], [], []
    for payload, start, end, p in bodies:
        r, s = split_varlen_records(tmpl, payload, start, end)
        rows += r
        sections += s
        pidx += [p] * len(r)
    recs = np.frombuffer(b"".join(rows), tmpl.dtype) if rows else np.empty(0, tmpl.dtype)
    return recs, sections, np.asarray(pidx, np.int64)


def _counts(chunks: list[bytes], record_length: int) -> np.ndarray:
    """Records per chunk (chunks hold whole records only)."""
    return np.fromiter(map(len, chunks), np.int64, len(chunks)) // record_length
