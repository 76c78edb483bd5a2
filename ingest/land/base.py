"""The one landing interface both backends implement (Kafka ``flows.raw``, PostgreSQL ``flow_raw``).

Writers (the ingest daemon) call :meth:`Landing.write` and :meth:`Landing.heartbeat`; readers (the
Dagster pipeline) call :meth:`Landing.read_window` and :meth:`Landing.watermarks`. Batches carry
:data:`ingest.schema.FLOW_SCHEMA`; a written batch never straddles a 5-minute window boundary of
``receive_time``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol, runtime_checkable

import pyarrow as pa

from ingest.window import WINDOW, window_start

__all__ = [
    "WINDOW",
    "Landing",
    "OnDone",
    "SummarizesWindows",
    "Watermark",
    "WindowRead",
    "WindowSummary",
    "WritesAsync",
    "window_start",
]

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
