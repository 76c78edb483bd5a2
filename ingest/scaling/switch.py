"""Auto mode's decision: which landing a receiving process writes to, from its measured flow rate.

The rules (the scaling model's §4.1 and §7.2 ``thresholds.kafka``):

- on PostgreSQL, switch to Kafka when the rate averaged over ``rate_window_seconds`` reaches
  ``enable_at_flows_per_sec`` and the process has stayed ``min_dwell_seconds`` on PostgreSQL, or
  at once (dwell or not) when the rate averaged over ``burst_duration_trigger_seconds`` reaches
  ``burst_threshold_flows_per_sec``: Kafka is what absorbs a burst;
- on Kafka, switch back when the averaged rate falls below ``disable_at_flows_per_sec`` and the
  process has stayed ``min_dwell_seconds`` on Kafka. The gap between the two rates is the
  hysteresis: a rate that hovers around one threshold does not flap.

Under ``flowlens ingest`` one process decides for the whole daemon on the daemon-wide rate
(:mod:`ingest.scaling.shared`); alone, a process decides on its own rate times ``processes``.
Pure: time is passed in, nothing is read or written.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

from ingest.config import KafkaThresholds

POSTGRES, KAFKA = "postgres", "kafka"


@dataclass(frozen=True)
class Switch:
    """A decided switch: from one landing to the other, at ``at`` (seconds), and why."""

    at: float
    source: str
    target: str
    rate: float  # flows/s averaged over the window the rule looked at (daemon-wide estimate)
    reason: str


class RateMeter:
    """Flows per whole second, kept for the last ``keep`` seconds."""

    def __init__(self, keep: int):
        self.keep = keep
        self._counts: deque[list[int]] = deque()  # [second, flows]

    def add(self, now: float, flows: int) -> None:
        second = int(now)
        if self._counts and self._counts[-1][0] == second:
            self._counts[-1][1] += flows
        else:
            self._counts.append([second, flows])
        while self._counts and self._counts[0][0] <= second - self.keep:
            self._counts.popleft()

    def rate(self, now: float, seconds: int) -> float:
        """Mean flows/s over the ``seconds`` whole seconds before the current one."""
        current = int(now)
        total = sum(n for s, n in self._counts if current - seconds <= s < current)
        return total / seconds


class ModeSwitcher:
    """Hysteresis, dwell and burst rules over a :class:`RateMeter`; :meth:`decide` then :meth:`commit`."""

    def __init__(self, thresholds: KafkaThresholds, processes: int = 1, now: float = 0.0, landing: str = POSTGRES):
        self.t = thresholds
        self.processes = max(1, processes)
        self.landing = landing
        self.since = now
        self.not_before = now  # after a failed switch: no new attempt before this
        self.meter = RateMeter(max(thresholds.rate_window_seconds, thresholds.burst_duration_trigger_seconds) + 2)

    def observe(self, now: float, flows: int) -> None:
        self.meter.add(now, flows * self.processes)

    def decide(self, now: float) -> Switch | None:
        """The switch the rules call for now, or None (nothing is changed until :meth:`commit`)."""
        t = self.t
        if now < self.not_before:
            return None
        dwelt = now - self.since >= t.min_dwell_seconds
        rate = self.meter.rate(now, t.rate_window_seconds)
        if self.landing == POSTGRES:
            burst = self.meter.rate(now, t.burst_duration_trigger_seconds)
            if burst >= t.burst_threshold_flows_per_sec:
                reason = f"burst: {burst:,.0f} flows/s over {t.burst_duration_trigger_seconds}s"
                return Switch(now, POSTGRES, KAFKA, burst, reason)
            if dwelt and rate >= t.enable_at_flows_per_sec:
                reason = f"{rate:,.0f} flows/s over {t.rate_window_seconds}s >= enable {t.enable_at_flows_per_sec:,}"
                return Switch(now, POSTGRES, KAFKA, rate, reason)
        elif dwelt and rate < t.disable_at_flows_per_sec:
            reason = f"{rate:,.0f} flows/s over {t.rate_window_seconds}s < disable {t.disable_at_flows_per_sec:,}"
            return Switch(now, KAFKA, POSTGRES, rate, reason)
        return None

    def commit(self, switch: Switch) -> None:
        self.landing, self.since = switch.target, switch.at

    def postpone(self, now: float, seconds: float) -> None:
        """The target landing is unreachable: stay, and decide again no sooner than ``seconds`` from now."""
        self.not_before = now + seconds
