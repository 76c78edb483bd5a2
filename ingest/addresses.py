"""The 16-byte address form of ``ingest.schema`` and its text form, one value at a time.

IPv4 travels as IPv4-mapped IPv6 (``::ffff:a.b.c.d``) so one fixed-size column holds both families.
The scalar helpers serve the edges (CLI output, tests, distinct-value tables); whole columns are
converted vectorized where they are used (decoder, PostgreSQL COPY, enrichment keys), with
``V4_PREFIX_BYTES`` and ``v4_mapped`` for ``(n, 16)`` byte matrices.
"""

from __future__ import annotations

import ipaddress

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

V4_PREFIX = b"\x00" * 10 + b"\xff\xff"
V4_PREFIX_BYTES = np.frombuffer(V4_PREFIX, np.uint8)  # the prefix as a row of an (n, 16) uint8 matrix


def v4_mapped(matrix: np.ndarray) -> np.ndarray:
    """Per row of an ``(n, 16)`` uint8 address matrix: whether it is an IPv4-mapped address."""
    return (matrix[:, :12] == V4_PREFIX_BYTES).all(axis=1)


def addr_text(raw: bytes | None) -> str | None:
    """'10.0.0.5' for an IPv4-mapped value, '2001:db8::1' for IPv6, None for None."""
    if raw is None:
        return None
    if raw[:12] == V4_PREFIX:
        return str(ipaddress.IPv4Address(raw[12:]))
    return str(ipaddress.IPv6Address(raw))


def addr_bytes(text: str) -> bytes:
    """The 16-byte form of an address given as text (IPv4 becomes IPv4-mapped IPv6)."""
    ip = ipaddress.ip_address(text)
    return V4_PREFIX + ip.packed if ip.version == 4 else ip.packed


def addresses(col: pa.Array) -> np.ndarray:
    """A binary(16) Arrow column as an (n, 16) uint8 matrix (zero-copy)."""
    data = np.frombuffer(col.buffers()[1], np.uint8)
    return data[col.offset * 16 : (col.offset + len(col)) * 16].reshape(-1, 16)


def address_matrix(column: pa.Array | pa.ChunkedArray) -> np.ndarray | None:
    """A column of 16-byte addresses as an (n, 16) uint8 matrix, or None if a value is another size."""
    if isinstance(column, pa.ChunkedArray):
        column = column.combine_chunks()
    if not (pa.types.is_fixed_size_binary(column.type) and column.type.byte_width == 16):
        try:
            column = pc.cast(column, pa.binary(16))  # Polars hands over large_binary
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            return None
    if len(column) == 0:
        return np.empty((0, 16), np.uint8)
    return addresses(column)
