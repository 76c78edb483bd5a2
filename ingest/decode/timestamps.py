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

import numpy as np

NTP_EPOCH_OFFSET = 2_208_988_800
_U32 = np.int64(0xFFFFFFFF)


def ntp_to_unix_us(ntp: np.ndarray) -> np.ndarray:
    """64-bit NTP timestamps -> Unix µs (0 stays "absent" for the caller to mask)."""
    ntp = ntp.astype(np.uint64, copy=False)
    secs = (ntp >> np.uint64(32)).astype(np.int64) - NTP_EPOCH_OFFSET
    frac = (ntp & np.uint64(0xFFFFFFFF)).astype(np.int64)
    return secs * 1_000_000 + (frac * 1_000_000 >> 32)


def uptime_to_unix_us(
    value: np.ndarray, header_secs: np.ndarray, header_uptime: np.ndarray, header_nsecs: np.ndarray | None = None
) -> np.ndarray:
    """sysUptime-relative ms -> Unix µs against each record's packet header (wrap-safe)."""
    age = header_uptime - value.astype(np.int64)  # in place from here: these arrays are large
    age += 1 << 31
    age &= _U32
    age -= 1 << 31  # signed 32-bit: flows marginally after the header
    age *= 1000
    export_us = header_secs * 1_000_000
    if header_nsecs is not None:
        export_us += header_nsecs // 1000
    export_us -= age
    return export_us


def side(values: dict[str, np.ndarray], prefix: str, ctx: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """(µs array, present mask) for ``prefix`` "start" or "end" from the role columns in ``values``."""
    n = ctx.n
    out = np.zeros(n, np.int64)
    present = np.zeros(n, bool)

    def fill(us: np.ndarray, mask: np.ndarray) -> None:
        nonlocal out, present
        if not present.any():  # first source: take it whole (the common, fast case)
            out, present = (us, mask.copy()) if mask.all() else (np.where(mask, us, 0), mask.copy())
            return
        take = mask & ~present
        out[take] = us[take]
        present[take] = True

    if (v := values.get(f"{prefix}_ms")) is not None:
        fill(v.astype(np.int64) * 1000, v != 0)
    for unit in ("us", "ns"):
        if (v := values.get(f"{prefix}_{unit}")) is not None:
            fill(ntp_to_unix_us(v), v != 0)
    if (v := values.get(f"{prefix}_s")) is not None:
        fill(v.astype(np.int64) * 1_000_000, v != 0)
    if (v := values.get(f"{prefix}_uptime")) is not None:
        init = values.get("system_init_ms")
        if init is None:
            init = ctx.get("system_init_ms")
        if init is not None:
            has_init = init != 0
            fill(init.astype(np.int64) * 1000 + v.astype(np.int64) * 1000, has_init)
        v9 = ctx["has_uptime"]
        fill(uptime_to_unix_us(v, ctx["secs"], ctx["uptime"], ctx.get("nsecs")), v9)
    if (v := values.get(f"{prefix}_delta_us")) is not None:
        fill(ctx["secs"].astype(np.int64) * 1_000_000 - v.astype(np.int64), np.ones(n, bool))
    if (v := values.get("observation_ms")) is not None:
        fill(v.astype(np.int64) * 1000, v != 0)
    return out, present
