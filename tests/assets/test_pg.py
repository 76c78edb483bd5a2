"""Binary COPY of Arrow tables (assets.pg) against real PostgreSQL: every type round-trips."""

import ipaddress
from datetime import UTC, datetime, timedelta

import psycopg
import pyarrow as pa
import pytest

from assets.addresses import addr_bytes
from assets.pg import CopyEncodeError, copy_arrow, encode_rows

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
