"""The ``Decoder``: NetFlow v5, v9 and IPFIX payloads in, ``FLOW_SCHEMA`` record batches out.

How a ``decode_many`` call works:

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
   withdraws or expires a template (``_epoch`` moves) makes the front end plan the candidates
   after it again, so each packet is decoded with the templates in force when it arrived. A
   refresh (the same template again, the common case) changes nothing and costs one lookup:
   template sets are remembered by their bytes (``_template_sets``), and a packet made of a
   template set seen before plus one data set takes ``_refresh_and_data`` (no walk at all).
   Data sets of fixed-length templates found on this path join the front end's groups (their
   records are read from the same buffer).
3. Per group of records (v5, or one template), vectorized: the records are copied out of the
   buffer in one fancy index and viewed with the template's structured dtype; the packet
   context (receive time, exporter, header clock, sampling rate) is read from the gathered
   headers and spread to records (``context.py``); the columns are built (``columns.py``; v5
   records by ``v5.flow_columns``, the same rules written out for their one fixed layout).
   Then every group is concatenated into one Arrow batch.

Counters are exact whichever path a packet takes. Rows come grouped: v5, then one group per
template in order of first packet (records in packet order within a group), then what the
per-packet path kept for itself (variable-length records, data released from the buffer below).
Data sets whose template is unknown wait in a bounded buffer
(``DecoderLimits.max_pending_*``) and are decoded as soon as the template arrives. Nothing in here
raises on bad input: problems are counted in ``stats.errors`` by reason and the valid part is
returned.
"""

from __future__ import annotations

import ipaddress
import json
import os
import struct
from collections import Counter, OrderedDict
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from ingest.addresses import V4_PREFIX
from ingest.decode import columns, frontend, ipfix, v5, v9
from ingest.decode.context import Context, packet_table
from ingest.decode.fields import SAMPLING_ROLES
from ingest.decode.sampling import EXPORTER_WIDE, SamplingDefaults, options_rate, record_rate
from ingest.decode.templates import Template, TemplateError, TemplateKey, parse_template_set, split_varlen_records
from ingest.schema import empty_flows

_SET = struct.Struct("!HH")
MAX_RATE = 0xFFFFFFFF  # the sampling_rate column is uint32
MAX_REPLANS = 32  # template changes in one call after which the rest of it takes the per-packet path
TEMPLATE_SET_CACHE = 4096  # template sets remembered by their bytes (refreshes skip parsing) ...
TEMPLATE_SET_BYTES = 4 << 20  # ... and the bytes they may hold
MAX_TIME_MS = 1 << 44  # year 2527: larger boot times are garbage
Exporter = bytes | str


@dataclass
class DecoderLimits:
    """Caps that keep memory bounded whatever exporters (or attackers) send."""

    max_templates: int = 20_000  # all exporters together
    max_exporters: int = 5_000  # distinct exporters holding templates or sampling state
    max_fields_per_template: int = 256
    max_pending_bytes: int = 16 << 20  # data waiting for its template
    max_pending_sets: int = 20_000
    template_timeout_s: float = 6 * 3600  # a template not re-announced for this long expires
    max_sampler_entries: int = 100_000


@dataclass
class DecoderStats:
    """Counters since the decoder was created (``as_dict()`` for JSON/metrics)."""

    packets: dict[int, int] = field(default_factory=lambda: {5: 0, 9: 0, 10: 0})
    records: int = 0
    errors: Counter = field(default_factory=Counter)  # reason -> packets or sets rejected
    events: Counter = field(default_factory=Counter)  # normal happenings: templates learned, ...
    pending: int = 0  # data sets held waiting for a template
    pending_bytes: int = 0
    templates: int = 0

    def as_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["packets"] = {f"v{k}" if k != 10 else "ipfix": v for k, v in self.packets.items()}
        data["errors"], data["events"] = dict(self.errors), dict(self.events)
        return data


class _Group:
    """Record bytes of one template gathered by the per-packet path during a call."""

    __slots__ = ("bodies", "chunks", "heads", "recvs")

    def __init__(self) -> None:
        # Fixed-length templates, one entry per data set: whole records only (the record count is
        # len // record length), the receive time and the first 24 bytes of its packet. Kept per
        # group, not per call: the exporter, version and domain are the template's.
        self.chunks: list[bytes] = []
        self.recvs: list[int] = []
        self.heads: list[bytes] = []
        self.bodies: list[tuple[bytes, int, int, int]] = []  # slow path: (payload, start, end, pidx)


class _Call:
    """Accumulators of the per-packet path (``_packet``) during one ``decode_many`` call."""

    def __init__(self) -> None:
        # per packet: receive µs, exporter, first 24 bytes (headers are decoded vectorized later);
        # three lists rather than one list of tuples: cheaper to append and to turn into arrays
        self.recvs: list[int] = []
        self.exps: list[bytes] = []
        self.heads: list[bytes] = []
        self.groups: dict[Template, _Group] = {}
        self.v5_chunks: list[bytes] = []
        self.v5_pidx: list[int] = []
        # Data sets of fixed-length templates in packets of the front end's batch: read from its
        # buffer with the front end's groups, (template, batch row, start in payload, records).
        self.row: int | None = None  # the batch row ``_packet`` is walking (None: not from a batch)
        self.in_batch: list[tuple[Template, int, int, int]] = []

    def add(self, receive_us: int, exp: bytes, head: bytes) -> int:
        """Record one packet's context; returns its index."""
        self.recvs.append(receive_us)
        self.exps.append(exp)
        self.heads.append(head)
        return len(self.recvs) - 1

    def context(self, pidx: int) -> tuple[int, bytes, bytes]:
        return self.recvs[pidx], self.exps[pidx], self.heads[pidx]


class Decoder:
    """Stateful NetFlow v5/v9/IPFIX decoder (templates, options and sampling state per exporter).

    ``default_sampling_rate`` and ``sampling_overrides`` (subnet -> rate, longest prefix wins)
    apply to exporters that announce no rate. Not thread-safe: use one decoder per thread.
    """

    def __init__(
        self,
        default_sampling_rate: int = 1,
        sampling_overrides: dict[str, int] | None = None,
        limits: DecoderLimits | None = None,
    ) -> None:
        self.limits = limits or DecoderLimits()
        self.sampling_defaults = SamplingDefaults(default_sampling_rate, sampling_overrides)
        self.templates: dict[TemplateKey, Template] = {}
        self.samplers: dict[tuple[bytes, int, int], int] = {}  # (exporter, domain, sampler id) -> rate
        self.system_init: dict[tuple[bytes, int], int] = {}  # (exporter, domain) -> boot time ms
        self.pending: OrderedDict[int, tuple[TemplateKey, bytes, tuple]] = OrderedDict()
        self._pending_by_key: dict[TemplateKey, list[int]] = {}
        self._pending_seq = 0
        self._last_sweep_us = -(1 << 62)
        self._exporters: set[bytes] = set()
        self._addr_cache: dict[Any, bytes | None] = {}
        # Template sets seen verbatim before: (exporter, version, domain, options, set bytes) ->
        # the templates they defined. A refresh (the same bytes again) then costs one lookup.
        self._template_sets: dict[tuple, tuple[Template, ...]] = {}
        self._template_sets_bytes = 0
        # Bumped whenever the templates a data set would be decoded with may have changed
        # (learned, changed, withdrawn, expired, refreshed back in time): decode_many re-plans.
        self._epoch = 0
        self.stats = DecoderStats()
        self.last_internal_error = ""  # message of the last bug caught by the safety nets

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
            return self._finish(call, batch, fast)
        except (ValueError, OverflowError, TypeError, IndexError) as exc:
            # Safety net like the per-packet one: a bug must not take the collector down.
            self._internal(exc)
            return empty_flows()

    def save_state(self, path: str | os.PathLike) -> None:
        """Write templates, options-learned sampling rates and boot times as JSON (atomically)."""
        state = {
            "version": 1,
            "templates": [t.to_json() for t in self.templates.values()],
            "samplers": [[k[0].hex(), k[1], k[2], r] for k, r in self.samplers.items()],
            "system_init": [[k[0].hex(), k[1], ms] for k, ms in self.system_init.items()],
        }
        path = Path(path)
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(json.dumps(state))
        tmp.replace(path)

    def load_state(self, path: str | os.PathLike) -> int:
        """Restore what ``save_state`` wrote; returns the number of templates loaded."""
        state = json.loads(Path(path).read_text())
        if state.get("version") != 1:
            raise ValueError(f"{path}: unknown decoder state version {state.get('version')!r}; delete the file")
        for data in state["templates"][: self.limits.max_templates]:
            tmpl = Template.from_json(data)
            self.templates[tmpl.key] = tmpl
            self._exporters.add(tmpl.key[0])
        for exp, domain, sampler, rate in state["samplers"][: self.limits.max_sampler_entries]:
            self.samplers[(bytes.fromhex(exp), domain, sampler)] = rate
        for exp, domain, ms in state["system_init"]:
            self.system_init[(bytes.fromhex(exp), domain)] = ms
        self.stats.templates = len(self.templates)
        return len(state["templates"])

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
        shapes = batch.classify()
        plan = frontend.Plan(batch, shapes, self._lookup, self.limits.template_timeout_s * 1_000_000)
        v5_rows = shapes.v5
        bad = batch.bad_exporter()
        if bad is not None:
            self.stats.errors["bad_exporter"] += int(bad.sum())
            v5_rows = v5_rows & ~bad
        settled = v5_rows if bad is None else v5_rows | bad  # never through ``_packet``
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

        When one of them changes the templates (``_epoch`` moves: not on a plain refresh), the
        candidates after it are planned again with the new templates; after ``MAX_REPLANS``
        changes in one call they all take the per-packet path, which is always right, only slower."""
        todo, i = np.flatnonzero(~(settled | (plan.slot >= 0))).tolist(), 0
        epoch, replans = self._epoch, 0
        refreshes = plan.shapes.refreshes
        while i < len(todo):
            p = todo[i]
            i += 1
            shape = refreshes.get(p)
            if shape is None or not self._refresh_and_data(call, batch, p, shape):
                call.row = p
                self._guarded(call, batch.exporter(p), batch.payload(p), batch.receive_time(p))
            if self._epoch == epoch:
                continue
            epoch, replans = self._epoch, replans + 1
            if replans > MAX_REPLANS:
                plan.give_up(p + 1)
            else:
                plan.assign(p + 1)
            todo, i = (np.flatnonzero(~(settled[p + 1 :] | (plan.slot[p + 1 :] >= 0))) + p + 1).tolist(), 0

    def _refresh_and_data(self, call: _Call, batch: frontend.Batch, p: int, shape: tuple[int, ...]) -> bool:
        """The light path of a packet made of a template set then a data set (``Shapes.refreshes``):
        when the template set is one seen before byte for byte (``_template_sets``) and the data
        set's template is fast and unexpired, do what ``_packet`` would (refresh the templates,
        take the records) without walking the packet. False: nothing done, use ``_packet``."""
        version, domain, set_start, set_end, template_id, data_start, data_length = shape
        exp, payload, receive_us = batch.exporter(p), batch.payload(p), batch.receive_time(p)
        known = self._template_sets.get((exp, version, domain, False, payload[set_start:set_end]))
        tmpl = self.templates.get((exp, version, domain, template_id))  # type: ignore[arg-type]
        if known is None or tmpl is None or not tmpl.fast:
            return False
        if any(self.templates.get(t.key) is not t for t in known):
            return False
        if tmpl not in known and receive_us - tmpl.last_seen_us > self.limits.template_timeout_s * 1_000_000:
            return False  # expires here: ``_packet`` does that
        for t in known:
            self._refresh(t, receive_us)
        self.stats.packets[version] += 1
        if count := data_length // tmpl.record_length:
            call.in_batch.append((tmpl, p, data_start, count))
        return True

    def _lookup(self, exp: bytes | None, version: int, domain: int, template_id: int) -> Template | None:
        """The template a front-end candidate packet can be decoded with (fixed length, data)."""
        tmpl = self.templates.get((exp, version, domain, template_id))  # type: ignore[arg-type]
        return tmpl if tmpl is not None and tmpl.fast else None

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
        else:
            self.stats.errors["unknown_version"] += 1

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
        timeout_us = self.limits.template_timeout_s * 1_000_000
        for set_id, start, end in sets:
            if set_id >= 256:
                key = (exp, version, domain, set_id)
                tmpl = self.templates.get(key)
                if tmpl is not None and receive_us - tmpl.last_seen_us > timeout_us:
                    self._expire(key)
                    tmpl = None
                if tmpl is None:
                    self._hold(key, payload[start:end], call.context(pidx))
                else:
                    self._data(call, tmpl, payload, start, end, pidx, call.row)
            elif set_id in (template_set, options_set):
                self._templates(call, exp, version, domain, payload, start, end, set_id == options_set, receive_us)
            else:
                self.stats.errors["reserved_set_id"] += 1

    def _data(
        self, call: _Call, tmpl: Template, payload: bytes, start: int, end: int, pidx: int, row: int | None = None
    ) -> None:
        """A data set: options data read now, records gathered for ``_finish`` (``row``: the
        payload is that packet of the front end's batch)."""
        if tmpl.is_options:
            self._options_data(tmpl, payload, start, end)
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

    # --- templates and options -----------------------------------------------------------
    def _templates(
        self,
        call: _Call,
        exp: bytes,
        version: int,
        domain: int,
        payload: bytes,
        start: int,
        end: int,
        options: bool,
        receive_us: int,
    ) -> None:
        cache_key = (exp, version, domain, options, payload[start:end])
        known_set = self._template_sets.get(cache_key)
        if known_set is not None and all(self.templates.get(t.key) is t for t in known_set):
            for tmpl in known_set:  # the same bytes as last time: a refresh of each, nothing to parse
                self._refresh(tmpl, receive_us)
            return
        try:
            records = parse_template_set(
                payload, start, end, ipfix=version == 10, options=options,
                max_fields=self.limits.max_fields_per_template,
            )  # fmt: skip
        except TemplateError as exc:
            self.stats.errors[exc.reason] += 1
            return
        defined: list[Template] = []
        for template_id, fields, scope_count in records:
            if not fields:
                self._withdraw(exp, version, domain, template_id, options)
                continue
            key = (exp, version, domain, template_id)
            known = self.templates.get(key)
            if known is not None and known.fields == fields and known.is_options == options:
                self._refresh(known, receive_us)  # the common case, nothing to compile
                defined.append(known)
                continue
            if not self._admit(exp, known, receive_us):
                continue
            tmpl = Template(key, fields, scope_count, options, receive_us)
            self.templates[key] = tmpl
            self._epoch += 1
            self._exporters.add(exp)
            self.stats.templates = len(self.templates)
            self.stats.events["template_changed" if known else "template_learned"] += 1
            self._release(call, key, tmpl)
            defined.append(tmpl)
        if len(defined) == len(records):  # no withdrawal, nothing refused: same bytes, same outcome
            self._remember_set(cache_key, tuple(defined))

    def _refresh(self, tmpl: Template, receive_us: int) -> None:
        if receive_us < tmpl.last_seen_us:
            self._epoch += 1  # an earlier expiry time than the front end planned with
        tmpl.last_seen_us = receive_us

    def _remember_set(self, cache_key: tuple, defined: tuple[Template, ...]) -> None:
        """Cache a template set by its bytes (bounded: cleared when it grows past its budget)."""
        size = len(cache_key[-1])
        if len(self._template_sets) >= TEMPLATE_SET_CACHE or self._template_sets_bytes + size > TEMPLATE_SET_BYTES:
            self._template_sets.clear()
            self._template_sets_bytes = 0
        if size <= TEMPLATE_SET_BYTES:
            self._template_sets[cache_key] = defined
            self._template_sets_bytes += size

    def _admit(self, exp: bytes, known: Template | None, receive_us: int) -> bool:
        if known is not None:
            return True
        if len(self.templates) >= self.limits.max_templates:
            self._sweep(receive_us)
        if len(self.templates) >= self.limits.max_templates:
            self.stats.errors["template_limit"] += 1
            return False
        if exp not in self._exporters and len(self._exporters) >= self.limits.max_exporters:
            self._sweep(receive_us)
        if exp not in self._exporters and len(self._exporters) >= self.limits.max_exporters:
            self.stats.errors["exporter_limit"] += 1
            return False
        return True

    def _withdraw(self, exp: bytes, version: int, domain: int, template_id: int, options: bool) -> None:
        if version != 10:
            self.stats.errors["malformed"] += 1  # v9 has no withdrawal: an empty template is bad
            return
        if template_id in (2, 3):  # withdraw all (options) templates of the domain
            keys = [k for k, t in self.templates.items() if k[:3] == (exp, 10, domain) and t.is_options == options]
        else:
            keys = [(exp, 10, domain, template_id)]
        for key in keys:
            if self.templates.pop(key, None) is not None:
                self._epoch += 1
                self.stats.events["template_withdrawn"] += 1
        self.stats.templates = len(self.templates)

    def _sweep(self, receive_us: int) -> None:
        """Drop every template not re-announced within the timeout (when a cap is reached; at
        most once a second of receive time, so a flood of new templates cannot make it quadratic)."""
        if receive_us - self._last_sweep_us < 1_000_000:
            return
        self._last_sweep_us = receive_us
        cutoff = receive_us - self.limits.template_timeout_s * 1_000_000
        for key in [k for k, t in self.templates.items() if t.last_seen_us < cutoff]:
            self._expire(key)
        self._exporters = {key[0] for key in self.templates}

    def _expire(self, key: TemplateKey) -> None:
        self.templates.pop(key, None)
        self._epoch += 1
        self.stats.templates = len(self.templates)
        self.stats.events["template_expired"] += 1

    def _options_data(self, tmpl: Template, payload: bytes, start: int, end: int) -> None:
        """Options records are few: read sampling rates and boot times per record."""
        rows = self._rows(tmpl, payload, start, end)
        if not len(rows):
            return
        self.stats.events["options_records"] += len(rows)
        names = [n for n in rows.dtype.names]
        exp, _, domain, _ = tmpl.key
        for row in rows:
            values = {n: int(columns.widen(np.atleast_1d(row[n]).reshape(1, -1))[0]) for n in names
                      if not n.endswith(("addr4", "addr6"))}  # fmt: skip
            rate = options_rate(values)
            if rate > MAX_RATE:
                self.stats.errors["bad_sampling_rate"] += 1
            elif rate and len(self.samplers) < self.limits.max_sampler_entries:
                sampler = values.get("sampler_id", EXPORTER_WIDE)
                self.samplers[(exp, domain, sampler)] = rate
                self.stats.events["sampling_rate_learned"] += 1
            if (
                0 < values.get("system_init_ms", 0) < MAX_TIME_MS
                and len(self.system_init) < self.limits.max_sampler_entries
            ):
                self.system_init[(exp, domain)] = values["system_init_ms"]

    def _rows(self, tmpl: Template, payload: bytes, start: int, end: int) -> np.ndarray:
        if tmpl.fixed:
            size = tmpl.record_length
            count = (end - start) // size if size else 0
            return np.frombuffer(payload, tmpl.dtype, count, start)
        rows, _ = split_varlen_records(tmpl, payload, start, end)
        return np.frombuffer(b"".join(rows), tmpl.dtype) if rows else np.empty(0, tmpl.dtype)

    # --- data before template --------------------------------------------------------------
    def _hold(self, key: TemplateKey, body: bytes, ctx: tuple) -> None:
        limits = self.limits
        if len(body) > limits.max_pending_bytes:
            self.stats.errors["no_template_dropped"] += 1
            return
        while self.pending and (
            self.stats.pending >= limits.max_pending_sets
            or self.stats.pending_bytes + len(body) > limits.max_pending_bytes
        ):
            self._drop_oldest_pending()
        seq = self._pending_seq = self._pending_seq + 1
        self.pending[seq] = (key, body, ctx)
        self._pending_by_key.setdefault(key, []).append(seq)
        self.stats.pending += 1
        self.stats.pending_bytes += len(body)

    def _drop_oldest_pending(self) -> None:
        seq, (key, body, _) = self.pending.popitem(last=False)
        waiting = self._pending_by_key.get(key)
        if waiting:
            waiting.remove(seq)
            if not waiting:
                del self._pending_by_key[key]
        self.stats.pending -= 1
        self.stats.pending_bytes -= len(body)
        self.stats.errors["no_template_dropped"] += 1

    def _release(self, call: _Call, key: TemplateKey, tmpl: Template) -> None:
        """Decode the data sets that were waiting for ``key``, with their own packet context."""
        for seq in self._pending_by_key.pop(key, []):
            _, body, ctx = self.pending.pop(seq)
            self.stats.pending -= 1
            self.stats.pending_bytes -= len(body)
            pidx = call.add(*ctx)
            self._data(call, tmpl, body, 0, len(body), pidx)
            self.stats.events["pending_released"] += 1

    # --- vectorized finish -------------------------------------------------------------------
    def _finish(self, call: _Call, batch: frontend.Batch | None, fast: list[frontend.Group]) -> pa.RecordBatch:
        parts = [self._fast_columns(batch, group) for group in fast] if batch is not None else []
        parts += self._slow_columns(call)
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
        packet = packet_table(batch.recv[group.rows], batch.head[group.rows], ids, exporters, self._resolve, version)
        ctx = Context(packet, None, same, key)
        if tmpl is None and (cols := v5.flow_columns(recs, ctx)) is not None:
            return cols
        return self._group_columns(recs, tmpl, ctx, None)

    def _slow_columns(self, call: _Call) -> list[columns.Columns]:
        """Columns of what the per-packet path gathered (``_Call``)."""
        if not call.v5_chunks and not call.groups:
            return []
        slow = call.v5_chunks or any(group.bodies for group in call.groups.values())
        packet = self._call_table(call.recvs, call.heads, call.exps) if slow else {}
        parts: list[columns.Columns] = []
        if call.v5_chunks:
            recs = np.frombuffer(b"".join(call.v5_chunks), v5.RECORD)
            ctx = Context(packet, np.asarray(call.v5_pidx, np.int64), _counts(call.v5_chunks, v5.RECORD_LEN))
            parts.append(self._group_columns(recs, None, ctx, None))
        for tmpl, group in call.groups.items():
            if group.chunks:
                recs = np.frombuffer(b"".join(group.chunks), tmpl.dtype)
                counts = _counts(group.chunks, tmpl.record_length)
                own = self._call_table(group.recvs, group.heads, [tmpl.key[0]])
                parts.append(self._group_columns(recs, tmpl, Context(own, None, counts, tmpl.key), None))
            if group.bodies:
                recs, sections, pidx = self._slow_records(tmpl, group.bodies)
                if len(recs):
                    parts.append(self._group_columns(recs, tmpl, Context(packet, pidx, None, tmpl.key), sections))
        return parts

    def _call_table(self, recvs: list[int], heads: list[bytes], exps: list[bytes]) -> dict[str, Any]:
        """``packet_table`` from the per-packet path's lists (``exps``: one per packet, or one for all)."""
        head = np.frombuffer(b"".join(heads), np.uint8).reshape(-1, frontend.HEAD_LEN)
        ids, distinct = frontend.index(exps)
        return packet_table(np.array(recvs, np.int64), head, ids, distinct, self._resolve)

    def _resolve(self, exp: bytes, domain: int, v5_rate: int) -> tuple[int, int]:
        """Fallback sampling rate (see ``sampling.py``) and boot time of one exporter and domain."""
        rate = self.samplers.get((exp, domain, EXPORTER_WIDE)) or v5_rate or self.sampling_defaults.rate_for(exp)
        return rate, self.system_init.get((exp, domain), 0)

    def _slow_records(self, tmpl: Template, bodies: list) -> tuple[np.ndarray, list[bytes], np.ndarray]:
        rows, sections, pidx = [], [], []
        for payload, start, end, p in bodies:
            r, s = split_varlen_records(tmpl, payload, start, end)
            rows += r
            sections += s
            pidx += [p] * len(r)
        recs = np.frombuffer(b"".join(rows), tmpl.dtype) if rows else np.empty(0, tmpl.dtype)
        return recs, sections, np.asarray(pidx, np.int64)

    def _group_columns(
        self, recs: np.ndarray, tmpl: Template | None, ctx: Context, sections: list[bytes] | None
    ) -> columns.Columns:
        # Reduced-size fields of odd widths (3, 5, 6, 7 bytes) arrive as byte columns: widen them
        # once here so every rule below sees one integer per record.
        values = {name: columns.widen(recs[name]) if recs[name].ndim == 2 else recs[name] for name in recs.dtype.names}
        cols = columns.forward(values, ctx, sections if tmpl is not None and tmpl.frame_section is not None else None)
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

    def _rates(self, values: dict[str, np.ndarray], ctx: Context) -> np.ndarray | int:
        """Per-record sampling rate (see ``sampling.py`` for the order): an int when all the same."""
        in_record = any(role in values for role in SAMPLING_ROLES)
        if not in_record:
            return ctx.shared("rate")
        rate = record_rate(values, ctx.n)
        if (sampler := values.get("sampler_id")) is not None and self.samplers:
            sid = (columns.widen(sampler).astype(np.uint64) & np.uint64(0xFFFFFFFF)).astype(np.int64)
            combo = (ctx["exdom"] << 32) | sid
            uniq, inverse = np.unique(combo, return_inverse=True)
            owners = ctx.packet["_owners"]  # exdom index -> (exporter, domain)
            found = [self.samplers.get((*owners[int(u) >> 32], int(u) & 0xFFFFFFFF), 0) for u in uniq]
            table = np.array(found, np.int64)
            rate = np.where(rate == 0, table[inverse.reshape(-1)], rate)
        return np.where(rate == 0, ctx["rate"], rate)


def _counts(chunks: list[bytes], record_length: int) -> np.ndarray:
    """Records per chunk (chunks hold whole records only)."""
    return np.fromiter(map(len, chunks), np.int64, len(chunks)) // record_length
