"""The ``Decoder``: NetFlow v5, v9 and IPFIX payloads in, ``FLOW_SCHEMA`` record batches out.

How a ``decode_many`` call works:

0. sFlow v5 datagrams (first word 5) are set aside and decoded together, vectorized, by
   ``sflow.py``; their flows come after the others.
1. The front end (``frontend.py``), vectorized over the whole call: the payloads are joined into
   one buffer, every packet's first 24 bytes are read at once and the packets classified: v5
   (``24 + 48 * count <= size``), or a v9/IPFIX *candidate* made of exactly one data set
   (``Shapes``). The candidates' templates are looked up once per distinct (exporter, version,
   domain, set id) (``Plan``): a known, fixed-length, unexpired data template makes the packet
   *fast*. No Python runs per packet for these.
2. Every other packet (templates, options, several sets, unknown templates, errors) goes through
   ``_packet`` one by one, in order: its sets are walked by their lengths and validated before
   anything in the packet is used (a malformed packet yields no records), templates and options
   data are learned, data sets gathered per template. A packet there that learns, changes,
   withdraws or expires a template (``store.epoch`` moves) makes the front end plan the candidates
   after it again, so each packet is decoded with the templates in force when it arrived. A
   refresh (the same template again, the common case) changes nothing and costs one lookup:
   template sets are remembered by their bytes (``TemplateStore.known_set``), and a packet made of a
   template set seen before plus one data set takes ``_refresh_and_data`` (no walk at all).
   Data sets of fixed-length templates found on this path join the front end's groups (their
   records are read from the same buffer).
3. Per group of records (v5, or one template), vectorized, into one Arrow batch
   (``assemble.py``).

Counters are exact whichever path a packet takes. Rows come grouped: v5, then one group per
template in order of first packet (records in packet order within a group), then what the
per-packet path kept for itself (variable-length records, data released from the buffer below).
Data sets whose template is unknown wait in a bounded buffer
(``pending.py``, ``DecoderLimits.max_pending_*``) and are decoded as soon as the template arrives.
Templates, their expiry and what options data teach live in ``store.py`` (saved and loaded by
``persist.py``); this module is the packet walk. Nothing in here
raises on bad input: problems are counted in ``stats.errors`` by reason and the valid part is
returned.
"""

from __future__ import annotations

import ipaddress
import os
import struct
from collections.abc import Sequence
from typing import Any

import numpy as np
import pyarrow as pa

from ingest.addresses import V4_PREFIX
from ingest.decode import columns, frontend, ipfix, persist, sflow, sflow_kernel, v5, v9
from ingest.decode.assemble import Assembler
from ingest.decode.calls import Call as _Call
from ingest.decode.calls import Group as _Group
from ingest.decode.limits import DecoderLimits, DecoderStats
from ingest.decode.pending import PendingBuffer
from ingest.decode.sampling import SamplingDefaults
from ingest.decode.store import TemplateStore
from ingest.decode.templates import Template, TemplateKey
from ingest.schema import empty_flows

_SET = struct.Struct("!HH")
SFLOW_MAGIC = b"\x00\x00\x00\x05"  # an sFlow v5 datagram's first word
MAX_REPLANS = 32  # template changes in one call after which the rest of it takes the per-packet path
Exporter = bytes | str
__all__ = ["MAX_REPLANS", "Decoder", "DecoderLimits", "DecoderStats", "Exporter"]


class Decoder:
    """Stateful NetFlow v5/v9/IPFIX and sFlow v5 decoder (templates, options and sampling state
    per exporter).

    ``default_sampling_rate`` and ``sampling_overrides`` (subnet -> rate, longest prefix wins)
    apply to exporters that announce no rate. ``tunnel``: whether a VXLAN or GRE packet in a
    sampled header is a flow of its ``inner`` packet (default) or of the ``outer`` one. Not
    thread-safe: use one decoder per thread.
    """

    def __init__(
        self,
        default_sampling_rate: int = 1,
        sampling_overrides: dict[str, int] | None = None,
        limits: DecoderLimits | None = None,
        tunnel: str = "inner",
    ) -> None:
        self.limits = limits or DecoderLimits()
        self.tunnel = tunnel  # VXLAN/GRE in sampled headers: the flow is the inner or the outer packet
        self.interface_counters = sflow.InterfaceCounters(self.limits.max_sampler_entries)
        self.sampling_defaults = SamplingDefaults(default_sampling_rate, sampling_overrides)
        self.stats = DecoderStats()
        self.store = TemplateStore(self.limits, self.stats, self.sampling_defaults)
        self.pending = PendingBuffer(self.limits, self.stats)
        self._assembler = Assembler(self.store, self.stats, tunnel)
        self._addr_cache: dict[Any, bytes | None] = {}
        self.last_internal_error = ""  # message of the last bug caught by the safety nets
        # The sFlow kernel loaded from numba's cache (or compiled, without one) now: a daemon pays
        # it at start, not as a stall on its first sFlow datagram. Once per process.
        sflow_kernel.warm()

    @property
    def templates(self) -> dict[TemplateKey, Template]:
        return self.store.templates

    @property
    def samplers(self) -> dict[tuple[bytes, int, int], int]:
        return self.store.samplers

    @property
    def system_init(self) -> dict[tuple[bytes, int], int]:
        return self.store.system_init

    # --- public API ----------------------------------------------------------------------
    def decode(self, payload: bytes, exporter: Exporter, receive_time_us: int) -> pa.RecordBatch:
        """Decode one UDP payload from ``exporter`` (16-byte or text address)."""
        return self.decode_many([(exporter, payload, receive_time_us)])

    def decode_many(self, packets: Sequence[tuple[Exporter, bytes, int]]) -> pa.RecordBatch:
        """Decode ``(exporter, payload, receive_time_us)`` packets in order, vectorized per template.

        The front end (``frontend.py``) reads all headers at once and takes the common packets
        (v5, one data set of a known fixed-length template); the others go through ``_packet``
        one by one, in order. See the module docstring.
        """
        call = _Call()
        batch, fast = None, []
        if not isinstance(packets, list | tuple):
            packets = list(packets)  # an iterator: read once, here
        if packets:
            try:
                batch = frontend.Batch(packets, self._exporter_bytes)
            except (TypeError, ValueError, IndexError, OverflowError):
                batch = None  # not plain (exporter, bytes, int) items: the per-packet loop copes
            if batch is None:
                self._each(call, packets)
            else:
                fast = self._front(call, batch)
        try:
            return self._assembler.finish(call, batch, fast, self._sflow(call, batch))
        except (ValueError, OverflowError, TypeError, IndexError) as exc:
            # Safety net like the per-packet one: a bug must not take the collector down.
            self._internal(exc)
            return empty_flows()

    def save_state(self, path: str | os.PathLike) -> None:
        """Write templates, options-learned sampling rates and boot times as JSON (atomically)."""
        persist.save_state(self.store, path)

    def load_state(self, path: str | os.PathLike) -> int:
        """Restore what ``save_state`` wrote; returns the number of templates loaded."""
        return persist.load_state(self.store, path)

    # --- per packet ----------------------------------------------------------------------
    def _exporter_bytes(self, exporter: Exporter) -> bytes | None:
        if isinstance(exporter, bytes | bytearray) and len(exporter) == 16:
            return bytes(exporter)
        cached = self._addr_cache.get(exporter, b"")
        if cached != b"":
            return cached
        try:
            if isinstance(exporter, bytes | bytearray) and len(exporter) == 4:
                addr = ipaddress.IPv6Address(V4_PREFIX + bytes(exporter))
            else:
                parsed = ipaddress.ip_address(str(exporter))
                addr = parsed if parsed.version == 6 else ipaddress.IPv6Address(f"::ffff:{parsed}")
            result: bytes | None = addr.packed
        except ValueError:
            result = None
        if len(self._addr_cache) < 65536:
            self._addr_cache[exporter] = result
        return result

    # --- the call's packets ---------------------------------------------------------------
    def _front(self, call: _Call, batch: frontend.Batch) -> list[frontend.Group]:
        """Classify every packet at once, run the others through ``_packet`` in order, return
        the groups of packets whose records are read straight from the batch buffer."""
        bad = batch.bad_exporter()
        sflow_rows = (batch.sizes >= 4) & (batch.head[:, :4].view(">u4")[:, 0] == 5)  # sFlow v5
        if bad is None and sflow_rows.all():  # sFlow only (an agent's stream): nothing else to classify
            call.sflow_rows = np.arange(batch.n)
            return []
        shapes = batch.classify()
        plan = frontend.Plan(batch, shapes, self.store.fast, self.store.timeout_us)
        v5_rows = shapes.v5
        if bad is not None:
            self.stats.errors["bad_exporter"] += int(bad.sum())
            v5_rows = v5_rows & ~bad
        if bad is not None:
            sflow_rows &= ~bad
        call.sflow_rows = np.flatnonzero(sflow_rows)
        settled = v5_rows | sflow_rows if bad is None else v5_rows | sflow_rows | bad  # never through ``_packet``
        self._in_order(call, batch, plan, settled)
        rows = np.flatnonzero(v5_rows)
        groups = plan.groups(call.in_batch)
        if len(rows):
            groups.insert(0, frontend.Group(None, rows, shapes.v5_count[rows], batch.offsets[rows] + v5.HEADER_LEN))
        self.stats.packets[5] += len(rows)
        v9, v10 = plan.packets()
        self.stats.packets[9] += v9
        self.stats.packets[10] += v10
        return groups

    def _in_order(self, call: _Call, batch: frontend.Batch, plan: frontend.Plan, settled: np.ndarray) -> None:
        """Packets the plan does not take, through ``_packet`` in order (or ``_refresh_and_data``).

        When one of them changes the templates (``store.epoch`` moves: not on a plain refresh), the
        candidates after it are planned again with the new templates; after ``MAX_REPLANS``
        changes in one call they all take the per-packet path, which is always right, only slower."""
        todo, i = np.flatnonzero(~(settled | (plan.slot >= 0))).tolist(), 0
        epoch, replans = self.store.epoch, 0
        refreshes = plan.shapes.refreshes
        while i < len(todo):
            p = todo[i]
            i += 1
            shape = refreshes.get(p)
            if shape is None or not self._refresh_and_data(call, batch, p, shape):
                call.row = p
                self._guarded(call, batch.exporter(p), batch.payload(p), batch.receive_time(p))
            if self.store.epoch == epoch:
                continue
            epoch, replans = self.store.epoch, replans + 1
            if replans > MAX_REPLANS:
                plan.give_up(p + 1)
            else:
                plan.assign(p + 1)
            todo, i = (np.flatnonzero(~(settled[p + 1 :] | (plan.slot[p + 1 :] >= 0))) + p + 1).tolist(), 0

    def _refresh_and_data(self, call: _Call, batch: frontend.Batch, p: int, shape: tuple[int, ...]) -> bool:
        """The light path of a packet made of a template set then a data set (``Shapes.refreshes``):
        when the template set is one seen before byte for byte (``TemplateStore.known_set``) and the data
        set's template is fast and unexpired, do what ``_packet`` would (refresh the templates,
        take the records) without walking the packet. False: nothing done, use ``_packet``."""
        version, domain, set_start, set_end, template_id, data_start, data_length = shape
        exp, payload, receive_us = batch.exporter(p), batch.payload(p), batch.receive_time(p)
        known = self.store.known_set((exp, version, domain, False, payload[set_start:set_end]))
        tmpl = self.templates.get((exp, version, domain, template_id))  # type: ignore[arg-type]
        if known is None or tmpl is None or not tmpl.fast:
            return False
        if any(self.templates.get(t.key) is not t for t in known):
            return False
        if tmpl not in known and receive_us - tmpl.last_seen_us > self.store.timeout_us:
            return False  # expires here: ``_packet`` does that
        for t in known:
            self.store.refresh(t, receive_us)
        self.stats.packets[version] += 1
        if count := data_length // tmpl.record_length:
            call.in_batch.append((tmpl, p, data_start, count))
        return True

    def _each(self, call: _Call, packets: Sequence[tuple[Exporter, bytes, int]]) -> None:
        """Every packet through ``_packet`` (when the call's items are not what the front end reads)."""
        for exporter, payload, receive_us in packets:
            exp = self._exporter_bytes(exporter)
            if exp is None:
                self.stats.errors["bad_exporter"] += 1
                continue
            self._guarded(call, exp, payload if type(payload) is bytes else bytes(payload), receive_us)

    def _guarded(self, call: _Call, exp: bytes, payload: bytes, receive_us: int) -> None:
        try:
            self._packet(call, exp, payload, receive_us)
        except (struct.error, IndexError, ValueError, OverflowError, TypeError) as exc:
            self._internal(exc)  # a parser bug, never expected on any input (the fuzz run asserts zero)

    def _internal(self, exc: Exception) -> None:
        """Count a bug caught by a safety net (``stats.errors["internal"]``) and keep its message."""
        self.stats.errors["internal"] += 1
        self.stats.events[f"internal:{type(exc).__name__}"] += 1
        self.last_internal_error = f"{type(exc).__name__}: {exc}"

    def _packet(self, call: _Call, exp: bytes, payload: bytes, receive_us: int) -> None:
        if len(payload) < 4:
            self.stats.errors["truncated"] += 1
            return
        version = (payload[0] << 8) | payload[1]
        if version == 9:
            self._v9(call, exp, payload, receive_us)
        elif version == 10:
            self._ipfix(call, exp, payload, receive_us)
        elif version == 5:
            self._v5(call, exp, payload, receive_us)
        elif payload[:4] == SFLOW_MAGIC:
            call.sflow_items.append((exp, payload, receive_us))
        else:
            self.stats.errors["unknown_version"] += 1

    def _sflow(self, call: _Call, batch: frontend.Batch | None) -> list[columns.Columns]:
        """Columns of the call's sFlow datagrams (``sflow.py``), front end's rows and per-packet items."""
        parts = []
        if batch is not None and call.sflow_rows is not None and len(call.sflow_rows):
            rows = call.sflow_rows
            if len(rows) == batch.n:  # every packet: no gathers
                parts.append(self._sflow_part(batch.buffer, batch.offsets, batch.sizes, batch.recv))
            else:
                parts.append(self._sflow_part(batch.buffer, batch.offsets[rows], batch.sizes[rows], batch.recv[rows]))
        if call.sflow_items:
            items = frontend.Batch(call.sflow_items, lambda exp: exp)
            parts.append(self._sflow_part(items.buffer, items.offsets, items.sizes, items.recv))
        return [p for p in parts if p is not None]

    def _sflow_part(
        self, buffer: bytes, offsets: np.ndarray, sizes: np.ndarray, recv: np.ndarray
    ) -> columns.Columns | None:
        rate_of = self.sampling_defaults.rate_for
        return sflow.decode(buffer, offsets, sizes, recv, self.stats, rate_of, self.interface_counters, self.tunnel)

    def _v5(self, call: _Call, exp: bytes, payload: bytes, receive_us: int) -> None:
        header = v5.parse_header(payload)
        if isinstance(header, str):
            self.stats.errors[header] += 1
            return
        count = header
        self.stats.packets[5] += 1
        call.v5_pidx.append(call.add(receive_us, exp, payload[:24].ljust(24, b"\x00")))
        call.v5_chunks.append(payload[v5.HEADER_LEN : v5.HEADER_LEN + count * v5.RECORD_LEN])

    def _v9(self, call: _Call, exp: bytes, payload: bytes, receive_us: int) -> None:
        header = v9.parse_header(payload)
        if isinstance(header, str):
            self.stats.errors[header] += 1
            return
        domain = header
        sets = self._sets(payload, v9.HEADER_LEN, len(payload), ipfix=False)
        if sets is None:
            return
        self.stats.packets[9] += 1
        pidx = call.add(receive_us, exp, payload[:24].ljust(24, b"\x00"))
        self._walk(call, exp, 9, domain, payload, sets, pidx, receive_us)

    def _ipfix(self, call: _Call, exp: bytes, payload: bytes, receive_us: int) -> None:
        header = ipfix.parse_header(payload)
        if isinstance(header, str):
            self.stats.errors[header] += 1
            return
        length, domain = header
        sets = self._sets(payload, ipfix.HEADER_LEN, length, ipfix=True)
        if sets is None:
            return
        self.stats.packets[10] += 1
        pidx = call.add(receive_us, exp, payload[:24].ljust(24, b"\x00"))
        self._walk(call, exp, 10, domain, payload, sets, pidx, receive_us)

    def _sets(self, payload: bytes, pos: int, end: int, *, ipfix: bool) -> list[tuple[int, int, int]] | None:
        """Validate set boundaries first: ``[(set id, body start, body end)]`` or None (counted)."""
        sets = []
        while end - pos >= 4:
            set_id, length = _SET.unpack_from(payload, pos)
            if length < 4:
                if set_id == 0 and length == 0 and not any(payload[pos:end]):
                    break  # zero-filled tail (seen from Palo Alto): padding, not a set
                self.stats.errors["malformed"] += 1
                return None
            if pos + length > end:
                self.stats.errors["truncated"] += 1
                return None
            sets.append((set_id, pos + 4, pos + length))
            pos += length
        if not sets:
            self.stats.errors["malformed"] += 1
            return None
        return sets

    def _walk(
        self,
        call: _Call,
        exp: bytes,
        version: int,
        domain: int,
        payload: bytes,
        sets: list[tuple[int, int, int]],
        pidx: int,
        receive_us: int,
    ) -> None:
        ipfix_ = version == 10
        template_set, options_set = (2, 3) if ipfix_ else (0, 1)
        for set_id, start, end in sets:
            if set_id >= 256:
                key = (exp, version, domain, set_id)
                tmpl = self.store.current(key, receive_us)
                if tmpl is None:
                    self.pending.hold(key, payload[start:end], call.context(pidx))
                else:
                    self._data(call, tmpl, payload, start, end, pidx, call.row)
            elif set_id in (template_set, options_set):
                self._templates(call, exp, version, domain, (payload, start, end), set_id == options_set, receive_us)
            else:
                self.stats.errors["reserved_set_id"] += 1

    def _data(
        self, call: _Call, tmpl: Template, payload: bytes, start: int, end: int, pidx: int, row: int | None = None
    ) -> None:
        """A data set: options data read now, records gathered for ``_finish`` (``row``: the
        payload is that packet of the front end's batch)."""
        if tmpl.is_options:
            self.store.options_data(tmpl, payload, start, end)
            return
        size = tmpl.record_length
        count = (end - start) // size if size else 0
        if row is not None and tmpl.fast:
            if count:
                call.in_batch.append((tmpl, row, start, count))
            return
        group = call.groups.get(tmpl)
        if group is None:
            group = call.groups[tmpl] = _Group()
        if tmpl.slow:
            group.bodies.append((payload, start, end, pidx))
            return
        if count:
            group.chunks.append(payload[start : start + count * size])
            group.recvs.append(call.recvs[pidx])
            group.heads.append(call.heads[pidx])

    def _templates(
        self, call: _Call, exp: bytes, version: int, domain: int, body: tuple[bytes, int, int], options: bool,
        receive_us: int,
    ) -> None:  # fmt: skip
        """A template set: learned by the store; data waiting for a new template is released."""
        release = lambda key, tmpl: self._release(call, key, tmpl)  # noqa: E731
        self.store.learn(exp, version, domain, body, options, receive_us, release)

    def _release(self, call: _Call, key: TemplateKey, tmpl: Template) -> None:
        """Decode the data sets that were waiting for ``key``, with their own packet context."""
        for body, ctx in self.pending.release(key):
            pidx = call.add(*ctx)
            self._data(call, tmpl, body, 0, len(body), pidx)
            self.stats.events["pending_released"] += 1
