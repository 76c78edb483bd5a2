"""Vectorized flow start/end times (Unix microseconds) from whichever time fields a record has.

Priority per side (start or end), first present wins: absolute milliseconds, microseconds,
nanoseconds, seconds (IPFIX IEs 150-157), then sysUptime-relative (IEs 21/22) converted
through either ``systemInitTimeMilliseconds`` (IE 160, in the record or from options data) or,
for NetFlow v9 and v5, the packet header (``unix_secs`` and ``sysUptime``), then
``flowStart/EndDeltaMicroseconds`` (IEs 158/159, before the export time), then the NSEL event
time (IE 323). A side with no source is null.

Uptime arithmetic is modulo 2^32 ms: an exporter that has been up for more than 49.7 days wraps
its sysUptime, and ``(sysUptime - first_switched) mod 2^32`` is still the flow's age. The age is
read as a signed 32-bit value so a flow stamped a few ms *after* the header (clock jitter on some
exporters) lands just after the export time instead of 49.7 days before it.
"""

from __future__ import annotations

from typing import Any

import numpy as np

NTP_EPOCH_OFFSET = 2_208_988_800
_U32 = np.int64(0xFFFFFFFF)


def ntp_to_unix_us(ntp: np.ndarray) -> np.ndarray:
    """64-bit NTP timestamps -> Unix µs (0 stays "absent" for the caller to mask)."""
    ntp = ntp.astype(np.uint64, copy=False)
    secs = (ntp >> np.uint64(32)).astype(np.int64) - NTP_EPOCH_OFFSET
    frac = (ntp & np.uint64(0xFFFFFFFF)).astype(np.int64)
    return secs * 1_000_000 + (frac * 1_000_000 >> 32)


def uptime_to_unix_us(value: np.ndarray, export_us: np.ndarray, header_uptime: np.ndarray) -> np.ndarray:
    """sysUptime-relative ms -> Unix µs against each record's packet header (wrap-safe).

    ``export_us`` is the header's export time in µs, ``header_uptime`` its sysUptime (``uint32``).
    The age is computed in ``uint32`` (wrapping exactly like the exporter's clock) and read as
    ``int32``: no masking passes."""
    age = np.subtract(header_uptime, value.astype(np.uint32), dtype=np.uint32)
    out = np.multiply(age.view(np.int32), -1000, dtype=np.int64)
    out += export_us
    return out


class _Merge:
    """Times of one side from sources in priority order: per record, the first present one wins."""

    def __init__(self, n: int) -> None:
        self.n = n
        self.out: np.ndarray | None = None
        self.present: np.ndarray | None = None  # None once ``out`` is set: every record has a time

    @property
    def open(self) -> bool:
        """Whether some record still lacks a time (later sources are only read if so)."""
        return self.out is None or self.present is not None

    def add(self, us: np.ndarray, mask: np.ndarray | None) -> None:
        """A source: ``us`` per record, present where ``mask`` (None: everywhere)."""
        if mask is not None and mask.all():
            mask = None
        if self.out is None:
            self.out, self.present = (us, None) if mask is None else (np.where(mask, us, 0), mask)
            return
        take = ~self.present if mask is None else mask & ~self.present
        self.out[take] = us[take]
        present = self.present | take
        self.present = None if present.all() else present

    def result(self) -> tuple[np.ndarray, np.ndarray | None]:
        if self.out is None:
            return np.zeros(self.n, np.int64), np.zeros(self.n, bool)
        return self.out, self.present


def _scaled(v: np.ndarray, factor: int) -> tuple[np.ndarray, np.ndarray]:
    """An absolute time field in units of 1/``factor`` s -> (µs, present: nonzero)."""
    us = v.astype(np.int64)
    present = us != 0
    us *= factor
    return us, present


def side(values: dict[str, np.ndarray], prefix: str, ctx: Any) -> tuple[np.ndarray, np.ndarray | None]:
    """(µs, present mask or None when every record has one) for ``prefix`` "start" or "end"."""
    merge = _Merge(ctx.n)
    if (v := values.get(f"{prefix}_ms")) is not None:
        merge.add(*_scaled(v, 1000))
    for unit in ("us", "ns"):
        if (v := values.get(f"{prefix}_{unit}")) is not None and merge.open:
            merge.add(ntp_to_unix_us(v), v != 0)
    if (v := values.get(f"{prefix}_s")) is not None and merge.open:
        merge.add(*_scaled(v, 1_000_000))
    if (v := values.get(f"{prefix}_uptime")) is not None and merge.open:
        init = values.get("system_init_ms")
        if init is None:
            init = ctx.get("system_init_ms")
        if init is not None:
            merge.add(init.astype(np.int64) * 1000 + v.astype(np.int64) * 1000, init != 0)
        if ctx.has_uptime and merge.open:
            merge.add(uptime_to_unix_us(v, ctx["export_us"], ctx["uptime"]), None)
    if (v := values.get(f"{prefix}_delta_us")) is not None and merge.open:
        merge.add(ctx["secs"] * 1_000_000 - v.astype(np.int64), None)
    if (v := values.get("observation_ms")) is not None and merge.open:
        merge.add(*_scaled(v, 1000))
    return merge.result()
