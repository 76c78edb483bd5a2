"""The template store: templates per (exporter, version, domain, id), their expiry, and what
options data teaches (sampling rates per sampler, exporter boot times).

Templates expire ``DecoderLimits.template_timeout_s`` after their last announcement; expired ones
are swept when a cap is reached. ``epoch`` moves whenever the template a data set would be
decoded with may have changed (learned, changed, withdrawn, expired, refreshed back in time), so
the decoder knows when the front end's plan must be made again. Template sets seen before are
remembered by their bytes: a refresh (the same bytes again, the common case) costs one lookup.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from ingest.decode import columns
from ingest.decode.limits import DecoderLimits, DecoderStats
from ingest.decode.sampling import EXPORTER_WIDE, MAX_RATE, SamplingDefaults, options_rate
from ingest.decode.templates import Template, TemplateError, TemplateKey, parse_template_set, split_varlen_records

TEMPLATE_SET_CACHE = 4096  # template sets remembered by their bytes (refreshes skip parsing) ...
TEMPLATE_SET_BYTES = 4 << 20  # ... and the bytes they may hold
MAX_TIME_MS = 1 << 44  # year 2527: larger boot times are garbage
Learned = Callable[[TemplateKey, Template], None]  # told of each template learned or changed


class TemplateStore:
    """Templates, options-learned sampling rates and boot times of every exporter, bounded."""

    def __init__(self, limits: DecoderLimits, stats: DecoderStats, sampling_defaults: SamplingDefaults) -> None:
        self.limits, self.stats, self.sampling_defaults = limits, stats, sampling_defaults
        self.templates: dict[TemplateKey, Template] = {}
        self.samplers: dict[tuple[bytes, int, int], int] = {}  # (exporter, domain, sampler id) -> rate
        self.system_init: dict[tuple[bytes, int], int] = {}  # (exporter, domain) -> boot time ms
        self.exporters: set[bytes] = set()
        self._last_sweep_us = -(1 << 62)
        # (exporter, version, domain, options, set bytes) -> the templates that set defined
        self._template_sets: dict[tuple, tuple[Template, ...]] = {}
        self._template_sets_bytes = 0
        self.epoch = 0

    @property
    def timeout_us(self) -> float:
        return self.limits.template_timeout_s * 1_000_000

    def fast(self, exp: bytes | None, version: int, domain: int, template_id: int) -> Template | None:
        """The template a front-end candidate packet can be decoded with (fixed length, data)."""
        tmpl = self.templates.get((exp, version, domain, template_id))  # type: ignore[arg-type]
        return tmpl if tmpl is not None and tmpl.fast else None

    def known_set(self, cache_key: tuple) -> tuple[Template, ...] | None:
        """The templates a template set of these bytes defined last time (None: not remembered)."""
        return self._template_sets.get(cache_key)

    def current(self, key: TemplateKey, receive_us: int) -> Template | None:
        """The template for a data set received at ``receive_us`` (expired ones are removed)."""
        tmpl = self.templates.get(key)
        if tmpl is not None and receive_us - tmpl.last_seen_us > self.timeout_us:
            self.expire(key)
            return None
        return tmpl

    def learn(
        self, exp: bytes, version: int, domain: int, body: tuple[bytes, int, int], options: bool, receive_us: int,
        learned: Learned,
    ) -> None:  # fmt: skip
        """Parse a template set ``body`` = (payload, start, end); ``learned`` is told of each new
        or changed template as soon as it is in force (data waiting for it can then decode)."""
        payload, start, end = body
        cache_key = (exp, version, domain, options, payload[start:end])
        known_set = self._template_sets.get(cache_key)
        if known_set is not None and all(self.templates.get(t.key) is t for t in known_set):
            for tmpl in known_set:  # the same bytes as last time: a refresh of each, nothing to parse
                self.refresh(tmpl, receive_us)
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
                self.refresh(known, receive_us)  # the common case, nothing to compile
                defined.append(known)
                continue
            if not self._admit(exp, known, receive_us):
                continue
            tmpl = Template(key, fields, scope_count, options, receive_us)
            self.templates[key] = tmpl
            self.epoch += 1
            self.exporters.add(exp)
            self.stats.templates = len(self.templates)
            self.stats.events["template_changed" if known else "template_learned"] += 1
            learned(key, tmpl)
            defined.append(tmpl)
        if len(defined) == len(records):  # no withdrawal, nothing refused: same bytes, same outcome
            self._remember_set(cache_key, tuple(defined))

    def refresh(self, tmpl: Template, receive_us: int) -> None:
        if receive_us < tmpl.last_seen_us:
            self.epoch += 1  # an earlier expiry time than the front end planned with
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
        if exp not in self.exporters and len(self.exporters) >= self.limits.max_exporters:
            self._sweep(receive_us)
        if exp not in self.exporters and len(self.exporters) >= self.limits.max_exporters:
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
                self.epoch += 1
                self.stats.events["template_withdrawn"] += 1
        self.stats.templates = len(self.templates)

    def _sweep(self, receive_us: int) -> None:
        """Drop every template not re-announced within the timeout (when a cap is reached; at
        most once a second of receive time, so a flood of new templates cannot make it quadratic)."""
        if receive_us - self._last_sweep_us < 1_000_000:
            return
        self._last_sweep_us = receive_us
        cutoff = receive_us - self.timeout_us
        for key in [k for k, t in self.templates.items() if t.last_seen_us < cutoff]:
            self.expire(key)
        self.exporters = {key[0] for key in self.templates}

    def expire(self, key: TemplateKey) -> None:
        self.templates.pop(key, None)
        self.epoch += 1
        self.stats.templates = len(self.templates)
        self.stats.events["template_expired"] += 1

    def options_data(self, tmpl: Template, payload: bytes, start: int, end: int) -> None:
        """Options records are few: read sampling rates and boot times per record."""
        rows = _rows(tmpl, payload, start, end)
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

    def resolve(self, exp: bytes, domain: int, v5_rate: int) -> tuple[int, int]:
        """Fallback sampling rate (see ``sampling.py``) and boot time of one exporter and domain."""
        rate = self.samplers.get((exp, domain, EXPORTER_WIDE)) or v5_rate or self.sampling_defaults.rate_for(exp)
        return rate, self.system_init.get((exp, domain), 0)


def _rows(tmpl: Template, payload: bytes, start: int, end: int) -> np.ndarray:
    if tmpl.fixed:
        size = tmpl.record_length
        count = (end - start) // size if size else 0
        return np.frombuffer(payload, tmpl.dtype, count, start)
    rows, _ = split_varlen_records(tmpl, payload, start, end)
    return np.frombuffer(b"".join(rows), tmpl.dtype) if rows else np.empty(0, tmpl.dtype)
