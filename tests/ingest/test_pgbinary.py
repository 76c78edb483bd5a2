"""Binary COPY of Arrow tables (ingest.land.pgbinary) against real PostgreSQL: every type round-trips."""

import ipaddress
from datetime import UTC, datetime, timedelta

import psycopg
import pyarrow as pa
import pytest

from assets.addresses import addr_bytes
from ingest.land import pgbinary as pg
from ingest.land.pgbinary import CopyEncodeError, copy_arrow, encode_rows

pytestmark = pytest.mark.integration
T0 = datetime(2026, 11, 26, 12, 0, tzinfo=UTC)
TYPES = ["inet", "timestamptz", "int2", "int4", "int8", "float8", "bool", "text"]
DDL = "CREATE TEMP TABLE t (a inet, ts timestamptz, s smallint, i integer, b bigint, f float8, ok bool, txt text)"


def test_every_type_and_null_round_trips(pg_dsn):
    addrs = ["10.0.0.1", "2001:db8::5", "::ffff:0:1", "255.255.255.255", None]
    table = pa.table({
        "a": pa.array([addr_bytes(a) if a else None for a in addrs], pa.binary(16)),
        "ts": pa.array([T0, T0 + timedelta(microseconds=1), datetime(1999, 12, 31, tzinfo=UTC), None, T0],
                       pa.timestamp("us", tz="UTC")),
        "s": pa.array([1, -2, 32767, None, 0], pa.int16()),
        "i": pa.array([1, -2, 2**31 - 1, 0, None], pa.int32()),
        "b": pa.array([2**40, -1, None, 0, 7], pa.int64()),
        "f": pa.array([1.5, None, -0.25, 0.0, 1e300], pa.float64()),
        "ok": pa.array([True, False, None, True, False]),
        "txt": pa.array(["web", "", None, "ünïcode", "x" * 1000]),
    })  # fmt: skip
    with psycopg.connect(pg_dsn) as conn:
        conn.execute(DDL)
        copy_arrow(conn.cursor(), "t", table, TYPES)
        rows = conn.execute("SELECT * FROM t ORDER BY i NULLS LAST, s").fetchall()
    expected_inet = [ipaddress.ip_address(a) if a else None for a in addrs]
    expected_inet[2] = ipaddress.ip_address("0.0.0.1")  # ::ffff:0:1 is IPv4-mapped: stored as IPv4
    got = {r[3] if r[3] is not None else "null": r for r in rows}
    assert got[1][0] == expected_inet[0] and got[1][1] == T0 and got[1][5] == 1.5 and got[1][7] == "web"
    assert got[-2][0] == expected_inet[1] and got[-2][1] == T0 + timedelta(microseconds=1) and got[-2][5] is None
    assert got[2**31 - 1][0] == expected_inet[2] and got[2**31 - 1][1] == datetime(1999, 12, 31, tzinfo=UTC)
    assert got[2**31 - 1][6] is None and got[2**31 - 1][4] is None and got[2**31 - 1][7] is None
    assert got[0][0] == expected_inet[3] and got[0][1] is None and got[0][2] is None and got[0][7] == "ünïcode"
    assert got["null"][0] is None and got["null"][7] == "x" * 1000 and got["null"][5] == 1e300


def test_unknown_types_and_column_mismatch_are_clear_errors():
    table = pa.table({"x": pa.array([1])})
    with pytest.raises(CopyEncodeError, match="no binary COPY encoder"):
        encode_rows(table, ["numeric"])
    with pytest.raises(CopyEncodeError, match="1 columns but 2"):
        encode_rows(table, ["int8", "int8"])


FIXED_TYPES = ["timestamptz", "inet", "inet", "int2", "int4", "int8", "float8", "bool"]
FIXED_DDL = "CREATE TEMP TABLE f (ts timestamptz, a inet, b inet, s smallint, i integer, l bigint, x float8, ok bool)"


def _fixed_table(a_addrs: list[str], b_addrs: list[str]) -> pa.Table:
    """No NULLs, no text: rows the fixed-width encoder takes when each address column has one family."""
    n = len(a_addrs)
    return pa.table({
        "ts": pa.array([T0 + timedelta(seconds=k) for k in range(n)], pa.timestamp("us", tz="UTC")),
        "a": pa.array([addr_bytes(a) for a in a_addrs], pa.binary(16)),
        "b": pa.array([addr_bytes(b) for b in b_addrs], pa.large_binary()),  # as Polars hands it over
        "s": pa.array([-(2**15), 0, 2**15 - 1][:n], pa.int16()),
        "i": pa.array([-(2**31), 7, 2**31 - 1][:n], pa.int32()),
        "l": pa.array([-(2**63), 2**40, 2**63 - 1][:n], pa.int64()),
        "x": pa.array([-0.5, 0.0, 1e300][:n], pa.float64()),
        "ok": pa.array([True, False, True][:n]),
    })  # fmt: skip


@pytest.mark.parametrize(
    ("a_addrs", "b_addrs"),
    [
        (["10.0.0.1", "0.0.0.0", "255.255.255.255"], ["192.0.2.9", "10.1.2.3", "172.16.0.1"]),  # all IPv4
        (["10.0.0.1", "0.0.0.0", "255.255.255.255"], ["2001:db8::5", "::", "ff02::1"]),  # IPv4 and IPv6 columns
        (["10.0.0.1", "2001:db8::1", "10.0.0.2"], ["192.0.2.9", "10.1.2.3", "172.16.0.1"]),  # mixed: general path
    ],
)
def test_fixed_width_rows_round_trip_and_match_the_general_encoder(pg_dsn, a_addrs, b_addrs, monkeypatch):
    table = _fixed_table(a_addrs, b_addrs)
    fast = encode_rows(table, FIXED_TYPES)
    with monkeypatch.context() as patched:
        patched.setattr(pg, "_fixed_width_rows", lambda *_args: None)  # force the Arrow-kernel encoder
        assert encode_rows(table, FIXED_TYPES) == fast
    with psycopg.connect(pg_dsn) as conn:
        conn.execute(FIXED_DDL)
        copy_arrow(conn.cursor(), "f", table, FIXED_TYPES)
        rows = conn.execute("SELECT * FROM f ORDER BY ts").fetchall()
    assert [(str(r[1]), str(r[2])) for r in rows] == list(zip(a_addrs, b_addrs, strict=True))
    assert [r[0] for r in rows] == table.column("ts").to_pylist()
    numbers = zip(*(table.column(c).to_pylist() for c in ("s", "i", "l", "x", "ok")), strict=True)
    assert [r[3:] for r in rows] == list(numbers)


def test_fixed_width_path_is_taken_only_when_every_row_has_one_width():
    v4 = _fixed_table(["10.0.0.1", "10.0.0.2", "10.0.0.3"], ["10.0.0.4", "10.0.0.5", "10.0.0.6"])
    assert pg._fixed_width_rows(v4, FIXED_TYPES) is not None
    mixed = _fixed_table(["10.0.0.1", "2001:db8::1", "10.0.0.3"], ["10.0.0.4", "10.0.0.5", "10.0.0.6"])
    assert pg._fixed_width_rows(mixed, FIXED_TYPES) is None
    with_null = v4.set_column(3, "s", pa.array([1, None, 3], pa.int16()))
    assert pg._fixed_width_rows(with_null, FIXED_TYPES) is None
    assert pg._fixed_width_rows(pa.table({"t": ["x"]}), ["text"]) is None


def test_large_copies_span_many_chunks_in_order(pg_dsn):
    n = pg.CHUNK_ROWS * 2 + 17
    table = pa.table({"i": pa.array(range(n), pa.int64()), "a": pa.array([addr_bytes("10.0.0.1")] * n, pa.binary(16))})
    with psycopg.connect(pg_dsn) as conn:
        conn.execute("CREATE TEMP TABLE big (i bigint, a inet)")
        assert copy_arrow(conn.cursor(), "big", table, ["int8", "inet"]) == n
        count, total, distinct = conn.execute("SELECT count(*), sum(i), count(DISTINCT a) FROM big").fetchone()
    assert (count, total, distinct) == (n, n * (n - 1) // 2, 1)
