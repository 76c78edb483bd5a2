"""What the checks read, read once per step: PostgreSQL, the Parquet lake (DuckDB), the landing.

:class:`Sources` holds one PostgreSQL connection and caches per span what several checks of a
step need (``window_loads`` rows, landing/lake/flow_stats totals), so a step reads each source
once. It also runs the suspect-row queries of :mod:`flowlens_dagster.checks.suspects`.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import psycopg

from flowlens_dagster.checks import names
from flowlens_dagster.checks.suites import TableSuite
from flowlens_dagster.checks.suspects import MAX_SUSPECTS, summary_sql, suspects_sql
from flowlens_dagster.checks.windows import Span
from ingest.land.postgres import BATCHES, count_rows, summarize_batches, summarize_window


@dataclass(frozen=True)
class Totals:
    """Flow count and sampling-scaled byte and packet sums of one source for one span."""

    flows: int
    bytes: int
    packets: int

    def differences(self, other: Totals) -> dict[str, int]:
        """``{field: self - other}`` for every field that differs."""
        out = {k: getattr(self, k) - getattr(other, k) for k in ("flows", "bytes", "packets")}
        return {k: v for k, v in out.items() if v}

    def as_dict(self) -> dict[str, int]:
        return {"flows": self.flows, "bytes": self.bytes, "packets": self.packets}


@dataclass(frozen=True)
class DuckLimits:
    """What one DuckDB query of the checks may hold in memory, whatever the window's size.

    DuckDB's default cap is 80% of the machine's RAM, so grouping a 60M-flow window by its flow key
    (the enriched suite's uniqueness test) grew the process by ~2 GB. Under ``memory_mb`` DuckDB
    spills its hash tables and sorts to ``spill_dir`` instead (README "Data quality").
    ``threads``: None lets DuckDB use every core (each thread holds its own partial tables).
    """

    memory_mb: int = 1024
    spill_dir: Path | None = None
    threads: int | None = None

    def connect(self) -> Any:
        """A DuckDB connection bounded by these limits."""
        import duckdb

        config: dict[str, Any] = {"memory_limit": f"{self.memory_mb}MiB", "preserve_insertion_order": False}
        if self.spill_dir is not None:
            self.spill_dir.mkdir(parents=True, exist_ok=True)
            config["temp_directory"] = str(self.spill_dir)
        if self.threads:
            config["threads"] = self.threads
        return duckdb.connect(config=config)


class Sources:
    """What the checks of one process read, with per-span caching so a step reads each source once.

    ``dsn`` is a psycopg conninfo and ``url`` the same database as a SQLAlchemy URL (for GX);
    ``lake_dir(window_start)`` gives the window's Parquet directory; ``open_landing()`` returns an
    ``ingest.land.base.Landing`` (only needed when the landing is Kafka); ``duck`` bounds the
    memory of the DuckDB queries over the lake.
    """

    def __init__(
        self,
        dsn: str,
        url: str,
        lake_dir: Callable[[datetime], Path],
        open_landing: Callable[[], Any] | None = None,
        kafka_landing: bool = False,
        duck: DuckLimits | None = None,
    ) -> None:
        self.duck = duck or DuckLimits()
        self.kafka_landing = kafka_landing  # the mode's landing, when no load says where it read
        self.dsn = dsn
        self.url = url  # SQLAlchemy URL for Great Expectations
        self.lake_dir = lake_dir
        self.open_landing = open_landing
        self._cache: dict[tuple[str, str], Any] = {}
        self._conn: psycopg.Connection | None = None

    def _cached(self, kind: str, span: Span, compute: Callable[[], Any]) -> Any:
        key = (kind, span.key)
        if key not in self._cache:
            self._cache[key] = compute()
        return self._cache[key]

    @contextmanager
    def connect(self) -> Iterator[psycopg.Connection]:
        """The one autocommit connection of these sources (opened on first use, reopened if broken)."""
        if self._conn is None or self._conn.closed or self._conn.broken:
            self._conn = psycopg.connect(self.dsn, autocommit=True)
        yield self._conn

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def load(self, span: Span, asset: str) -> dict[str, Any] | None:
        """The ``window_loads`` row of (span, asset), or None when the window was never loaded."""
        return self._cached(f"load:{asset}", span, lambda: _window_load(self, span, asset))

    def landed(self, span: Span) -> Totals:
        """What the landing holds for the span now (PostgreSQL ``flow_raw`` or Kafka ``flows.raw``)."""
        return self._cached("landed", span, lambda: self._landed(span))

    def _landed(self, span: Span) -> Totals:
        if self.landing_is_kafka(span):
            return _arrow_totals(self.landed_table(span))
        with self.connect() as conn:
            if self.landing_read_batches(span):  # rows as SQL users see them, sums as the pipeline read them
                batches = summarize_batches(conn, span.start, span.end)
                return Totals(count_rows(conn, span.start, span.end), batches.bytes, batches.packets)
            summary = summarize_window(conn, span.start, span.end)
        return Totals(summary.rows, summary.bytes, summary.packets)

    def landing_read_batches(self, span: Span) -> bool:
        """``enriched_flows`` read the window from PostgreSQL's ``flow_raw_batches``: it found there
        exactly the window's rows of ``flow_raw`` as landed (``ingest.land.postgres``), so the
        batches' stored byte and packet totals stand for what was landed and read, and the lake
        files for the landed columns (as on Kafka); ``flow_raw``'s rows are still counted."""
        load = self.load(span, names.ENRICHED_FLOWS)
        return bool(load) and (load.get("source_position") or {}).get("read") == BATCHES

    def lake_files(self, span: Span) -> list[Path]:
        return sorted(self.lake_dir(span.start).glob("*.parquet"))

    def lake(self, span: Span) -> Totals | None:
        """Totals of the window's Parquet files, or None when the window has no files."""
        return self._cached("lake", span, lambda: _lake_totals(self.duck, self.lake_files(span)))

    def lake_query(self, span: Span, columns: list[str], extra: str = "") -> str | None:
        """DuckDB SELECT of the window's lake rows (``columns`` that exist, plus SQL ``extra``), or None."""
        files = self.lake_files(span)
        return _lake_query(files, columns, extra) if files else None

    def landing_is_kafka(self, span: Span) -> bool:
        if self.open_landing is None:
            return False
        load = self.load(span, names.ENRICHED_FLOWS)
        # auto mode ("auto:...") reads a window from both landings: count what the landing reads, as for Kafka
        return str(load["source"]).startswith(("kafka", "auto")) if load else self.kafka_landing

    def landing_has_ledger(self, span: Span) -> bool:
        """The window was read from Kafka alone, whose landings record what they landed per window
        (:mod:`ingest.land.ledger`); auto mode reads PostgreSQL too, so it is counted by reading back."""
        if self.open_landing is None:
            return False
        load = self.load(span, names.ENRICHED_FLOWS)
        return str(load["source"]).startswith("kafka") if load else self.kafka_landing

    def ledger(self, span: Span) -> Any:
        """The landings' own tally of the window and the raw topic's log start offsets
        (an ``ingest.land.ledger.LedgerReading``): no flow is read back."""

        def tally(landing: Any) -> Any:
            return landing.landed_tally(span.start)

        return self._cached("ledger", span, lambda: self._with_landing(tally))

    def landed_table(self, span: Span) -> Any:
        """The landing's rows for the window as Arrow (Kafka mode, where there is no table to query)."""
        return self._cached("landed_table", span, lambda: self._read_landing(span))

    def pg_suspects(self, suite: TableSuite) -> tuple[int, Any, bool]:
        """(rows in the span, suspect rows as pandas, capped) of ``suite.query`` run by PostgreSQL."""
        with self.connect() as conn:
            rows, suspects = conn.execute(summary_sql(suite, suite.scan or suite.query)).fetchone()
            # Clean (the usual case): LIMIT 0 returns just the columns, without scanning again.
            cur = conn.execute(suspects_sql(suite, suite.query, limit=MAX_SUSPECTS if suspects else 0))
            frame = _frame(cur.fetchall(), [d.name for d in cur.description])
        return int(rows), frame, len(frame) >= MAX_SUSPECTS

    def duck_suspects(
        self, suite: TableSuite, base: str, rows: int, tables: dict[str, Any] | None = None
    ) -> tuple[int, Any, bool]:
        """The same with DuckDB (the lake's Parquet files, or Arrow ``tables`` registered by name),
        for a span whose row count the caller knows (Parquet metadata, Arrow)."""
        with self.duck.connect() as con:
            for name, table in (tables or {}).items():
                con.register(name, table)
            frame = con.execute(suspects_sql(suite, base, "duckdb")).df()
        return rows, _readable_binary(frame), len(frame) >= MAX_SUSPECTS

    def cached(self, kind: str, span: Span, compute: Callable[[], Any]) -> Any:
        """``compute()`` once per (kind, span) for the life of these sources."""
        return self._cached(kind, span, compute)

    def duck_row(self, query: str) -> dict[str, Any]:
        """The one row of a DuckDB query (over the lake's Parquet files) as {column: value}."""
        with self.duck.connect() as con:
            cur = con.execute(query)
            return dict(zip([d[0] for d in cur.description], cur.fetchone(), strict=True))

    def duck_columns(self, base: str) -> Any:
        """No row, only the columns of ``base`` (what GX validates when nothing is suspect)."""
        with self.duck.connect() as con:
            return con.execute(f"SELECT * FROM ({base}) w LIMIT 0").df()

    def lake_rows(self, span: Span) -> int:
        """Rows in the window's Parquet files, from their footers (no data read)."""
        import pyarrow.parquet as pq

        return sum(pq.read_metadata(p).num_rows for p in self.lake_files(span))

    def _read_landing(self, span: Span) -> Any:
        return self._with_landing(lambda landing: landing.read_window(span.start, span.end).flows)

    def _with_landing(self, use: Callable[[Any], Any]) -> Any:
        landing = self.open_landing()
        try:
            return use(landing)
        finally:
            landing.close()

    def stats(self, span: Span, table: str = "flowlens.flow_stats", column: str = "window_start") -> Totals:
        """Sums over the rows of an aggregate table whose ``column`` lies in the span."""
        start, end = span.sql()
        return self._cached(
            f"stats:{table}",
            span,
            lambda: _sql_totals(
                self,
                f"SELECT sum(flows), sum(bytes), sum(packets) FROM {table} "
                f"WHERE {column} >= {start} AND {column} < {end}",
            ),
        )


def _window_load(sources: Sources, span: Span, asset: str) -> dict[str, Any] | None:
    with sources.connect() as conn, conn.cursor(row_factory=psycopg.rows.dict_row) as cur:
        cur.execute("SELECT * FROM flowlens.window_loads WHERE window_start = %s AND asset = %s", (span.start, asset))
        return cur.fetchone()


def _sql_totals(sources: Sources, query: str) -> Totals:
    with sources.connect() as conn:
        row = conn.execute(query).fetchone()
    return Totals(*(int(v or 0) for v in row))


def _arrow_totals(table: Any) -> Totals:
    import pyarrow.compute as pc

    def total(column: str) -> int:
        return int(pc.sum(table.column(column)).as_py() or 0) if table.num_rows else 0

    return Totals(table.num_rows, total("bytes"), total("packets"))


def _binary_text(value: Any) -> str | None:
    if value is None:
        return None
    raw = bytes(value)
    if len(raw) != 16:
        return raw.hex()
    address = ipaddress.IPv6Address(raw)
    return str(address.ipv4_mapped or address)


def _parquet_list(files: list[Path]) -> str:
    return "[" + ", ".join("'" + str(p).replace("'", "''") + "'" for p in files) + "]"


def _lake_query(files: list[Path], columns: list[str], extra: str) -> str:
    import pyarrow.parquet as pq

    present = set(pq.read_schema(files[0]).names)
    selected = ", ".join(f'"{c}"' for c in columns if c in present)
    return f"SELECT {selected}{', ' + extra if extra else ''} FROM read_parquet({_parquet_list(files)})"


def _frame(rows: list[tuple], columns: list[str]) -> Any:
    import pandas as pd

    return pd.DataFrame.from_records(rows, columns=columns)


def _readable_binary(frame: Any) -> Any:
    """Binary values reach pandas as bytearray, which GX cannot hash: 16-byte addresses become IP
    text (IPv4-mapped shown as IPv4), anything else hex. Only suspect rows pass here, so it is cheap."""
    for column in frame.columns:
        values = frame[column].dropna()
        if frame[column].dtype == object and len(values) and isinstance(values.iloc[0], bytes | bytearray):
            frame[column] = frame[column].map(_binary_text)
    return frame


def _lake_totals(duck: DuckLimits, files: list[Path]) -> Totals | None:
    if not files:
        return None
    with duck.connect() as con:
        row = con.execute(
            f"SELECT count(*), sum(bytes::HUGEINT), sum(packets::HUGEINT) FROM read_parquet({_parquet_list(files)})"
        ).fetchone()
    return Totals(*(int(v or 0) for v in row))
