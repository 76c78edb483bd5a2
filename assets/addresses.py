"""Conversions between the 16-byte address columns of ``ingest.schema`` and text.

Addresses are converted once per distinct value (a window has thousands of addresses but
millions of flows), then joined back, so the Python ``ipaddress`` call never runs per flow.
"""

from __future__ import annotations

import polars as pl

from ingest.addresses import V4_PREFIX, addr_bytes, addr_text

__all__ = ["V4_PREFIX", "addr_bytes", "addr_text", "with_text"]


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
