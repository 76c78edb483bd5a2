"""Sampling rates: what each record's bytes and packets are multiplied by.

Resolution for a NetFlow v9 / IPFIX record, first match wins:

1. a rate inside the record itself: ``samplingInterval`` (IE 34), ``samplerRandomInterval``
   (IE 50), or ``samplingPacketInterval``/``samplingPacketSpace`` (IEs 305/306: 1 packet in
   ``(interval + space) / interval``);
2. the record's sampler id (IE 48) looked up in the rates learned from options data, keyed by
   ``(exporter, domain, sampler id)``;
3. a rate the exporter announced in options data without a sampler id (per exporter and domain);
4. for NetFlow v5, the header's sampling interval;
5. the configured default: the most specific matching ``sampling_overrides`` subnet, else
   ``default_sampling_rate``.

A rate of 0 means "not sampled" on the wire and resolves to the next rule. Flow counts are never
scaled; the rate is kept as the ``sampling_rate`` column.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping

import numpy as np

SamplerKey = tuple[bytes, int, int]  # exporter (16 bytes), domain, sampler id (-1: exporter-wide)
EXPORTER_WIDE = -1
MAX_RATE = 0xFFFFFFFF  # the sampling_rate column is uint32


def record_rate(values: Mapping[str, np.ndarray], n: int) -> np.ndarray:
    """Rates carried inside records (0 where a record carries none)."""
    rate = np.zeros(n, np.int64)
    for role in ("sampling_interval", "sampler_interval"):
        if (v := values.get(role)) is not None:
            v = np.where(v.astype(np.uint64) > MAX_RATE, 0, v).astype(np.int64)  # garbage: not a rate
            rate = np.where(rate == 0, v, rate)
    interval, space = values.get("sampling_packet_interval"), values.get("sampling_packet_space")
    if interval is not None:
        i = (interval.astype(np.uint64) & np.uint64(MAX_RATE)).astype(np.int64)
        s = (space.astype(np.uint64) & np.uint64(MAX_RATE)).astype(np.int64) if space is not None else 0 * i
        ratio = np.where(i > 0, (i + s) // np.maximum(i, 1), 0)
        ratio = np.where(ratio > MAX_RATE, 0, ratio)
        rate = np.where(rate == 0, ratio, rate)
    return rate


def options_rate(values: Mapping[str, int]) -> int:
    """The rate one options-data record announces (0 when none)."""
    for role in ("sampling_interval", "sampler_interval"):
        if values.get(role):
            return int(values[role])
    interval = values.get("sampling_packet_interval", 0)
    if interval:
        return (interval + values.get("sampling_packet_space", 0)) // interval
    return 0


class SamplingDefaults:
    """Configured fallback rates: per subnet (longest prefix wins), else one default."""

    def __init__(self, default_rate: int = 1, overrides: Mapping[str, int] | None = None) -> None:
        if default_rate < 1:
            raise ValueError(f"default_sampling_rate must be >= 1, got {default_rate}")
        self.default_rate = default_rate
        nets = []
        for subnet, rate in (overrides or {}).items():
            net = ipaddress.ip_network(subnet, strict=True)
            if net.version == 4:
                net = ipaddress.ip_network(f"::ffff:{net.network_address}/{96 + net.prefixlen}")
            if int(rate) < 1:
                raise ValueError(f"sampling override for {subnet} must be >= 1, got {rate}")
            nets.append((net, int(rate)))
        self._nets = sorted(nets, key=lambda item: -item[0].prefixlen)
        self._cache: dict[bytes, int] = {}

    def rate_for(self, exporter: bytes) -> int:
        """Default rate for a 16-byte exporter address (cached: called per packet)."""
        rate = self._cache.get(exporter)
        if rate is None:
            addr = ipaddress.IPv6Address(exporter)
            rate = next((r for net, r in self._nets if addr in net), self.default_rate)
            if len(self._cache) < 65536:
                self._cache[exporter] = rate
        return rate
