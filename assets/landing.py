"""``flows_landed``: the landing (Kafka ``flows.raw`` or PostgreSQL ``flow_raw``) as an external asset.

Dagster does not write it: the ingest daemon does. The watermark sensor reports each complete
window as a materialization of this asset (rows, bytes, offsets or row range), which is what
lets Dagster show freshness and start the downstream windows.
"""

from __future__ import annotations

from datetime import datetime

import dagster as dg
import polars as pl
import pyarrow as pa

from assets.keys import FLOWS_LANDED
from assets.partitions import five_minute_partitions
from ingest.land.base import WindowChunks, rechunk

flows_landed = dg.AssetSpec(
    FLOWS_LANDED,
    description=(
        "Decoded flows as the ingest daemon lands them: Kafka flows.raw (Arrow IPC batches, standard/full "
        "modes) or PostgreSQL flowlens.flow_raw (minimal mode). One 5-minute partition per receive-time window."
    ),
    partitions_def=five_minute_partitions,
    group_name="flows",
    kinds={"kafka", "postgres"},
    metadata={"dagster/table_name": "flows.raw | flowlens.flow_raw"},
)


def read_landed(landing, window: datetime, end: datetime):
    """The landed flows of [window, end) and where they came from (``ingest.land.base.WindowRead``)."""
    read = landing.read_window(window, end)
    if not isinstance(read.flows, pa.Table):
        raise TypeError(f"landing {getattr(landing, 'name', landing)!r} returned {type(read.flows)}, not a pa.Table")
    return read


def read_landed_chunks(landing, window: datetime, end: datetime, chunk_flows: int) -> WindowChunks:
    """The landed flows of [window, end) streamed in tables of about ``chunk_flows`` rows.

    A landing without a streaming read (the auto mode's pair of landings reads both and merges)
    is read whole and cut into chunks, so its memory is the window's, as before.
    """
    if hasattr(landing, "read_window_chunks"):
        return landing.read_window_chunks(window, end, chunk_flows)
    read = read_landed(landing, window, end)
    return WindowChunks(chunks=rechunk(iter([read.flows]), chunk_flows), source=read.source, position=read.position)


def flows_frame(table: pa.Table) -> pl.DataFrame:
    """The landed Arrow table as a Polars frame (fixed-size binary addresses become Binary)."""
    return pl.from_arrow(table, rechunk=False)
