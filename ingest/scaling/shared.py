"""One auto-mode decision per daemon: the landing every receiving process writes to, in shared memory.

The supervisor of ``flowlens ingest`` hands every receiving process the same small array of doubles
(as it does for the backpressure levels, :class:`ingest.backpressure.DaemonLoad`):

- slot 0: the daemon's landing (0 = PostgreSQL ``flow_raw``, 1 = Kafka ``flows.raw``);
- slot 1: how many switches the daemon made (a follower notices a switch by it);
- slot ``2 + i``: the flows process ``i`` has handed to the landing since the daemon started.

Process 0 is the leader: it alone runs :class:`ingest.scaling.switch.ModeSwitcher`, on the
daemon-wide rate (every process's count, summed), probes the target, then writes the landing
here; it alone logs, counts, records and publishes the switch. The other processes only follow
slot 0. So a ramp makes exactly one switch each way whatever ``ingest.processes`` is. Each slot
has one writer (the counts their process, the landing the leader): no lock is needed, and a
reading a few microseconds stale moves a switch by as much.

A restarted process keeps its count (counts only grow, so the leader's deltas stay positive),
and a restarted leader starts from the landing in slot 0.
"""

from __future__ import annotations

from typing import Any

from ingest.scaling.switch import KAFKA, POSTGRES

LEADER = 0
_CODES = {POSTGRES: 0.0, KAFKA: 1.0}
_HEADER = 2  # landing, switches


class SharedDecision:
    """A receiving process's view of the daemon's landing decision (see the module docstring)."""

    def __init__(self, slots: Any, index: int):
        self.slots = slots
        self.index = index
        self._seen_total = self.total()  # a (re)started leader measures from now on

    @staticmethod
    def shared(processes: int, context) -> Any:
        """The array to hand to every process (``context``: the multiprocessing context)."""
        return context.RawArray("d", _HEADER + processes)

    @property
    def leader(self) -> bool:
        return self.index == LEADER

    @property
    def landing(self) -> str:
        return KAFKA if self.slots[0] >= 0.5 else POSTGRES

    @property
    def switches(self) -> int:
        return int(self.slots[1])

    def set_landing(self, landing: str) -> None:
        """The leader's switch, seen by every process from its next batch on."""
        self.slots[0] = _CODES[landing]
        self.slots[1] += 1

    def add(self, flows: int) -> None:
        """Count flows this process hands to the landing."""
        self.slots[_HEADER + self.index] += flows

    def total(self) -> int:
        return int(sum(self.slots[_HEADER:]))

    def new_flows(self) -> int:
        """Flows the whole daemon handed to its landing since the previous call (the leader's rate input)."""
        total = self.total()
        delta, self._seen_total = max(0, total - self._seen_total), total
        return delta
