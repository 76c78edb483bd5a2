"""The window's PostgreSQL writes: ``flow_stats`` as one partition per window (``sql/044``), the
dependencies merge that rewrites only what moves (``sql/045``) and rebuilds its index by server
when a window outgrows the table (``sql/047``)."""

from datetime import UTC, datetime, timedelta

import polars as pl
import psycopg
import pytest

from assets import topology
from assets.addresses import addr_bytes
from assets.flow_stats import STATS_SCHEMA, TABLE, replace_window
from assets.pg import ensure_day_partitions
from assets.topology import merge_dependencies
from assets.windows import WindowResult

pytestmark = pytest.mark.integration
STATS_SQL = (
    "SELECT host(client_addr), host(server_addr), server_port, protocol, bytes, first_seen, last_seen"
    " FROM flowlens.flow_stats WHERE window_start = %s ORDER BY 1, 2, 3, 4"
)


def _stats(window: datetime, pairs: int, bytes_each: int = 100) -> pl.DataFrame:
    """``pairs`` rows of one window: client 10.1.0.k -> server 10.2.0.(k % 7):443/6."""
    seen = window + timedelta(seconds=30)
    return pl.DataFrame(
        {
            "window_start": [window] * pairs,
            "client_addr": [addr_bytes(f"10.1.0.{k}") for k in range(pairs)],
            "server_addr": [addr_bytes(f"10.2.0.{k % 7}") for k in range(pairs)],
            "server_port": [443] * pairs,
            "protocol": [6] * pairs,
            "bytes": [bytes_each] * pairs,
            "packets": [1] * pairs,
            "flows": [1] * pairs,
            "first_seen": [seen] * pairs,
            "last_seen": [seen + timedelta(seconds=1)] * pairs,
        },
        schema=STATS_SCHEMA,
    )


def _write(conn: psycopg.Connection, window: datetime, *shards: pl.DataFrame) -> WindowResult:
    result = WindowResult(window, "flow_stats", source="test")
    replace_window(conn, window, shards, result, "test")
    return result


def _partition(conn: psycopg.Connection, window: datetime) -> tuple | None:
    """(partition, its parent, the parent's kind, the partition's index count) holding ``window``'s rows."""
    return conn.execute(
        """
        SELECT c.relname, p.relname, p.relkind, (SELECT count(*) FROM pg_index x WHERE x.indrelid = c.oid)
        FROM flowlens.flow_stats s JOIN pg_class c ON c.oid = s.tableoid
        JOIN pg_inherits i ON i.inhrelid = c.oid JOIN pg_class p ON p.oid = i.inhparent
        WHERE s.window_start = %s LIMIT 1
        """,
        (window,),
    ).fetchone()


def test_a_window_is_its_own_indexed_partition_and_a_rerun_replaces_it(clean_pg):
    window = datetime(2031, 3, 4, 10, 15, tzinfo=UTC)
    with psycopg.connect(clean_pg) as conn:
        result = _write(conn, window, _stats(window, 20), _stats(window, 40).slice(20))
        assert result.rows_written == 40
        assert _partition(conn, window) == ("flow_stats_20310304_1015", "flow_stats_20310304", "p", 1)
        first = conn.execute(STATS_SQL, (window,)).fetchall()
        assert len(first) == 40 and {row[4] for row in first} == {100}

        _write(conn, window, _stats(window, 30, bytes_each=7))  # the re-run replaces the window whole
        again = conn.execute(STATS_SQL, (window,)).fetchall()
        assert len(again) == 30 and {row[4] for row in again} == {7}
        assert _partition(conn, window) == ("flow_stats_20310304_1015", "flow_stats_20310304", "p", 1)
        # the key (sql/044) is the parent's, attached (not built again beside it)
        attached = conn.execute(
            "SELECT count(*) FROM pg_inherits i JOIN pg_index x ON x.indexrelid = i.inhrelid"
            " WHERE x.indrelid = 'flowlens.flow_stats_20310304_1015'::regclass"
        ).fetchone()[0]
        assert attached == 1


def test_a_failing_shard_leaves_the_window_as_it_was(clean_pg):
    window = datetime(2031, 3, 5, 23, 55, tzinfo=UTC)

    def shards():
        yield _stats(window, 5, bytes_each=1)
        raise RuntimeError("shard 2 failed")

    with psycopg.connect(clean_pg) as conn:
        _write(conn, window, _stats(window, 10))
        before = conn.execute(STATS_SQL, (window,)).fetchall()
        with pytest.raises(RuntimeError, match="shard 2 failed"):
            replace_window(conn, window, shards(), WindowResult(window, "flow_stats", source="test"), "test")
        assert conn.execute(STATS_SQL, (window,)).fetchall() == before
        assert conn.execute("SELECT to_regclass('flowlens.flow_stats_20310305_2355_stage')").fetchone()[0] is None


def test_rows_inserted_by_hand_land_in_the_days_default_partition_and_a_rerun_replaces_them(clean_pg):
    window = datetime(2031, 3, 8, 12, 0, tzinfo=UTC)
    other = window + timedelta(minutes=5)
    insert = (
        "INSERT INTO flowlens.flow_stats (window_start, client_addr, server_addr, server_port, protocol,"
        " bytes, packets, flows, first_seen, last_seen) VALUES (%s, '10.9.0.1', '10.9.0.2', 53, 17, 5, 1, 1, %s, %s)"
    )
    with psycopg.connect(clean_pg) as conn:
        conn.execute("DROP TABLE IF EXISTS flowlens.flow_stats_20310308")  # partitions outlive clean_pg's truncation
        conn.commit()
        _write(conn, window, _stats(window, 4))  # the day is now partitioned by window
        for w in (window, other):  # a window with its own partition, and one without
            conn.execute(insert, (w, w, w))
        conn.commit()
        assert _partition(conn, other)[:2] == ("flow_stats_20310308_default", "flow_stats_20310308")
        assert len(conn.execute(STATS_SQL, (window,)).fetchall()) == 5

        _write(conn, other, _stats(other, 3, bytes_each=9))  # the pipeline's run replaces the hand-written row
        rows = conn.execute(STATS_SQL, (other,)).fetchall()
        assert len(rows) == 3 and {row[4] for row in rows} == {9}
        assert _partition(conn, other)[0] == "flow_stats_20310308_1205"


def test_a_day_created_as_one_table_keeps_delete_and_copy(clean_pg):
    window = datetime(2031, 3, 6, 8, 0, tzinfo=UTC)
    with psycopg.connect(clean_pg) as conn:
        ensure_day_partitions(conn.cursor(), TABLE, window, window)  # as every day was before sql/044
        conn.commit()
        _write(conn, window, _stats(window, 12))
        _write(conn, window, _stats(window, 8, bytes_each=3))
        rows = conn.execute(STATS_SQL, (window,)).fetchall()
        assert len(rows) == 8 and {row[4] for row in rows} == {3}
        assert _partition(conn, window)[:2] == ("flow_stats_20310306", "flow_stats")  # rows in the day itself


def test_merging_a_window_again_rewrites_no_dependency(clean_pg):
    first, second = datetime(2031, 3, 7, 9, 0, tzinfo=UTC), datetime(2031, 3, 7, 9, 5, tzinfo=UTC)
    versions = "SELECT host(client_addr), xmin::text, first_window, last_window FROM flowlens.dependencies ORDER BY 1"
    with psycopg.connect(clean_pg) as conn:
        _write(conn, first, _stats(first, 6))
        _write(conn, second, _stats(second, 9))
        with conn.transaction():
            assert merge_dependencies(conn.cursor(), second) == 9
        with conn.transaction():
            assert merge_dependencies(conn.cursor(), first) == 6  # an older window: first_window moves back
        merged = conn.execute(versions).fetchall()
        assert {(row[2], row[3]) for row in merged} == {(first, second), (second, second)}
        assert sum(1 for row in merged if row[2] == first) == 6
        with conn.transaction():
            assert merge_dependencies(conn.cursor(), second) == 9  # the re-run counts its edges...
        assert conn.execute(versions).fetchall() == merged  # ...and writes no row version


SERVER_INDEX_OID = "SELECT to_regclass('flowlens.dependencies_server_clients')::oid"
DEPENDENCIES_SQL = (
    "SELECT host(client_addr), host(server_addr), server_port, protocol, first_seen, last_seen, first_window,"
    " last_window FROM flowlens.dependencies ORDER BY 1, 2, 3, 4"
)


def _merge_in_turn(conn: psycopg.Connection, windows: list[datetime]) -> list[bool]:
    """Merge ``windows`` one after the other; for each, whether it rebuilt the index by server."""
    rebuilt = []
    for window in windows:
        before = conn.execute(SERVER_INDEX_OID).fetchone()[0]
        with conn.transaction():
            merge_dependencies(conn.cursor(), window)
        after = conn.execute(SERVER_INDEX_OID).fetchone()[0]
        assert after is not None  # the index is there after every merge, whichever path it took
        rebuilt.append(after != before)
    return rebuilt


def test_a_window_that_outgrows_the_table_merges_as_the_row_by_row_path_does(clean_pg, monkeypatch):
    first, second = datetime(2031, 3, 9, 9, 0, tzinfo=UTC), datetime(2031, 3, 9, 9, 5, tzinfo=UTC)
    order = [first, second, first]  # empty table, 6 rows < 9 edges (6 move, 3 new), 9 rows >= 6 edges
    with psycopg.connect(clean_pg) as conn:
        _write(conn, first, _stats(first, 6))
        _write(conn, second, _stats(second, 9))
        assert _merge_in_turn(conn, order) == [True, True, False]
        bulk = conn.execute(DEPENDENCIES_SQL).fetchall()
        valid = conn.execute(
            "SELECT indisvalid FROM pg_index WHERE indexrelid = 'flowlens.dependencies_server_clients'::regclass"
        ).fetchone()[0]

        conn.execute("TRUNCATE flowlens.dependencies")
        conn.commit()
        monkeypatch.setattr(topology, "OUTGROWS_TABLE", "SELECT false")  # every window row by row
        assert _merge_in_turn(conn, order) == [False, False, False]
        row_by_row = conn.execute(DEPENDENCIES_SQL).fetchall()
    assert valid
    assert len(bulk) == 9 and bulk == row_by_row
    assert {(row[6], row[7]) for row in bulk} == {(first, second), (second, second)}


def test_a_written_window_has_statistics_for_the_planner(clean_pg):
    """The partition is analyzed as it is attached (sql/049): the window's first queries (checks,
    API) are planned from its real row count, not from a guess. The staged table filled each row's
    window_start itself (the COPY leaves it out)."""
    window = datetime(2031, 3, 4, 10, 20, tzinfo=UTC)
    with psycopg.connect(clean_pg) as conn:
        _write(conn, window, _stats(window, 250))
        tuples, analyzed = conn.execute(
            "SELECT c.reltuples, (SELECT count(*) FROM pg_stats s WHERE s.schemaname = 'flowlens'"
            " AND s.tablename = c.relname) FROM pg_class c WHERE c.oid = 'flowlens.flow_stats_20310304_1020'::regclass"
        ).fetchone()
        assert tuples == 250 and analyzed == 1  # window_start: what a window's queries filter on
        plan = conn.execute(
            "EXPLAIN (FORMAT JSON) SELECT * FROM flowlens.flow_stats WHERE window_start = %s", (window,)
        ).fetchone()[0]
        assert plan[0]["Plan"]["Plan Rows"] == 250


def test_rows_of_another_window_fail_the_write_whole(clean_pg):
    """The staged COPY leaves window_start to the table's default: a row of another window is refused, not moved."""
    window = datetime(2031, 3, 4, 10, 25, tzinfo=UTC)
    stray = _stats(window + timedelta(minutes=5), 3)
    with psycopg.connect(clean_pg) as conn:
        _write(conn, window, _stats(window, 10))
        with pytest.raises(ValueError, match="hold window_start"):
            _write(conn, window, _stats(window, 5), stray)
        assert len(conn.execute(STATS_SQL, (window,)).fetchall()) == 10  # the previous write stands
