"""Auto mode's Redis decision: whether the API keeps its cache, sessions and rate limits in Redis.

The scaling model's §5.1 and §7.1 (``thresholds.redis``): Redis is used when ANY of these holds:

- the flow rate is at or above ``enable_at_flows_per_sec`` (10k);
- the API has ``enable_at_concurrent_users`` (20) users or more;
- the API's measured p99 latency is at or above ``enable_at_api_p99_ms`` (200 ms): the cache is what
  brings it down;
- WebSocket clients are connected and ``enable_for_websocket`` is on (pub/sub feeds them);
- the API runs more than one process (``api.workers`` > 1): a cache and sessions in process would
  not be shared.

Redis is taken at once when a trigger holds, and left only when none has held for
``min_dwell_seconds`` (hysteresis: a rate or a latency hovering around a threshold does not flap).
Pure: signals and time are passed in.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from ingest.config import RedisThresholds

MEMORY, REDIS = "memory", "redis"


@dataclass(frozen=True)
class RedisSignals:
    """What the rule looks at; None = not measured (no window processed yet, no request yet)."""

    flows_per_s: float | None
    users: int
    api_p99_ms: float | None
    websocket_clients: int
    api_processes: int = 1

    def as_dict(self) -> dict:
        return {
            "flows_per_s": None if self.flows_per_s is None else round(self.flows_per_s, 1),
            "users": self.users,
            "api_p99_ms": None if self.api_p99_ms is None else round(self.api_p99_ms, 1),
            "websocket_clients": self.websocket_clients,
            "api_processes": self.api_processes,
        }


@dataclass(frozen=True)
class RedisSwitch:
    at: float
    source: str
    target: str
    reason: str
    signals: RedisSignals


def triggers(t: RedisThresholds, s: RedisSignals) -> list[str]:
    """The model's reasons for Redis that hold now (empty: in process is enough)."""
    why = []
    if s.flows_per_s is not None and s.flows_per_s >= t.enable_at_flows_per_sec:
        why.append(f"rate {s.flows_per_s:,.0f} flows/s >= {t.enable_at_flows_per_sec:,}")
    if s.users >= t.enable_at_concurrent_users:
        why.append(f"{s.users} users >= {t.enable_at_concurrent_users}")
    if s.api_p99_ms is not None and s.api_p99_ms >= t.enable_at_api_p99_ms:
        why.append(f"API p99 {s.api_p99_ms:,.0f} ms >= {t.enable_at_api_p99_ms} ms")
    if t.enable_for_websocket and s.websocket_clients > 0:
        why.append(f"{s.websocket_clients} WebSocket client(s)")
    if s.api_processes > 1:
        why.append(f"{s.api_processes} API processes share one cache")
    return why


class RedisDecider:
    """Hysteresis over :func:`triggers`: :meth:`decide`, then :meth:`commit` once the switch is done."""

    def __init__(self, thresholds: RedisThresholds, now: float = 0.0, using: str = MEMORY):
        self.t = thresholds
        self.using = using
        self.quiet_since: float | None = None  # when the last trigger stopped holding

    def decide(self, now: float, signals: RedisSignals) -> RedisSwitch | None:
        why = triggers(self.t, signals)
        if why:
            self.quiet_since = None
            if self.using == MEMORY:
                return RedisSwitch(now, MEMORY, REDIS, "; ".join(why), signals)
            return None
        if self.quiet_since is None:
            self.quiet_since = now
        if self.using == REDIS and now - self.quiet_since >= self.t.min_dwell_seconds:
            reason = f"no Redis trigger for {now - self.quiet_since:,.0f}s (>= {self.t.min_dwell_seconds}s)"
            return RedisSwitch(now, REDIS, MEMORY, reason, signals)
        return None

    def commit(self, switch: RedisSwitch) -> None:
        self.using = switch.target


def p99_ms(bounds: Sequence[float], before: Sequence[float], after: Sequence[float]) -> float | None:
    """The p99 (ms) of the requests between two readings of a cumulative latency histogram.

    ``bounds`` are the bucket upper bounds in seconds (the last may be ``inf``), ``before``/``after``
    the cumulative counts per bucket. The answer is the upper bound of the bucket holding the 99th
    percentile (the histogram's resolution), None when no request came in between.
    """
    counts = [b - a for a, b in zip(before, after, strict=True)]
    total = counts[-1] if counts else 0
    if total <= 0:
        return None
    rank = 0.99 * total
    for bound, cumulative in zip(bounds, counts, strict=True):
        if cumulative >= rank:
            return bound * 1000
    return bounds[-1] * 1000
