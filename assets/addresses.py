"""Conversions between the 16-byte address columns of ``ingest.schema`` and text.

Addresses are converted once per distinct value (a window has thousands of addresses but
millions of flows), then joined back, so the Python ``ipaddress`` call never runs per flow.
"""

from __future__ import annotations

import ipaddress

import polars as pl

V4_PREFIX = b"\x00" * 10 + b"\xff\xff"


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


def with_text(frame: pl.DataFrame, columns: dict[str, str]) -> pl.DataFrame:
    """Add text columns (``{source_binary_column: new_text_column}``), converting distinct values only."""
    for source, target in columns.items():
        distinct = frame.get_column(source).unique().drop_nulls()
        mapping = pl.DataFrame(
            {source: distinct, target: [addr_text(v) for v in distinct.to_list()]},
            schema={source: frame.schema[source], target: pl.String},
        )
        frame = frame.join(mapping, on=source, how="left", maintain_order="left")
    return frame
