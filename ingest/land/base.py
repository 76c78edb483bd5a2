"""The one landing interface both backends implement (Kafka ``flows.raw``, PostgreSQL ``flow_raw``).

Writers (the ingest daemon) call :meth:`Landing.write` and :meth:`Landing.heartbeat`; readers (the
Dagster pipeline) call :meth:`Landing.read_window` and :meth:`Landing.watermarks`. Batches carry
:data:`ingest.schema.FLOW_SCHEMA`; a written batch never straddles a 5-minute window boundary of
``receive_time``.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from queue import Full, Queue
from typing import Any, Protocol, runtime_checkable

import pyarrow as pa

from ingest.schema import FLOW_SCHEMA
from ingest.window import WINDOW, window_start

__all__ = [
    "WHOLE_WINDOW",
    "WINDOW",
    "Landing",
    "OnDone",
    "SummarizesWindows",
    "Watermark",
    "WindowChunks",
    "WindowRead",
    "WindowSummary",
    "WritesAsync",
    "read_ahead",
    "rechunk",
    "window_start",
]

WHOLE_WINDOW = 2**62  # a chunk size no window reaches: ``read_window`` is one chunk

# called once an asynchronous write settled: (the parts that failed, the error text or None)
OnDone = Callable[[list[pa.RecordBatch], str | None], None]


@dataclass(frozen=True)
class Watermark:
    """How far one ingest instance has landed: every flow received before ``landed_through`` is durable."""

    instance: str
    landed_through: datetime
    heartbeat_at: datetime
    flows_landed: int = 0


@dataclass
class WindowRead:
    """The flows received in [start, end), plus where they were read from (offsets or row range)."""

    flows: pa.Table
    source: str  # 'kafka:flows.raw' or 'postgres:flow_raw'
    position: dict[str, Any] = field(default_factory=dict)  # e.g. {"0": [first, last], ...}


@dataclass
class WindowChunks:
    """The flows received in [start, end) as a stream of tables of about ``chunk_flows`` rows each.

    ``chunks`` is read once, lazily: memory holds a few chunks, never the window. ``position``
    (offsets or row range, as in :class:`WindowRead`) is complete once ``chunks`` is exhausted.
    """

    chunks: Iterator[pa.Table]
    source: str
    position: dict[str, Any] = field(default_factory=dict)

    def read_all(self) -> WindowRead:
        """Every chunk concatenated: the whole window in memory (small windows, tests, checks)."""
        tables = list(self.chunks)
        flows = pa.concat_tables(tables) if tables else FLOW_SCHEMA.empty_table()
        return WindowRead(flows=flows, source=self.source, position=self.position)


def rechunk(tables: Iterator[pa.Table], chunk_flows: int) -> Iterator[pa.Table]:
    """Tables of ``chunk_flows`` rows (the last one shorter) from tables of any size, lazily.

    Zero-copy: a chunk is a concatenation of (slices of) the incoming tables' record batches.
    """
    pending: list[pa.Table] = []
    held = 0
    for table in tables:
        while table.num_rows:
            take = min(table.num_rows, chunk_flows - held)
            pending.append(table.slice(0, take))
            held += take
            table = table.slice(take)
            if held == chunk_flows:
                yield pa.concat_tables(pending)
                pending, held = [], 0
    if held:
        yield pa.concat_tables(pending)


def read_ahead(items: Iterator[pa.Table], depth: int = 1) -> Iterator[pa.Table]:
    """The items of ``items``, produced by a background thread up to ``depth`` ahead of the consumer.

    Reading the next chunk (Kafka polls, IPC decoding, filtering: they release the GIL) then
    overlaps with the consumer's work on the current one; memory holds ``depth`` more chunks.
    An error in the reader is raised in the consumer; a consumer that stops early stops the reader.
    """
    queue: Queue = Queue(maxsize=depth)
    stop = threading.Event()

    def put(entry: tuple) -> bool:
        while not stop.is_set():
            try:
                queue.put(entry, timeout=0.1)
                return True
            except Full:
                continue
        return False

    def produce() -> None:
        try:
            for item in items:
                if not put(("item", item)):
                    return
            put(("end", None))
        except BaseException as exc:  # handed to the consumer, which raises it
            put(("error", exc))
        finally:
            getattr(items, "close", lambda: None)()  # a generator's cleanup runs in its own thread

    reader = threading.Thread(target=produce, name="flowlens-read-ahead", daemon=True)
    reader.start()
    try:
        while True:
            kind, value = queue.get()
            if kind == "end":
                return
            if kind == "error":
                raise value
            yield value
    finally:
        stop.set()
        reader.join()


@dataclass(frozen=True)
class WindowSummary:
    """Totals of the flows received in [start, end) (bytes and packets already scaled by sampling)."""

    rows: int
    bytes: int
    packets: int
    first: datetime | None  # receive time of the first and last flow, None when there is none
    last: datetime | None


class Landing(Protocol):
    name: str

    def write(self, batch: pa.RecordBatch) -> None:
        """Land one batch durably (raise after retries are exhausted; the caller keeps the batch)."""

    def heartbeat(self, instance: str, landed_through: datetime, flows_landed: int) -> None:
        """Publish that ``instance`` has landed every flow received before ``landed_through``."""

    def read_window(self, start: datetime, end: datetime) -> WindowRead:
        """Exactly the flows whose receive_time is in [start, end); the same rows on every call."""

    def read_window_chunks(self, start: datetime, end: datetime, chunk_flows: int) -> WindowChunks:
        """The same rows as :meth:`read_window`, streamed in tables of about ``chunk_flows`` rows."""

    def watermarks(self) -> list[Watermark]:
        """The latest watermark of every ingest instance that ever published one."""

    def newest_receive_time(self) -> datetime | None:
        """Receive time of the newest landed flow (for lag in seconds, the scaling model §8.2)."""

    def close(self) -> None: ...


@runtime_checkable
class SummarizesWindows(Protocol):
    """Optional capability: totals of a window without reading its flows back.

    The PostgreSQL landing has it (one aggregate query); the Kafka landing does not, since
    counting a window there means reading it: it publishes what it landed per window instead
    (``KafkaLanding.landed_tally``, :mod:`ingest.land.ledger`). Callers test
    ``isinstance(landing, SummarizesWindows)``.
    """

    def summarize_window(self, start: datetime, end: datetime) -> WindowSummary:
        """Row count, byte and packet sums, first and last receive time of [start, end)."""


@runtime_checkable
class WritesAsync(Protocol):
    """Optional capability: writes that settle later (the Kafka landing's producer).

    ``write_async`` returns at once; ``on_done`` runs from :meth:`poll`, which the writing thread
    calls regularly. A landing without it is written with the blocking :meth:`Landing.write`.
    """

    def write_async(self, batch: pa.RecordBatch, on_done: OnDone) -> None:
        """Start landing ``batch``; ``on_done(failed_parts, error)`` runs once it is settled."""

    def poll(self, timeout: float = 0.0) -> int:
        """Serve settled writes' callbacks; returns how many ran."""
