"""Ingestion backpressure (the scaling model §8.1): a bounded queue of decoded flows that samples, then drops.

The queue holds decoded flows between the decoder and the landing. Its depth counts every flow
accepted and not yet landed, so when the landing is slow or down the depth grows and the rules of
``backpressure.ingestion`` apply, flow by flow, in arrival order:

* depth below ``sample_at_queue_depth``: every flow is kept;
* from there to ``drop_at_queue_depth``: one flow in ``sample_rate`` (N) is kept; the kept flow's
  ``sampling_rate``, ``bytes`` and ``packets`` are multiplied by N, so byte and packet totals stay
  unbiased (the scaling model only counted the skipped flows; we also keep the totals right);
* at ``drop_at_queue_depth``: flows are dropped.

Every sampled-away and dropped flow is counted. The work is vectorized per batch: the decision for
a batch of n flows is the same as taking its flows one by one.

In the daemon the limits are the daemon's, as the scaling model states them, not each receiving
process's: a :class:`DaemonLoad` in shared memory holds every process's depth and measured rate,
and a process admits against the sum. The levels also follow the measured rate: sampling starts at
``sample_at_queue_seconds`` of traffic (dropping at ``drop_at_queue_seconds``) when that is more
than the configured counts, which stay the floors. A daemon that lands 3M flows/s is not behind
when 50,000 flows (17 ms of its traffic) wait, while at the model's 25,000 flows/s that was 2 s.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ingest.config import IngestionBackpressure
from ingest.schema import receive_times_us
from ingest.spool import Spool


@dataclass(eq=False)
class Queued:
    """A batch in the queue, with the oldest receive_time it holds (µs) for watermarks."""

    batch: pa.RecordBatch
    oldest_us: int


@dataclass
class Admission:
    """What :meth:`FlowQueue.admit` decided for one batch."""

    kept: pa.RecordBatch | None  # None when nothing was kept in memory
    sampled: int  # flows skipped by 1:N sampling (their bytes/packets live on in the kept flows)
    dropped: int  # flows dropped at the queue limit
    spooled: int = 0  # flows written to the disk spool instead of being sampled or dropped


def scale_sampled(batch: pa.RecordBatch, factor: int) -> pa.RecordBatch:
    """Multiply sampling_rate, bytes and packets by ``factor`` (flows kept 1 in ``factor``)."""
    if factor == 1 or batch.num_rows == 0:
        return batch
    columns = []
    for name in batch.schema.names:
        col = batch.column(name)
        if name in ("bytes", "packets", "sampling_rate"):
            col = pc.multiply(col, pa.scalar(factor, col.type))
        columns.append(col)
    return pa.RecordBatch.from_arrays(columns, schema=batch.schema)


BUCKET_US = 100_000  # flows are counted per 0.1 s of receive time
RATE_BUCKETS = 10  # the rate is the last second of complete buckets
RATE_HALF_LIFE_SECONDS = 10.0  # a lull lowers the rate slowly: full queues keep their levels


class DaemonLoad:
    """Every receiving process's queue depth and offered rate, in one shared array of doubles.

    Slot ``2*i`` is process i's depth (flows), ``2*i+1`` its offered rate (flows/s). Each process
    writes only its own slots and reads the others' without a lock: a reading a few microseconds
    stale moves a level by a few flows. ``slots=None`` gives a private array (one process).
    """

    def __init__(self, slots: Any | None = None, index: int = 0):
        self.slots = slots if slots is not None else [0.0, 0.0]
        self.index = index
        self.slots[2 * index] = self.slots[2 * index + 1] = 0.0  # a restarted process starts empty
        self._buckets: dict[int, int] = {}  # 0.1 s of receive time -> flows offered
        self._first_bucket: int | None = None
        self._newest = 0
        self._rate = 0.0

    @staticmethod
    def shared(processes: int, context) -> Any:
        """The array to hand to every process (``context``: the multiprocessing context)."""
        return context.RawArray("d", 2 * processes)

    def offered(self, receive_us: np.ndarray) -> None:
        """Count flows offered to the queue by their receive times (µs).

        The rate is measured on the receive clock, per 0.1 s bucket, not on when decoding got to
        the flows: reordering between exporters and a decoder catching up do not inflate it, and
        the first batch after a start (packets that waited in the socket) already tells the rate,
        so the levels are right before the first decision.
        """
        if len(receive_us) == 0:
            return
        first, newest = int(receive_us.min()) // BUCKET_US, int(receive_us.max()) // BUCKET_US
        if first == newest:  # the usual case: one bucket, no per-flow work
            self._buckets[first] = self._buckets.get(first, 0) + len(receive_us)
        else:  # np.unique, not bincount: exporter clocks (export time) may lie years apart
            buckets, counts = np.unique(receive_us // BUCKET_US, return_counts=True)
            for bucket, count in zip(buckets.tolist(), counts.tolist(), strict=True):
                self._buckets[bucket] = self._buckets.get(bucket, 0) + count
        if self._first_bucket is None:
            self._first_bucket = first
        if newest > self._newest:
            self._advance(newest)

    def _advance(self, newest: int) -> None:
        """A new bucket began: the complete buckets of the last second give the rate."""
        since = max(newest - RATE_BUCKETS, self._first_bucket)
        self._buckets = {b: n for b, n in self._buckets.items() if b >= since}
        if newest > since:
            measured = sum(n for b, n in self._buckets.items() if b < newest) / ((newest - since) * BUCKET_US / 1e6)
            idle = (newest - self._newest) * BUCKET_US / 1e6  # since the rate was last measured
            self._rate = max(measured, self._rate * 0.5 ** (idle / RATE_HALF_LIFE_SECONDS))
            self.slots[2 * self.index + 1] = self._rate
        self._newest = newest

    def publish_depth(self, depth: int) -> None:
        self.slots[2 * self.index] = depth

    def others_depth(self) -> int:
        return int(sum(self.slots[0::2]) - self.slots[2 * self.index])

    def rate(self) -> float:
        """The daemon's offered rate (flows/s): every process's, summed."""
        return float(sum(self.slots[1::2]))


class FlowQueue:
    """Bounded, thread-safe FIFO of flow batches with the scaling model's sample/drop admission rules.

    The decoder thread calls :meth:`admit` then the landing thread calls :meth:`get`, writes, and
    calls :meth:`done` with the number of flows it landed, which lowers the depth.
    """

    def __init__(self, cfg: IngestionBackpressure, load: DaemonLoad | None = None, spool: Spool | None = None):
        self.cfg = cfg
        self.sample_at = cfg.sample_at_queue_depth  # the floors; :meth:`levels` gives the levels in force
        self.drop_at = min(cfg.drop_at_queue_depth, cfg.max_queue_depth)
        self.rate = cfg.sample_rate
        self.load = load  # None: this queue alone, with the configured counts
        self.spool = spool  # None: past the sampling level, sample and drop at once
        self._batches: deque[Queued] = deque()
        self._outstanding: set[Queued] = set()  # taken by the landing, not yet done
        self._cond = threading.Condition()
        self._depth = 0  # flows accepted and not yet landed (queued + being written)
        self._sample_phase = 0  # position in the 1:N cycle, carried across batches
        self.sampled_total = 0
        self.dropped_total = 0

    @property
    def depth(self) -> int:
        return self._depth

    def admit(self, batch: pa.RecordBatch) -> Admission:
        """Apply the sample/drop rules to ``batch`` and queue what is kept (or spool it, see below)."""
        with self._cond:
            if self.load is not None:
                self.load.offered(receive_times_us(batch))
            spooled = self._spool_part(batch)
            if spooled is not None:
                return spooled
            keep_mask, n_normal, n_sampled, n_dropped = self._decide(batch.num_rows)
            self.sampled_total += n_sampled
            self.dropped_total += n_dropped
            kept = self._kept_part(batch, keep_mask, n_normal)
            if kept is not None and kept.num_rows:
                self._enqueue(kept)
            return Admission(kept, n_sampled, n_dropped)

    def _enqueue(self, batch: pa.RecordBatch, oldest_us: int | None = None) -> Queued:
        self._depth += batch.num_rows
        self._publish()
        if oldest_us is None:
            oldest_us = pc.min(batch.column("receive_time")).cast(pa.int64()).as_py()
        item = Queued(batch, oldest_us)
        self._batches.append(item)
        self._cond.notify()
        return item

    def _spool_part(self, batch: pa.RecordBatch) -> Admission | None:
        """With a spool: what the memory queue cannot take without sampling goes to disk, in order.

        While the spool holds flows, the whole batch queues behind them on disk; otherwise the
        part past the sampling level does. None when the spool cannot take it (none, or full):
        then the sampling and drop rules apply as they would without one.
        """
        if self.spool is None or batch.num_rows == 0:
            return None
        free = 0 if self.spool.flows else max(self.levels()[0] - self.daemon_depth(), 0)
        if batch.num_rows <= free:
            return None
        rest = batch.slice(free)
        if not self.spool.put(rest, pc.min(rest.column("receive_time")).cast(pa.int64()).as_py()):
            return None
        kept = batch.slice(0, free) if free else None
        if kept is not None:
            self._enqueue(kept)
        return Admission(kept, 0, 0, spooled=rest.num_rows)

    def readmit(self, batch: pa.RecordBatch, oldest_us: int) -> None:
        """Queue flows accepted earlier (from the spool) without applying the rules again."""
        with self._cond:
            self._enqueue(batch, oldest_us)

    def has_room(self, flows: int) -> bool:
        """True when ``flows`` more keep the daemon's queue within half its sampling level (or it is empty)."""
        with self._cond:
            depth = self.daemon_depth()
            return depth == 0 or depth + flows <= self.levels()[0] // 2

    def levels(self) -> tuple[int, int]:
        """(sample_at, drop_at) in force: the configured counts, or more seconds of the daemon's rate."""
        if self.load is None:
            return self.sample_at, self.drop_at
        rate, cfg = self.load.rate(), self.cfg
        drop_at = max(self.drop_at, min(int(rate * cfg.drop_at_queue_seconds), cfg.queue_ceiling_flows))
        sample_at = max(self.sample_at, min(int(rate * cfg.sample_at_queue_seconds), drop_at))
        return sample_at, drop_at

    def daemon_depth(self) -> int:
        """Flows accepted and not yet landed by the whole daemon (this queue alone without a load)."""
        return self._depth + (self.load.others_depth() if self.load is not None else 0)

    def _publish(self) -> None:
        if self.load is not None:
            self.load.publish_depth(self._depth)

    def _decide(self, n: int) -> tuple[np.ndarray | slice, int, int, int]:
        """Which of the next ``n`` flows are kept given the current depth (flow-by-flow semantics)."""
        sample_at, drop_at = self.levels()
        depth = self.daemon_depth()
        free_normal = max(sample_at - depth, 0)
        if n <= free_normal:
            return slice(0, n), n, 0, 0
        n_normal = free_normal
        rest = n - n_normal
        # In the sampling band each kept flow raises the depth by one; the band ends at drop_at.
        room = max(drop_at - max(depth, sample_at), 0)
        positions = (self._sample_phase + np.arange(rest)) % self.rate
        kept_in_band = np.flatnonzero(positions == self.rate - 1)
        if room == 0:
            band_len, kept_in_band = 0, kept_in_band[:0]
        elif len(kept_in_band) >= room:
            # Once the room is used up the depth sits at drop_at: every later flow is dropped.
            band_len = int(kept_in_band[room - 1]) + 1
            kept_in_band = kept_in_band[:room]
        else:
            band_len = rest
        self._sample_phase = int((self._sample_phase + band_len) % self.rate)
        keep = np.zeros(n, dtype=bool)
        keep[:n_normal] = True
        keep[n_normal + kept_in_band] = True
        n_sampled = band_len - len(kept_in_band)
        n_dropped = rest - band_len
        return keep, n_normal, n_sampled, n_dropped

    def _kept_part(self, batch: pa.RecordBatch, keep: np.ndarray | slice, n_normal: int) -> pa.RecordBatch | None:
        """The first ``n_normal`` flows as they are, then the band's kept flows scaled by N."""
        if isinstance(keep, slice):
            return batch
        normal = batch.slice(0, n_normal)
        band_mask = keep.copy()
        band_mask[:n_normal] = False
        band = scale_sampled(batch.filter(pa.array(band_mask)), self.rate) if band_mask.any() else None
        parts = [p for p in (normal, band) if p is not None and p.num_rows]
        if not parts:
            return None
        return parts[0] if len(parts) == 1 else pa.concat_batches(parts)

    def get(self, timeout: float) -> Queued | None:
        """The oldest queued batch, waiting up to ``timeout`` seconds; None when there is none."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while not self._batches:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return None
                self._cond.wait(remaining)
            item = self._batches.popleft()
            self._outstanding.add(item)
            return item

    def done(self, items: list[Queued]) -> None:
        """Batches taken with :meth:`get` are landed: their flows leave the depth."""
        with self._cond:
            for item in items:
                self._outstanding.discard(item)
                self._depth -= item.batch.num_rows
            self._publish()

    def oldest_us(self) -> int | None:
        """The oldest receive_time (µs) accepted and not yet landed, or None when empty."""
        with self._cond:
            stamps = [q.oldest_us for q in self._batches] + [q.oldest_us for q in self._outstanding]
            return min(stamps) if stamps else None

    def queued_batches(self) -> int:
        with self._cond:
            return len(self._batches)
