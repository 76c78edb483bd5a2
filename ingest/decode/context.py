"""Packet context: what a record inherits from its packet, per packet and then per record.

``packet_table`` reads, for a group of packets, everything a record needs from its packet: the
receive time, the exporter, the version, the observation domain, the header clock (export time
in µs and sysUptime) and the fallback sampling rate and exporter boot time (resolved once per
distinct exporter, domain and v5 header rate, not per packet).

``Context`` is the per-record view ``columns.py`` reads: ``ctx["recv"]`` is one value per
record. Per-packet arrays are expanded with ``np.repeat`` only when a column asks for them;
what one group of records shares (its template's exporter, version and domain) is filled
directly, and ``shared`` gives a per-packet value as a scalar when it is the same everywhere (the
sampling rate usually is).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from ingest.decode.columns import constant
from ingest.decode.templates import TemplateKey

# (exporter, domain, v5 header rate) -> (sampling rate, exporter boot time in ms or 0)
Resolver = Callable[[bytes, int, int], tuple[int, int]]


def packet_table(
    recv: np.ndarray,
    head: np.ndarray,
    exporter_ids: np.ndarray | None,
    exporters: list[bytes],
    resolve: Resolver,
    version: int | None = None,
) -> dict[str, Any]:
    """Per-packet arrays from receive times (int64), the 24-byte headers (``(k, 24) uint8``) and
    exporters (``exporters[exporter_ids[i]]``, or ``exporters[0]`` for all when ids is None).
    ``version``: the packets' version when they all share one (fewer passes)."""
    table: dict[str, Any] = {"recv": recv, "_single_exporter": exporters[0] if exporter_ids is None else None}
    table.update(_clock(head, version))
    if exporter_ids is not None:
        table["exporter"] = np.frombuffer(b"".join(exporters), "V16")[exporter_ids]
    domain, v5_rate = table.pop("_domain"), table.pop("_v5_rate")
    firsts, inverse = _distinct(exporter_ids, len(exporters), domain, v5_rate)
    rates, inits, owners = [], [], []
    for i in firsts.tolist():
        exp = exporters[0 if exporter_ids is None else exporter_ids[i]]
        dom = int(domain[i])
        rate, init = resolve(exp, dom, int(v5_rate[i]))
        rates.append(rate)
        inits.append(init)
        owners.append((exp, dom))
    table["rate"] = np.array(rates, np.int64)[inverse]
    table["system_init_ms"] = np.array(inits, np.int64)[inverse]
    table["exdom"] = inverse.astype(np.int64)  # index into ``_owners``
    table["_owners"] = owners  # exdom -> (exporter, domain)
    return table


def _clock(head: np.ndarray, version: int | None) -> dict[str, np.ndarray]:
    """Header fields per packet: version, export time (s and µs), sysUptime (ms, ``uint32``),
    and, for the rate lookup, the domain and the v5 sampling interval (``_domain``, ``_v5_rate``)."""
    w16, w32 = head.view(">u2"), head.view(">u4")
    k = len(head)
    if version is None:
        version_ = head[:, 1]  # 5, 9 or 10: only packets of those versions get here
        v9, v10, v5 = version_ == 9, version_ == 10, version_ == 5
        secs = np.where(v10, w32[:, 1], w32[:, 2]).astype(np.int64)
        nsecs = np.where(v5, w32[:, 3], 0).astype(np.int64)
        export_us = secs * 1_000_000 + nsecs // 1000
        return {
            "version": version_,
            "secs": secs,
            "export_us": export_us,
            "uptime": np.where(v10, 0, w32[:, 1]).astype(np.uint32),  # ms; IPFIX headers have none
            "_domain": np.where(v9, w32[:, 4], np.where(v10, w32[:, 3], 0)).astype(np.uint32),
            "_v5_rate": np.where(v5, w16[:, 11] & 0x3FFF, 0).astype(np.int64),
        }
    secs = (w32[:, 1] if version == 10 else w32[:, 2]).astype(np.int64)
    export_us = secs * 1_000_000
    if version == 5:
        export_us += w32[:, 3].astype(np.int64) // 1000  # the header's residual nanoseconds
    return {
        "version": np.full(k, version, np.uint8),
        "secs": secs,
        "export_us": export_us,
        "uptime": np.zeros(k, np.uint32) if version == 10 else w32[:, 1].astype(np.uint32),
        "_domain": {5: np.zeros(k, np.uint32), 9: w32[:, 4], 10: w32[:, 3]}[version],
        "_v5_rate": (w16[:, 11] & 0x3FFF).astype(np.int64) if version == 5 else np.zeros(k, np.int64),
    }


def _distinct(
    exporter_ids: np.ndarray | None, n_exporters: int, domain: np.ndarray, v5_rate: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """(first row of each distinct (exporter, domain, v5 rate), row -> distinct index)."""
    packed = (domain.astype(np.int64) << 14) | v5_rate  # the v5 rate has 14 bits
    if exporter_ids is None and (packed == packed[0]).all():
        return np.zeros(1, np.intp), np.zeros(len(packed), np.intp)
    if exporter_ids is not None:
        if n_exporters < 1 << 17:  # 46 bits above: fits one int64
            packed = packed | (exporter_ids.astype(np.int64) << 46)
        else:
            keys = np.empty(len(packed), [("exp", "<i8"), ("rest", "<i8")])
            keys["exp"], keys["rest"] = exporter_ids, packed
            packed = keys.view("V16")
    _, firsts, inverse = np.unique(packed, return_index=True, return_inverse=True)
    return firsts, inverse.reshape(-1)


class Context:
    """Per-record values of a group of records (``n`` of them) from a ``packet_table``.

    ``rows`` picks the table rows of the group (None: all, in order); ``counts`` is the number
    of records per row (an int: the same for all; None: one record per row). ``key`` is the
    template's key: one exporter, version and domain for the whole group (None: NetFlow v5).
    """

    def __init__(
        self,
        packet: dict[str, Any],
        rows: np.ndarray | None,
        counts: np.ndarray | int | None,
        key: TemplateKey | None = None,
    ) -> None:
        self.packet, self._rows, self._counts = packet, rows, counts
        k = len(packet["recv"]) if rows is None else len(rows)
        if counts is None:
            self.n = k
        else:
            self.n = k * counts if isinstance(counts, int) else int(counts.sum())
        if key is None:  # NetFlow v5: one version, no domain; often a single exporter per call
            key = (packet["_single_exporter"], 5, 0, 0)
        exp, self.version, domain, _ = key
        self.has_uptime = self.version != 10  # v5 and v9 headers carry sysUptime
        self._constant = {"version": (self.version, np.uint8), "domain": (domain, np.uint32)}
        self._exporter = exp
        self._cache: dict[str, np.ndarray] = {}

    def per_packet(self, name: str) -> np.ndarray:
        """The group's rows of a per-packet array (not expanded to records)."""
        values = self.packet[name]
        return values if self._rows is None else values[self._rows]

    def __getitem__(self, name: str) -> np.ndarray:
        value = self._cache.get(name)
        if value is not None:
            return value
        if name == "exporter" and self._exporter is not None:
            value = constant(self._exporter, "V16", self.n)
        elif name in self._constant:
            scalar, dtype = self._constant[name]
            value = constant(scalar, dtype, self.n)
        else:
            value = self.per_packet(name)
            if self._counts is not None:
                value = np.repeat(value, self._counts)
        self._cache[name] = value
        return value

    def get(self, name: str, default: Any = None) -> np.ndarray | None:
        """Optional context (``system_init_ms``): None when no packet has it."""
        if name not in self.packet or not self.per_packet(name).any():
            return default
        return self[name]

    def shared(self, name: str) -> np.ndarray | int:
        """A per-packet value as one int when every record has the same (the sampling rate
        usually), else per record."""
        values = self.per_packet(name)
        first = values[0]
        return int(first) if (values == first).all() else self[name]
