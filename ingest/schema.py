"""The normalized flow record: the one schema every decoder produces and everything downstream reads.

Addresses (exporter, source, destination) are 16-byte big-endian values: IPv6 as is, IPv4 as
IPv4-mapped IPv6 (``::ffff:a.b.c.d``). A fixed-size binary column keeps decoding, hashing and
joining vectorized; conversion to text or PostgreSQL ``inet`` happens at the edges, once per
distinct address where possible.

Bytes and packets are already multiplied by ``sampling_rate`` (1 = unsampled); flow counts are not.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa

ADDR = pa.binary(16)
TS = pa.timestamp("us", tz="UTC")
AS_LIST = pa.list_(pa.field("item", pa.uint32(), nullable=False))
# Columns that not every decoder fills: a decoder leaves them out of its columns and they land as nulls.
ROUTING_COLUMNS = ("next_hop", "as_path", "communities")

FLOW_SCHEMA = pa.schema(
    [
        pa.field("receive_time", TS, nullable=False),  # collector clock: assigns the 5-minute window
        pa.field("exporter", ADDR, nullable=False),  # IP source address of the export packet
        pa.field("observation_domain", pa.uint32(), nullable=False),  # v9 source id / IPFIX domain
        pa.field("flow_version", pa.uint8(), nullable=False),  # 5, 9, 10 (IPFIX) or 105 (sFlow v5)
        pa.field("flow_start", TS),
        pa.field("flow_end", TS),
        pa.field("src_addr", ADDR, nullable=False),
        pa.field("dst_addr", ADDR, nullable=False),
        pa.field("src_port", pa.uint16(), nullable=False),
        pa.field("dst_port", pa.uint16(), nullable=False),
        pa.field("protocol", pa.uint8(), nullable=False),
        pa.field("tcp_flags", pa.uint16(), nullable=False),
        pa.field("bytes", pa.uint64(), nullable=False),  # sampling-scaled
        pa.field("packets", pa.uint64(), nullable=False),  # sampling-scaled
        pa.field("sampling_rate", pa.uint32(), nullable=False),  # 1 = unsampled
        pa.field("input_if", pa.uint32()),
        pa.field("output_if", pa.uint32()),
        pa.field("src_as", pa.uint32()),
        pa.field("dst_as", pa.uint32()),
        pa.field("direction", pa.uint8()),  # IE 61: 0 ingress, 1 egress; null when not exported
        # Routing context of the sampled packet (sFlow extended router/gateway records; null for
        # NetFlow v5/v9 and IPFIX): next hop, BGP AS path (segments flattened in order) and BGP
        # communities (32-bit values, ASN << 16 | value).
        pa.field("next_hop", ADDR),
        pa.field("as_path", AS_LIST),
        pa.field("communities", AS_LIST),
    ]
)

FLOW_COLUMNS: tuple[str, ...] = tuple(FLOW_SCHEMA.names)
# ``flow_version`` of sFlow v5 flows: sFlow's own version number (5) is NetFlow v5's.
SFLOW_VERSION = 105


def receive_times_us(batch: pa.RecordBatch) -> np.ndarray:
    """A batch's ``receive_time`` as int64 µs, without a copy (the column is never null)."""
    col = batch.column("receive_time")
    return np.frombuffer(col.buffers()[1], np.int64, len(col), col.offset * 8)


def empty_flows() -> pa.RecordBatch:
    """A zero-row batch with the flow schema (what a decoder returns for a packet with no flows)."""
    return pa.RecordBatch.from_pylist([], schema=FLOW_SCHEMA)
