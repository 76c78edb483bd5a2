"""Test helpers: random but valid FLOW_SCHEMA batches (a pure-data fake for unit tests only)."""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from ingest.addresses import V4_PREFIX_BYTES
from ingest.schema import AS_LIST, FLOW_SCHEMA


def random_flows(n: int, start_us: int, span_us: int = 1_000_000, seed: int = 1, v6_share: float = 0.2,
                 null_share: float = 0.3) -> pa.RecordBatch:  # fmt: skip
    """``n`` flows with receive_time in [start_us, start_us + span_us), mixed IPv4/IPv6 and NULLs."""
    rng = np.random.default_rng(seed)

    def addrs() -> pa.Array:
        raw = rng.integers(0, 256, size=(n, 16), dtype=np.uint8)
        v4 = rng.random(n) >= v6_share
        raw[v4, :12] = V4_PREFIX_BYTES
        return pa.FixedSizeBinaryArray.from_buffers(pa.binary(16), n, [None, pa.py_buffer(raw.tobytes())])

    def maybe_null(values: np.ndarray, typ: pa.DataType) -> pa.Array:
        return pa.array(values, typ, mask=rng.random(n) < null_share)

    def maybe_null_addrs() -> pa.Array:
        valid = rng.random(n) >= null_share
        bitmap = pa.py_buffer(np.packbits(valid, bitorder="little"))
        return pa.FixedSizeBinaryArray.from_buffers(pa.binary(16), n, [bitmap, addrs().buffers()[1]])

    def lists() -> pa.Array:
        """Lists of 0-5 AS numbers (or communities); NULL for ``null_share`` of the rows."""
        counts = rng.integers(0, 6, n) * (rng.random(n) >= null_share)
        offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int32)
        values = pa.array(rng.integers(0, 2**32, int(counts.sum())), pa.uint32())
        mask = pa.array((counts == 0) & (rng.random(n) < 0.7))  # most empty ones NULL, some '{}'
        return pa.ListArray.from_arrays(pa.array(offsets), values, type=AS_LIST, mask=mask)

    receive = start_us + np.sort(rng.integers(0, span_us, n))
    cols = {
        "receive_time": pa.array(receive, pa.int64()).cast(FLOW_SCHEMA.field("receive_time").type),
        "exporter": addrs(),
        "observation_domain": pa.array(rng.integers(0, 2**32, n), pa.uint32()),
        "flow_version": pa.array(rng.choice([5, 9, 10], n), pa.uint8()),
        "flow_start": maybe_null(receive - 5_000_000, pa.int64()).cast(FLOW_SCHEMA.field("flow_start").type),
        "flow_end": maybe_null(receive - 1_000_000, pa.int64()).cast(FLOW_SCHEMA.field("flow_end").type),
        "src_addr": addrs(),
        "dst_addr": addrs(),
        "src_port": pa.array(rng.integers(0, 65536, n), pa.uint16()),
        "dst_port": pa.array(rng.integers(0, 65536, n), pa.uint16()),
        "protocol": pa.array(rng.choice([6, 17, 1], n), pa.uint8()),
        "tcp_flags": pa.array(rng.integers(0, 256, n), pa.uint16()),
        "bytes": pa.array(rng.integers(40, 10**9, n), pa.uint64()),
        "packets": pa.array(rng.integers(1, 10**6, n), pa.uint64()),
        "sampling_rate": pa.array(rng.choice([1, 10, 100], n), pa.uint32()),
        "input_if": maybe_null(rng.integers(0, 2**32, n), pa.uint32()),
        "output_if": maybe_null(rng.integers(0, 2**32, n), pa.uint32()),
        "src_as": maybe_null(rng.integers(0, 2**32, n), pa.uint32()),
        "dst_as": maybe_null(rng.integers(0, 2**32, n), pa.uint32()),
        "direction": maybe_null(rng.integers(0, 2, n), pa.uint8()),
        "next_hop": maybe_null_addrs(),
        "as_path": lists(),
        "communities": lists(),
    }
    return pa.RecordBatch.from_arrays([cols[f.name] for f in FLOW_SCHEMA], schema=FLOW_SCHEMA)
