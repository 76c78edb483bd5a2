"""The Parquet lake: one file set per window, hive-style by date, readable by DuckDB as is.

Layout: ``<lake>/enriched_flows/date=YYYY-MM-DD/window=HHMM/part-0.parquet``. A window is
written to a sibling temporary directory and swapped in with a rename, so a reader never sees
half a window and re-writing a window replaces it whole (idempotent backfills).

DuckDB: ``SELECT * FROM read_parquet('<lake>/enriched_flows/*/*/*.parquet', hive_partitioning=true)``
(or ``flowlens sql --lake``, which registers the view ``enriched_flows``).
"""

from __future__ import annotations

import os
import shutil
import uuid
from pathlib import Path

import polars as pl

PART_FILE = "part-0.parquet"


def write_window(frame: pl.DataFrame, directory: Path) -> Path:
    """Replace the window directory's contents with ``frame`` as one Parquet file; returns the file."""
    directory.parent.mkdir(parents=True, exist_ok=True)
    staging = directory.parent / f".{directory.name}.{uuid.uuid4().hex}"
    staging.mkdir()
    # lz4: measured 1.7x faster to write than zstd level 1 for ~1.4x the size (2M enriched flows:
    # 1.8 s / 107 MB vs 3.1 s / 75 MB); a window must be written well inside its 5 minutes
    frame.write_parquet(staging / PART_FILE, compression="lz4", statistics=True)
    old = None
    if directory.exists():
        old = directory.parent / f".{directory.name}.old.{uuid.uuid4().hex}"
        os.rename(directory, old)
    os.rename(staging, directory)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
    return directory / PART_FILE


def scan_window(directory: Path) -> pl.LazyFrame:
    """The window's flows, lazily; raises with what to do when the window was never written."""
    files = sorted(directory.glob("*.parquet"))
    if not files:
        raise FileNotFoundError(f"no Parquet files in {directory}: materialize enriched_flows for this window first")
    return pl.scan_parquet(files)


def drop_days_before(root: Path, asset: str, first_kept_day: str) -> list[str]:
    """Remove ``date=`` directories older than ``first_kept_day`` (YYYY-MM-DD); returns what was removed."""
    removed = []
    for day_dir in sorted((root / asset).glob("date=*")):
        if day_dir.name.removeprefix("date=") < first_kept_day:
            shutil.rmtree(day_dir, ignore_errors=True)
            removed.append(day_dir.name)
    return removed
