"""The checks' DuckDB queries run under a memory cap and spill, and still find what they must (pure:
temporary Parquet files, no service)."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from flowlens_dagster.checks.sources import DuckLimits, Sources
from flowlens_dagster.checks.suspects import repeated_keys_sql

ROWS = 3_000_000  # a key group-by this wide needs more than the cap below in memory


def _sources(limits: DuckLimits) -> Sources:
    return Sources("", "", lambda _start: None, duck=limits)  # no PostgreSQL: only DuckDB is used


def test_connection_carries_the_cap_and_spill_directory(tmp_path) -> None:
    limits = DuckLimits(memory_mb=96, spill_dir=tmp_path / "spill", threads=1)
    with limits.connect() as con:
        settings = dict(
            con.execute(
                "SELECT name, value FROM duckdb_settings() WHERE name IN ('memory_limit', 'temp_directory', 'threads')"
            ).fetchall()
        )
    assert settings["memory_limit"] == "96.0 MiB"
    assert settings["temp_directory"] == str(tmp_path / "spill")
    assert settings["threads"] == "1"
    assert (tmp_path / "spill").is_dir()


def _keys(path, duplicate: bool) -> str:
    rng = np.random.default_rng(7)
    a = rng.permutation(ROWS).astype(np.int64)  # distinct keys
    if duplicate:
        a[-1] = a[0]  # one key twice: the uniqueness test must see it
    table = pa.table({"a": a, "b": np.zeros(ROWS, np.int32), "c": rng.integers(0, 9, ROWS).astype(np.int16)})
    pq.write_table(table, path, row_group_size=250_000)
    return f"SELECT a, b FROM read_parquet('{path}')"


def test_uniqueness_under_a_small_cap_still_finds_a_repeated_key(tmp_path) -> None:
    limits = DuckLimits(memory_mb=64, spill_dir=tmp_path / "spill", threads=1)
    sources = _sources(limits)
    clean = _keys(tmp_path / "clean.parquet", duplicate=False)
    dirty = _keys(tmp_path / "dirty.parquet", duplicate=True)
    assert sources.duck_row(repeated_keys_sql(clean, ["a", "b"]))["repeated"] == 0
    assert sources.duck_row(repeated_keys_sql(dirty, ["a", "b"]))["repeated"] == 1
