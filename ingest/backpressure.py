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
"""

from __future__ import annotations

import threading
import time
from collections import deque
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ingest.config import IngestionBackpressure


@dataclass(eq=False)
class Queued:
    """A batch in the queue, with the oldest receive_time it holds (µs) for watermarks."""

    batch: pa.RecordBatch
    oldest_us: int


@dataclass
class Admission:
    """What :meth:`FlowQueue.admit` decided for one batch."""

    kept: pa.RecordBatch | None  # None when nothing was kept
    sampled: int  # flows skipped by 1:N sampling (their bytes/packets live on in the kept flows)
    dropped: int  # flows dropped at the queue limit


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


class FlowQueue:
    """Bounded, thread-safe FIFO of flow batches with the scaling model's sample/drop admission rules.

    The decoder thread calls :meth:`admit` then the landing thread calls :meth:`get`, writes, and
    calls :meth:`done` with the number of flows it landed, which lowers the depth.
    """

    def __init__(self, cfg: IngestionBackpressure):
        self.sample_at = cfg.sample_at_queue_depth
        self.drop_at = min(cfg.drop_at_queue_depth, cfg.max_queue_depth)
        self.rate = cfg.sample_rate
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
        """Apply the sample/drop rules to ``batch`` and queue what is kept."""
        with self._cond:
            keep_mask, n_normal, n_sampled, n_dropped = self._decide(batch.num_rows)
            self.sampled_total += n_sampled
            self.dropped_total += n_dropped
            kept = self._kept_part(batch, keep_mask, n_normal)
            if kept is not None and kept.num_rows:
                self._depth += kept.num_rows
                oldest = pc.min(kept.column("receive_time")).cast(pa.int64()).as_py()
                self._batches.append(Queued(kept, oldest))
                self._cond.notify()
            return Admission(kept, n_sampled, n_dropped)

    def _decide(self, n: int) -> tuple[np.ndarray | slice, int, int, int]:
        """Which of the next ``n`` flows are kept given the current depth (flow-by-flow semantics)."""
        free_normal = max(self.sample_at - self._depth, 0)
        if n <= free_normal:
            return slice(0, n), n, 0, 0
        n_normal = free_normal
        rest = n - n_normal
        # In the sampling band each kept flow raises the depth by one; the band ends at drop_at.
        room = max(self.drop_at - max(self._depth, self.sample_at), 0)
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

    def oldest_us(self) -> int | None:
        """The oldest receive_time (µs) accepted and not yet landed, or None when empty."""
        with self._cond:
            stamps = [q.oldest_us for q in self._batches] + [q.oldest_us for q in self._outstanding]
            return min(stamps) if stamps else None

    def queued_batches(self) -> int:
        with self._cond:
            return len(self._batches)
