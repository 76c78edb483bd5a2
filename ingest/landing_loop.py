"""The landing side of one receiving process: batching per window, dispatch, retry, heartbeats.

The decode thread puts kept flows in the :class:`~ingest.backpressure.FlowQueue`; the landing
loop takes them out, gathers them per 5-minute window into units (a written batch never straddles
a window), writes each unit through the :class:`~ingest.land.base.Landing`, retries a failed write
with exponential backoff (the scaling model §8.3) and publishes heartbeats (watermarks). A flow
leaves the queue's depth only when the landing confirmed it (Kafka delivery report or PostgreSQL
commit).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from datetime import UTC, datetime

import pyarrow as pa

from ingest.backpressure import FlowQueue, Queued
from ingest.config import FlowLensConfig
from ingest.land.base import Landing, WritesAsync
from ingest.metrics import WorkerStats
from ingest.spool import read
from ingest.window import WINDOW_US

log = logging.getLogger(__name__)


def window_of(item: Queued) -> int:
    """The window number of a queued batch (it never straddles one, so its oldest flow tells)."""
    return item.oldest_us // WINDOW_US


@dataclass(eq=False)
class Unit:
    """Queued batches of one window landed together; done when every part is confirmed."""

    items: list[Queued]
    parts_left: int = 1
    failed: list[pa.RecordBatch] = field(default_factory=list)


class Batcher:
    """Queued batches gathered per window until one is full, old enough, or a newer window began."""

    def __init__(self, flush_rows: int, max_seconds: float):
        self.flush_rows = flush_rows
        self.max_seconds = max_seconds
        self._items: dict[int, list[Queued]] = {}
        self._rows: dict[int, int] = {}
        self._since: dict[int, float] = {}

    def add(self, item: Queued, now: float) -> None:
        w = window_of(item)
        self._items.setdefault(w, []).append(item)
        self._rows[w] = self._rows.get(w, 0) + item.batch.num_rows
        self._since.setdefault(w, now)

    def ready(self, now: float, everything: bool) -> list[Unit]:
        """Units to write now, oldest window first (all of them when ``everything``)."""
        out = []
        for w in sorted(self._items):
            newer_window = any(other > w for other in self._items)
            full = self._rows[w] >= self.flush_rows or now - self._since[w] >= self.max_seconds
            if everything or newer_window or full:
                out.append(Unit(self._items.pop(w)))
                self._rows.pop(w)
                self._since.pop(w)
        return out

    def __bool__(self) -> bool:
        return bool(self._items)


class LandingLoop:
    """Writes what the flow queue holds through one landing; called from the process's main thread."""

    def __init__(self, cfg: FlowLensConfig, index: int, landing: Landing, backend: str, flowq: FlowQueue,
                 stats: WorkerStats):  # fmt: skip
        self.cfg = cfg
        self.index = index
        self.landing = landing
        self.backend = backend
        self.flowq = flowq
        self.stats = stats
        ing = cfg.ingest
        # Batches waiting to be written count in the queue depth: keep them well below the sampling
        # threshold so batching alone never triggers backpressure.
        self.batcher = Batcher(max(1, min(ing.batch_max_flows, flowq.sample_at // 4)), ing.batch_max_seconds)
        self._retry: list[tuple[float, Unit, pa.RecordBatch]] = []
        self._writers = ThreadPoolExecutor(ing.landing_writers, thread_name_prefix="flowlens-land")
        self._writing: list[tuple[Future, Unit, pa.RecordBatch]] = []  # blocking writes in progress
        self._backoff = 0.1
        self._retry_after = 0.0  # monotonic time before which the landing is not tried again
        # Blocking landings publish heartbeats from their own thread: a heartbeat waiting on a dead
        # database must not stop the loop (nor the metrics) for a pool timeout.
        self._blocking = not isinstance(landing, WritesAsync)
        self._heartbeats = ThreadPoolExecutor(1, thread_name_prefix="flowlens-heartbeat") if self._blocking else None
        self._heartbeat_running: Future | None = None

    # --- one turn of the loop -----------------------------------------------------------------
    def step(self, timeout: float, draining: bool) -> None:
        """Take at most one queued batch (waiting up to ``timeout``), write what is due, serve the landing."""
        self._refill()
        item = self.flowq.get(timeout=timeout)
        now = time.monotonic()
        if item is not None:
            self.batcher.add(item, now)
        for unit in self.batcher.ready(now, everything=draining):
            self._land(unit)
        self._serve_landing()

    def _refill(self) -> None:
        """Move the oldest spooled batches back into the memory queue while it has room (in order)."""
        spool = self.flowq.spool
        while spool is not None and (segment := spool.oldest()) is not None and self.flowq.has_room(segment.flows):
            batch = read(segment)
            if batch is None:  # a disk error: say so in the counters, never silently
                self.stats.flows_dropped["spool_unreadable"] += segment.flows
            else:
                self.flowq.readmit(batch, segment.oldest_us)
            spool.discard(segment)  # after the queue holds the flows: the watermark always sees them

    @property
    def idle(self) -> bool:
        spooled = self.flowq.spool.flows if self.flowq.spool is not None else 0
        return not self.batcher and not self._retry and not self._writing and self.flowq.depth == 0 and not spooled

    def close(self, graceful: bool = True) -> None:
        """Stop writing; ``graceful`` also closes the landing (which may wait for its last writes)."""
        self._writers.shutdown(wait=False, cancel_futures=True)
        if self._heartbeats is not None:
            self._heartbeats.shutdown(wait=False, cancel_futures=True)
        if graceful:
            self.landing.close()

    # --- writing ------------------------------------------------------------------------------
    def _land(self, unit: Unit) -> None:
        batches = [q.batch for q in unit.items]
        batch = batches[0] if len(batches) == 1 else pa.concat_batches(batches)
        self._write(unit, batch)

    def _write(self, unit: Unit, batch: pa.RecordBatch) -> None:
        """Write (or start writing) one batch of a unit; a failure puts it on the retry list.

        While the landing is backing off, new batches wait on the retry list too (in order), so a
        dead database costs one timeout per backoff step, not one per batch.
        """
        if time.monotonic() < self._retry_after or self._retry:
            self._retry.append((self._retry_after, unit, batch))  # behind the older ones, in order
            return
        if self._blocking:
            self._submit(unit, batch)
            return
        try:
            self.landing.write_async(batch, lambda failed, error, unit=unit: self._settled(unit, failed, error))
        except Exception as exc:  # any driver error: keep the batch, back off, retry
            self._failed(unit, [batch], str(exc))

    def _submit(self, unit: Unit, batch: pa.RecordBatch) -> None:
        """Blocking landings (PostgreSQL) write from a few threads, so encoding the next batch
        overlaps the database's work on the previous one; at most ``landing_writers`` at once.

        With every writer busy the loop waits a little for one, never for a whole write: the unit
        then waits on the retry list (in order), so the loop keeps its turns (drain deadline).
        """
        if len(self._writing) >= self.cfg.ingest.landing_writers:
            wait([f for f, _, _ in self._writing], timeout=0.05, return_when=FIRST_COMPLETED)
            self._collect_writes()
        if len(self._writing) >= self.cfg.ingest.landing_writers:
            self._retry.append((time.monotonic(), unit, batch))
            return
        self._writing.append((self._writers.submit(self.landing.write, batch), unit, batch))

    def _collect_writes(self) -> None:
        """Settle the finished blocking writes (in the landing loop's thread)."""
        still = []
        for future, unit, batch in self._writing:
            if not future.done():
                still.append((future, unit, batch))
            elif future.exception() is not None:
                self._failed(unit, [batch], str(future.exception()))
            else:
                self._succeeded(unit)
        self._writing = still

    def _failed(self, unit: Unit, parts: list[pa.RecordBatch], error: str) -> None:
        """Count a failed write and schedule its retry after the current backoff (scaling model §8.3)."""
        self.stats.landing_failures[self.backend] += 1
        self.stats.landing_up[self.backend] = 0
        log.warning("worker %d: landing in %s failed (%s); retrying in %.1fs (queued: %d flows)",
                    self.index, self.backend, error.strip()[:200], self._backoff, self.flowq.depth)  # fmt: skip
        self._retry_after = time.monotonic() + self._backoff
        self._backoff = min(self._backoff * 2, self.cfg.ingest.landing_backoff_max_seconds)
        batch = parts[0] if len(parts) == 1 else pa.concat_batches(parts)
        self._retry.append((self._retry_after, unit, batch))

    def _succeeded(self, unit: Unit) -> None:
        self._backoff = 0.1
        self.stats.landing_up[self.backend] = 1
        rows = sum(q.batch.num_rows for q in unit.items)
        self.stats.flows_landed += rows
        now_us = time.time_ns() // 1000
        for q in unit.items:
            self.stats.latency.observe(max(now_us - q.oldest_us, 0) / 1e6, q.batch.num_rows)
        self.flowq.done(unit.items)

    def _settled(self, unit: Unit, failed: list[pa.RecordBatch], error: str | None) -> None:
        """Kafka delivery report for one write of a unit (called from poll): retry what failed."""
        if failed:
            self._failed(unit, failed, f"{len(failed)} message(s) not delivered: {error}")
        else:
            self._succeeded(unit)

    def _serve_landing(self) -> None:
        if not self._blocking:
            self.landing.poll(0)
        if self._writing:
            self._collect_writes()
        if self._retry and time.monotonic() >= self._retry_after:
            due, self._retry = self._retry, []
            for _, unit, batch in due:  # oldest first; a new failure re-queues the rest behind it
                self._write(unit, batch)

    # --- watermarks ---------------------------------------------------------------------------
    def heartbeat(self, instance: str, landed_through_us: Callable[[], int | None]) -> None:
        """Publish the watermark: inline for Kafka (bounded wait), from a thread for a blocking landing."""
        if self._heartbeats is None:
            self._publish(instance, landed_through_us)
        elif self._heartbeat_running is None or self._heartbeat_running.done():
            self._heartbeat_running = self._heartbeats.submit(self._publish, instance, landed_through_us)

    def final_heartbeat(self, instance: str, landed_through_us: Callable[[], int | None]) -> None:
        """The last watermark, at exit, from the loop's thread (after the last write was confirmed)."""
        if self._heartbeat_running is not None:
            wait([self._heartbeat_running], timeout=5)
        self._publish(instance, landed_through_us)

    def _publish(self, instance: str, landed_through_us: Callable[[], int | None]) -> None:
        through_us = landed_through_us()
        if through_us is None:
            return
        through = datetime.fromtimestamp(through_us / 1e6, UTC)
        try:
            self.landing.heartbeat(instance, through, self.stats.flows_landed)  # delivered, or raises
            self.stats.landing_up[self.backend] = 1
        except Exception as exc:  # landing down: the next heartbeat will say it
            self.stats.landing_failures[self.backend] += 1
            self.stats.landing_up[self.backend] = 0
            log.warning("worker %d: heartbeat not landed (%s)", self.index, str(exc).strip()[:200])
