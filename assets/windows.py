"""Looping over the 5-minute windows of a run, and what each window's write reports.

Every windowed asset uses ``BackfillPolicy.single_run()``: one run may cover a range of
partitions (``dagster asset materialize --partition-range A...B``), and the asset processes
each window in it independently, one PostgreSQL transaction per window. The run's single
materialization then reports totals plus the per-window details Dagster plots.
"""

import time
import warnings
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, TypeVar

import dagster as dg

from assets import metrics
from ingest.window import window_key, windows_in

T = TypeVar("T")
# BackfillPolicy is marked beta in Dagster 1.13; it is the documented way to run partition ranges.
warnings.filterwarnings("ignore", category=dg.BetaWarning)


@dataclass
class WindowResult:
    """What one window's processing read and wrote (becomes a ``window_loads`` row and metadata)."""

    window_start: datetime
    asset: str
    source: str
    rows_read: int = 0
    rows_written: int = 0
    bytes_total: int = 0
    packets_total: int = 0
    source_position: dict[str, Any] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)  # per stage
    started_at: datetime = field(default_factory=lambda: datetime.now(UTC))
    preview: str = ""  # markdown (top talkers, new changes...)

    def load_row(self, run_id: str | None) -> dict[str, Any]:
        """The ``flowlens.window_loads`` row for this write."""
        return {
            "window_start": self.window_start,
            "asset": self.asset,
            "run_id": run_id,
            "source": self.source,
            "source_position": self.source_position,
            "rows_read": self.rows_read,
            "rows_written": self.rows_written,
            "bytes_total": self.bytes_total,
            "packets_total": self.packets_total,
            "started_at": self.started_at,
        }


@contextmanager
def timed(result: WindowResult, stage: str) -> Iterator[None]:
    """Add the wall time of the block to ``result.seconds[stage]``."""
    start = time.perf_counter()
    try:
        yield
    finally:
        result.seconds[stage] = round(result.seconds.get(stage, 0.0) + time.perf_counter() - start, 4)


def timed_chunks(chunks: Iterable[T], result: WindowResult, stage: str) -> Iterator[T]:
    """The items of ``chunks``, adding the time spent waiting for each one to ``result.seconds[stage]``."""
    iterator = iter(chunks)
    while True:
        with timed(result, stage):
            item = next(iterator, _END)
        if item is _END:
            return
        yield item


_END = object()


def run_windows(context: dg.AssetExecutionContext, process: Callable[[datetime], WindowResult]) -> list[WindowResult]:
    """Process every 5-minute window of the run's partition range in order, logging each one."""
    span = context.partition_time_window
    results = []
    for window in windows_in(span.start.astimezone(UTC), span.end.astimezone(UTC)):
        result = process(window)
        context.log.info(
            f"{result.asset} {window_key(window)}: read {result.rows_read:,}, wrote {result.rows_written:,} "
            f"in {sum(result.seconds.values()):.2f}s {result.seconds}"
        )
        results.append(result)
        metrics.after_window(context.resources, result)
    return results


def run_id(context: dg.AssetExecutionContext | None) -> str | None:
    return context.run.run_id if context is not None else None
