"""The ``Decoder``: NetFlow v5, v9 and IPFIX payloads in, ``FLOW_SCHEMA`` record batches out.

How a ``decode_many`` call works (the fast path):

1. Per packet, in Python with ``struct`` (about a µs): the common packet (v5, or one data set of
   a known fixed-length template) is handled inline in ``decode_many``: its records' bytes are
   appended to the group of its template, and its first 24 bytes (the header) kept. Any other
   packet goes through ``_packet``: the sets are walked by their lengths and validated before
   anything in the packet is used (a malformed packet yields no records), templates and options
   data are learned, data sets are grouped the same way.
2. Per group, vectorized: join the bytes, view them with the template's structured dtype in one
   ``np.frombuffer``, decode every packet header at once (``_HEAD``), spread the packet context
   (receive time, exporter, header clock, sampling rate) to records with ``np.repeat`` and build
   the columns (``columns.py``).
3. Concatenate every group and build one Arrow batch.

Data sets whose template is unknown wait in a bounded buffer (``DecoderLimits.max_pending_*``)
and are decoded as soon as the template arrives. Nothing in here raises on bad input: problems
are counted in ``stats.errors`` by reason and the valid part is returned.
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

from ingest.decode import columns, ipfix, v5, v9
from ingest.decode.fields import SAMPLING_ROLES
from ingest.decode.sampling import EXPORTER_WIDE, SamplingDefaults, options_rate, record_rate
from ingest.decode.templates import Template, TemplateError, TemplateKey, parse_template_set, split_varlen_records
from ingest.schema import empty_flows

_SET = struct.Struct("!HH")
_V9_FAST = struct.Struct("!16xIHH")  # source id, first set id, first set length
_IPFIX_FAST = struct.Struct("!2xH8xIHH")  # message length, domain, first set id, first set length
MAX_RATE = 0xFFFFFFFF  # the sampling_rate column is uint32
# The first 24 bytes of every packet, read as words: v5 (uptime, secs, nsecs, .., rate),
# v9 (uptime, secs, sequence, source id), IPFIX (secs, sequence, domain).
_HEAD = np.dtype(
    {
        "names": ["version", "w1", "w2", "w3", "w4", "sampling"],
        "formats": [">u2", ">u4", ">u4", ">u4", ">u4", ">u2"],
        "offsets": [0, 4, 8, 12, 16, 22],
        "itemsize": 24,
    }
)
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
    """Record bytes of one template gathered across the packets of a call."""

    __slots__ = ("bodies", "chunks", "heads", "recvs")

    def __init__(self) -> None:
        # Fixed-length path, one entry per data set: whole records only (the record count is
        # len // record length), the receive time and the first 24 bytes of its packet. Kept per
        # group, not per call: the exporter, version and domain are the template's.
        self.chunks: list[bytes] = []
        self.recvs: list[int] = []
        self.heads: list[bytes] = []
        self.bodies: list[tuple[bytes, int, int, int]] = []  # slow path: (payload, start, end, pidx)


class _Call:
    """Accumulators of one ``decode_many`` call."""

    def __init__(self) -> None:
        # per packet: receive µs, exporter, first 24 bytes (headers are decoded vectorized later);
        # three lists rather than one list of tuples: cheaper to append and to turn into arrays
        self.recvs: list[int] = []
        self.exps: list[bytes] = []
        self.heads: list[bytes] = []
        self.groups: dict[Template, _Group] = {}
        self.v5_chunks: list[bytes] = []
        self.v5_pidx: list[int] = []

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
        self.stats = DecoderStats()
        self.last_internal_error = ""  # message of the last bug caught by the safety nets

    # --- public API ----------------------------------------------------------------------
    def decode(self, payload: bytes, exporter: Exporter, receive_time_us: int) -> pa.RecordBatch:
        """Decode one UDP payload from ``exporter`` (16-byte or text address)."""
        return self.decode_many([(exporter, payload, receive_time_us)])

    def decode_many(self, packets: Sequence[tuple[Exporter, bytes, int]]) -> pa.RecordBatch:
        """Decode ``(exporter, payload, receive_time_us)`` packets in order, vectorized per template.

        The loop body is the hot path (a couple of µs per packet): v5 packets and v9/IPFIX packets
        made of one data set of a known fixed-length template are handled inline; anything else
        (templates, options, several sets, errors) goes through ``_packet``.
        """
        call = _Call()
        recvs, exps, heads, groups, templates = call.recvs, call.exps, call.heads, call.groups, self.templates
        v5_pidx, v5_chunks = call.v5_pidx, call.v5_chunks
        timeout_us = self.limits.template_timeout_s * 1_000_000
        counts = [0] * 11  # packets by version (5, 9, 10) on the fast path
        last_exporter, last_exp = None, None
        last_key, tmpl, add_chunk, add_recv_g, add_head_g = None, None, None, None, None
        add_recv, add_exp, add_head = recvs.append, exps.append, heads.append  # bound once: hot loop
        for exporter, payload, receive_us in packets:
            if exporter is not last_exporter:
                last_exporter = exporter
                last_exp = (
                    exporter if type(exporter) is bytes and len(exporter) == 16 else self._exporter_bytes(exporter)
                )
            exp = last_exp
            if exp is None:
                self.stats.errors["bad_exporter"] += 1
                continue
            if type(payload) is not bytes:
                payload = bytes(payload)
            size = len(payload)
            if size >= 24 and payload[0] == 0:
                version = payload[1]
                if version == 9:  # domain and the first set header in one unpack
                    domain, set_id, length = _V9_FAST.unpack_from(payload)
                    start, end = 24, size
                elif version == 10:
                    end, domain, set_id, length = _IPFIX_FAST.unpack_from(payload)
                    start = 20
                elif version == 5:
                    count = (payload[2] << 8) | payload[3]
                    if count and 24 + 48 * count <= size:
                        v5_pidx.append(len(recvs))
                        add_recv(receive_us)
                        add_exp(exp)
                        add_head(payload[:24])
                        v5_chunks.append(payload[24 : 24 + 48 * count])
                        counts[5] += 1
                        continue
                    start = end = length = -1
                else:
                    start = end = length = -1
                if start - 4 + length == end <= size and end > 0:  # exactly one set filling the packet
                    key = (exp, version, domain, set_id)
                    if key != last_key:  # consecutive packets of one template: skip the lookups
                        last_key, tmpl = key, templates.get(key)
                        if tmpl is not None and tmpl.fast:
                            group = groups.get(tmpl)
                            if group is None:
                                group = groups[tmpl] = _Group()
                            add_chunk, add_recv_g, add_head_g, record_length = (
                                group.chunks.append,
                                group.recvs.append,
                                group.heads.append,
                                tmpl.record_length,
                            )
                    if tmpl is not None and tmpl.fast and receive_us - tmpl.last_seen_us <= timeout_us:
                        add_chunk(payload[start : start + (length - 4) // record_length * record_length])
                        add_recv_g(receive_us)
                        add_head_g(payload[:24])
                        counts[version] += 1
                        continue
            last_key = None  # the slow path may learn, change or withdraw templates
            try:
                self._packet(call, exp, payload, receive_us)
            except (struct.error, IndexError, ValueError, OverflowError, TypeError) as exc:
                # A parser bug, never expected on any input: counted (the fuzz run asserts zero).
                self.stats.errors["internal"] += 1
                self.stats.events[f"internal:{type(exc).__name__}"] += 1
                self.last_internal_error = f"{type(exc).__name__}: {exc}"
        for version in (5, 9, 10):
            self.stats.packets[version] += counts[version]
        try:
            return self._finish(call)
        except (ValueError, OverflowError, TypeError, IndexError) as exc:
            # Safety net like the per-packet one: a bug must not take the collector down.
            self.stats.errors["internal"] += 1
            self.stats.events[f"internal:{type(exc).__name__}"] += 1
            self.last_internal_error = f"{type(exc).__name__}: {exc}"
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
                addr = ipaddress.IPv6Address(b"\x00" * 10 + b"\xff\xff" + bytes(exporter))
            else:
                parsed = ipaddress.ip_address(str(exporter))
                addr = parsed if parsed.version == 6 else ipaddress.IPv6Address(f"::ffff:{parsed}")
            result: bytes | None = addr.packed
        except ValueError:
            result = None
        if len(self._addr_cache) < 65536:
            self._addr_cache[exporter] = result
        return result

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
                    self._data(call, tmpl, payload, start, end, pidx)
            elif set_id in (template_set, options_set):
                self._templates(call, exp, version, domain, payload, start, end, set_id == options_set, receive_us)
            else:
                self.stats.errors["reserved_set_id"] += 1

    def _data(self, call: _Call, tmpl: Template, payload: bytes, start: int, end: int, pidx: int) -> None:
        if tmpl.is_options:
            self._options_data(tmpl, payload, start, end)
            return
        group = call.groups.get(tmpl)
        if group is None:
            group = call.groups[tmpl] = _Group()
        if tmpl.slow:
            group.bodies.append((payload, start, end, pidx))
            return
        size = tmpl.record_length
        count = (end - start) // size if size else 0
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
        try:
            records = parse_template_set(
                payload, start, end, ipfix=version == 10, options=options,
                max_fields=self.limits.max_fields_per_template,
            )  # fmt: skip
        except TemplateError as exc:
            self.stats.errors[exc.reason] += 1
            return
        for template_id, fields, scope_count in records:
            if not fields:
                self._withdraw(exp, version, domain, template_id, options)
                continue
            key = (exp, version, domain, template_id)
            known = self.templates.get(key)
            if known is not None and known.fields == fields and known.is_options == options:
                known.last_seen_us = receive_us  # a refresh: the common case, nothing to compile
                continue
            if not self._admit(exp, known, receive_us):
                continue
            tmpl = Template(key, fields, scope_count, options, receive_us)
            self.templates[key] = tmpl
            self._exporters.add(exp)
            self.stats.templates = len(self.templates)
            self.stats.events["template_changed" if known else "template_learned"] += 1
            self._release(call, key, tmpl)

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
    def _finish(self, call: _Call) -> pa.RecordBatch:
        if not call.recvs and not call.groups:
            return empty_flows()
        packet = self._packet_arrays(call.recvs, call.exps, call.heads) if call.recvs else {}
        parts: list[columns.Columns] = []
        if call.v5_chunks:
            recs = np.frombuffer(b"".join(call.v5_chunks), v5.RECORD)
            ctx = _Context(packet, np.asarray(call.v5_pidx, np.int64), _counts(call.v5_chunks, v5.RECORD_LEN))
            parts.append(self._group_columns(recs, None, ctx, None))
        for tmpl, group in call.groups.items():
            if group.chunks:
                recs = np.frombuffer(b"".join(group.chunks), tmpl.dtype)
                counts = _counts(group.chunks, tmpl.record_length)
                own = self._packet_arrays(group.recvs, [tmpl.key[0]] * len(group.recvs), group.heads)
                ctx = _Context(own, own["pidx"], counts, tmpl.key)
                parts.append(self._group_columns(recs, tmpl, ctx, None))
            if group.bodies:
                recs, sections, pidx = self._slow_records(tmpl, group.bodies)
                if len(recs):
                    parts.append(self._group_columns(recs, tmpl, _Context(packet, pidx, None, tmpl.key), sections))
        parts = [p for p in parts if len(p["bytes"][0])]
        if not parts:
            return empty_flows()
        batch = columns.to_batch(columns.concat(parts))
        self.stats.records += batch.num_rows
        return batch

    def _packet_arrays(self, recv: list[int], exps: list[bytes], heads: list[bytes]) -> dict[str, Any]:
        """Per-packet context arrays from receive times, exporters and the 24-byte headers."""
        head = np.frombuffer(b"".join(heads), _HEAD)
        version = head["version"].astype(np.uint8)
        v9, v10, v5 = version == 9, version == 10, version == 5
        w1, w2, w3 = (head[f"w{i}"].astype(np.int64) for i in (1, 2, 3))
        arrays: dict[str, Any] = {
            "recv": np.array(recv, np.int64),
            "exporter": np.frombuffer(b"".join(exps), "V16"),
            "version": version,
            "domain": np.where(v9, head["w4"], np.where(v10, head["w3"], 0)).astype(np.uint32),
            "secs": np.where(v10, w1, w2),
            "uptime": np.where(v10, 0, w1),
            "nsecs": np.where(v5, w3, 0),
            "pidx": np.arange(len(recv), dtype=np.int64),
        }
        v5_rate = np.where(v5, head["sampling"] & 0x3FFF, 0).astype(np.int64)
        exps, domain = list(exps), arrays["domain"].tolist()
        arrays["has_uptime"] = arrays["version"] != 10
        # Fallback rate and boot time per distinct (exporter, domain, v5 header rate): one
        # np.unique over packed keys, then dict lookups for the few distinct ones.
        single = exps[0] if exps.count(exps[0]) == len(exps) else None
        if single is not None and (arrays["domain"] == domain[0]).all() and (v5_rate == v5_rate[0]).all():
            first, inverse = np.zeros(1, np.int64), np.zeros(len(recv), np.int64)  # one template's group
        else:
            keys = np.empty(len(recv), [("exp", "V16"), ("dom", "<u4"), ("rate5", "<u4")])
            keys["exp"], keys["dom"], keys["rate5"] = arrays["exporter"], arrays["domain"], v5_rate
            _, first, inverse = np.unique(keys.view("V24"), return_index=True, return_inverse=True)
        rates, inits, owners = [], [], []
        for i in first.tolist():
            exp, dom, rate5 = exps[i], domain[i], int(v5_rate[i])
            rates.append(self.samplers.get((exp, dom, EXPORTER_WIDE)) or rate5 or self.sampling_defaults.rate_for(exp))
            inits.append(self.system_init.get((exp, dom), 0))
            owners.append((exp, dom))
        inverse = inverse.reshape(-1)
        arrays["rate"] = np.array(rates, np.int64)[inverse]
        arrays["system_init_ms"] = np.array(inits, np.int64)[inverse]
        arrays["exdom"] = inverse.astype(np.int64)
        arrays["_owners"] = owners  # exdom -> (exporter, domain)
        arrays["_single_exporter"] = single
        return arrays

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
        self, recs: np.ndarray, tmpl: Template | None, ctx: _Context, sections: list[bytes] | None
    ) -> columns.Columns:
        # Reduced-size fields of odd widths (3, 5, 6, 7 bytes) arrive as byte columns: widen them
        # once here so every rule below sees one integer per record.
        values = {name: columns.widen(recs[name]) if recs[name].ndim == 2 else recs[name] for name in recs.dtype.names}
        cols = columns.forward(values, ctx, sections if tmpl is not None and tmpl.frame_section is not None else None)
        rate, unsampled = self._rates(values, ctx) if tmpl is not None else (ctx["rate"], ctx.all_one("rate"))
        reverse = columns.reverse(cols, values)
        keep = columns.nsel_keep(values, cols)
        forward_rate = rate
        if keep is not None and not keep.all():
            self.stats.events["nsel_create_skipped"] += int((~keep).sum())
            cols = columns.select(cols, keep)
            forward_rate = rate[keep]
        columns.scale(cols, forward_rate, unsampled)
        if reverse is None:
            return cols
        rev_cols, rev_keep = reverse
        self.stats.events["reverse_records"] += len(rev_cols["bytes"][0])
        columns.scale(rev_cols, rate[rev_keep], unsampled)
        return columns.concat([cols, rev_cols])

    def _rates(self, values: dict[str, np.ndarray], ctx: _Context) -> tuple[np.ndarray, bool]:
        """Per-record sampling rate (see ``sampling.py`` for the order) and whether all are 1."""
        in_record = any(role in values for role in SAMPLING_ROLES)
        if not in_record:
            return ctx["rate"], ctx.all_one("rate")
        rate = record_rate(values, ctx.n)
        if (sampler := values.get("sampler_id")) is not None and self.samplers:
            sid = (columns.widen(sampler).astype(np.uint64) & np.uint64(0xFFFFFFFF)).astype(np.int64)
            combo = (ctx["exdom"] << 32) | sid
            uniq, inverse = np.unique(combo, return_inverse=True)
            owners = ctx.packet["_owners"]  # exdom index -> (exporter, domain)
            found = [self.samplers.get((*owners[int(u) >> 32], int(u) & 0xFFFFFFFF), 0) for u in uniq]
            table = np.array(found, np.int64)
            rate = np.where(rate == 0, table[inverse], rate)
        rate = np.where(rate == 0, ctx["rate"], rate)
        return rate, False


def _counts(chunks: list[bytes], record_length: int) -> np.ndarray:
    """Records per chunk (chunks hold whole records only)."""
    return np.fromiter(map(len, chunks), np.int64, len(chunks)) // record_length


class _Context:
    """Per-packet values seen per record, expanded (``np.repeat``) only when a column needs them."""

    def __init__(
        self, packet: dict[str, Any], rows: np.ndarray, counts: np.ndarray | None, key: TemplateKey | None = None
    ) -> None:
        self.packet, self._rows, self._counts = packet, rows, counts
        self.n = int(counts.sum()) if counts is not None else len(rows)
        self._cache: dict[str, np.ndarray] = {}
        self._constant: dict[str, Any] = {}
        self._exporter: bytes | None = None
        if key is None:  # NetFlow v5: one version, no domain; often a single exporter per call
            key = (packet["_single_exporter"], 5, 0, 0)
        exp, version, domain, _ = key  # one template: the same exporter, version and domain throughout
        self._constant = {"version": (version, np.uint8), "domain": (domain, np.uint32),
                          "has_uptime": (version != 10, bool)}  # fmt: skip
        self._exporter = exp

    def __getitem__(self, name: str) -> np.ndarray:
        value = self._cache.get(name)
        if value is None and name == "exporter" and self._exporter is not None:
            value = self._cache[name] = np.frombuffer(self._exporter * self.n, "V16")  # fast fill
        if value is None and name in self._constant:
            scalar, dtype = self._constant[name]
            value = self._cache[name] = np.full(self.n, scalar, dtype)
        if value is None:
            per_packet = self.packet[name][self._rows]
            value = np.repeat(per_packet, self._counts) if self._counts is not None else per_packet
            self._cache[name] = value
        return value

    def get(self, name: str, default: Any = None) -> np.ndarray | None:
        """Optional context (``nsecs``, ``system_init_ms``): None when no packet has it."""
        if name not in self.packet or not self.packet[name][self._rows].any():
            return default
        return self[name]

    def all_one(self, name: str) -> bool:
        return bool((self.packet[name][self._rows] == 1).all())
