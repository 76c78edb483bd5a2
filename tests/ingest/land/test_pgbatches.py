"""The PostgreSQL landing's batches (``flow_raw_batches``): stored with their rows, read instead of
them exactly when they hold the window's rows as landed, and the rows read otherwise."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import psycopg
import pyarrow as pa
import pyarrow.compute as pc
import pytest

from ingest.land import postgres as pg
from ingest.land.postgres import PostgresLanding
from ingest.window import WINDOW
from ingest.worker import split_windows
from tests.ingest.flows import random_flows

pytestmark = pytest.mark.integration
W0 = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)
KEY = ("receive_time", "src_addr", "dst_addr", "src_port", "dst_port", "bytes")


def us(ts: datetime) -> int:
    return int(ts.timestamp() * 1_000_000)


def ordered(table: pa.Table) -> pa.Table:
    return table.sort_by([(c, "ascending") for c in KEY])


@pytest.fixture
def landing(flowlens_config, clean_pg):
    land = PostgresLanding(flowlens_config.postgres.dsn())
    yield land
    land.close()


def land_window(landing: PostgresLanding, flows: int = 3_000, seed: int = 5) -> pa.Table:
    batch = random_flows(flows, us(W0), span_us=int(WINDOW.total_seconds() * 1e6), seed=seed)
    for piece in split_windows(batch):
        for offset in range(0, piece.num_rows, 1_000):  # the daemon lands a window in many batches
            landing.write(piece.slice(offset, 1_000))
    return pa.Table.from_batches([batch])


def read(landing: PostgresLanding, start: datetime = W0, end: datetime = W0 + WINDOW, chunk: int = 700):
    chunks = landing.read_window_chunks(start, end, chunk)
    tables = list(chunks.chunks)
    assert all(t.num_rows <= chunk for t in tables)
    return pa.concat_tables(tables), chunks.position


def rows_read(landing: PostgresLanding, start: datetime = W0, end: datetime = W0 + WINDOW) -> pa.Table:
    """The same window through the row path alone (binary COPY of flow_raw)."""
    return pa.concat_tables(list(landing._slices(start, end, 1_000, {"rows": 0})))


def test_each_batch_is_stored_with_its_rows_and_totals(landing, pg_dsn):
    landed = land_window(landing)
    with psycopg.connect(pg_dsn) as conn:
        batches = conn.execute(
            "SELECT count(*), sum(flows), sum(bytes), sum(packets), min(receive_start), max(receive_end),"
            " count(DISTINCT xmin::text) FROM flowlens.flow_raw_batches"
        ).fetchone()
        rows_xmins = conn.execute("SELECT count(DISTINCT xmin::text) FROM flowlens.flow_raw").fetchone()[0]
    times = landed.column("receive_time")
    assert batches[:4] == (3, 3_000, pc.sum(landed.column("bytes")).as_py(), pc.sum(landed.column("packets")).as_py())
    assert (batches[4], batches[5]) == (pc.min(times).as_py(), pc.max(times).as_py())
    assert batches[6] == rows_xmins == 3  # one transaction per write: its rows and its batch


def test_a_window_is_read_from_its_batches_and_equals_its_rows(landing):
    landed = land_window(landing)
    table, position = read(landing)
    assert position["read"] == "flow_raw_batches" and position["rows"] == 3_000
    assert ordered(table).equals(ordered(rows_read(landing)))
    assert ordered(table).equals(ordered(landed.cast(table.schema)))


def test_a_large_batch_is_stored_in_pieces(landing, pg_dsn, monkeypatch):
    monkeypatch.setattr(pg, "BATCH_ROWS", 400)
    land_window(landing)
    with psycopg.connect(pg_dsn) as conn:
        sizes = [r[0] for r in conn.execute("SELECT flows FROM flowlens.flow_raw_batches ORDER BY receive_start")]
    assert sum(sizes) == 3_000 and max(sizes) == 400 and len(sizes) == 9  # 3 x (400, 400, 200)
    table, position = read(landing)
    assert position["read"] == "flow_raw_batches" and table.num_rows == 3_000


@pytest.mark.parametrize(
    "edit",
    [
        "UPDATE flowlens.flow_raw SET bytes = bytes + 1 WHERE ctid = (SELECT ctid FROM flowlens.flow_raw LIMIT 1)",
        "DELETE FROM flowlens.flow_raw WHERE ctid = (SELECT ctid FROM flowlens.flow_raw LIMIT 1)",
        "INSERT INTO flowlens.flow_raw SELECT * FROM flowlens.flow_raw LIMIT 1",
    ],
    ids=["update", "delete", "insert"],
)
def test_edited_rows_are_read_instead_of_the_batches(landing, pg_dsn, edit):
    landed = land_window(landing)
    with psycopg.connect(pg_dsn) as conn:
        conn.execute(edit)
    table, position = read(landing)
    assert position["read"] == "flow_raw"
    assert ordered(table).equals(ordered(rows_read(landing)))
    assert pc.sum(table.column("bytes")).as_py() != pc.sum(landed.column("bytes")).as_py()


def test_rows_without_batches_are_read_from_flow_raw(landing, pg_dsn):
    land_window(landing)
    with psycopg.connect(pg_dsn) as conn:
        conn.execute("TRUNCATE flowlens.flow_raw_batches")  # as a window landed before migration 048
    table, position = read(landing)
    assert position["read"] == "flow_raw" and table.num_rows == 3_000


def test_a_range_that_cuts_a_batch_reads_exactly_its_rows(landing):
    landed = land_window(landing)
    start, end = W0 + timedelta(seconds=100), W0 + timedelta(seconds=200)
    table, position = read(landing, start, end)
    assert position["read"] == "flow_raw"
    times = landed.column("receive_time")
    inside = pc.and_(pc.greater_equal(times, pa.scalar(start)), pc.less(times, pa.scalar(end)))
    assert table.num_rows == pc.sum(inside).as_py() > 0


def test_batches_are_read_in_the_snapshot_of_their_check(landing, pg_dsn):
    """Flows landed while a window is being read are not in that read, from batches or rows."""
    land_window(landing)
    chunks = landing.read_window_chunks(W0, W0 + WINDOW, 500)
    first = next(chunks.chunks)  # the plan and the first fetch are done
    land_window(landing, flows=200, seed=6)  # late flows of the same window
    rest = list(chunks.chunks)
    assert chunks.position["read"] == "flow_raw_batches"
    assert first.num_rows + sum(t.num_rows for t in rest) == 3_000


def test_a_database_without_the_batches_table_says_to_migrate_and_lands_nothing(landing, pg_dsn):
    batch = random_flows(100, us(W0), seed=9)
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        conn.execute("ALTER TABLE flowlens.flow_raw_batches RENAME TO flow_raw_batches_hidden")
        try:
            with pytest.raises(pg.SchemaOutdated, match="run `flowlens migrate`"):
                landing.write(batch)
            with pytest.raises(pg.SchemaOutdated, match="flow_raw_batches"):
                read(landing)
            assert conn.execute("SELECT count(*) FROM flowlens.flow_raw").fetchone()[0] == 0  # rolled back whole
        finally:
            conn.execute("ALTER TABLE flowlens.flow_raw_batches_hidden RENAME TO flow_raw_batches")
    landing.write(batch)  # the daemon's retry once migrated
    table, position = read(landing)
    assert position["read"] == "flow_raw_batches" and table.num_rows == 100
