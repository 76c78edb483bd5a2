"""Arrow IPC streams of :data:`ingest.schema.FLOW_SCHEMA`: the payload of a Kafka ``flows.raw``
message and of a PostgreSQL ``flow_raw_batches`` row alike (one record batch per stream)."""

from __future__ import annotations

import pyarrow as pa

from ingest.schema import FLOW_SCHEMA


def ipc_options(compression: str | None) -> pa.ipc.IpcWriteOptions:
    """IPC write options: ``compression`` "lz4" or "zstd" compresses each buffer (Arrow IPC body
    compression, read back transparently by any Arrow reader); None or "none" writes them raw."""
    codec = None if compression in (None, "none") else compression
    return pa.ipc.IpcWriteOptions(compression=codec, use_threads=False)


_RAW = ipc_options(None)


def to_ipc(batch: pa.RecordBatch, options: pa.ipc.IpcWriteOptions = _RAW) -> bytes:
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, FLOW_SCHEMA, options=options) as writer:
        writer.write_batch(batch)
    return sink.getvalue().to_pybytes()


def from_ipc(value: bytes | pa.Buffer) -> pa.Table:
    return pa.ipc.open_stream(value).read_all()
