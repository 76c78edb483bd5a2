"""``flow_stats`` sends its rows in primary-key order (B-tree appends): the order is PostgreSQL's own."""

import ipaddress

import numpy as np
import polars as pl
import psycopg
import pytest

from assets.addresses import addr_bytes
from assets.flow_stats import KEY, in_key_order
from ingest.land.pgbinary import copy_arrow

pytestmark = pytest.mark.integration
KEY_DDL = "client_addr inet, server_addr inet, server_port integer, protocol smallint"  # as in flowlens.flow_stats


def _stats(n: int, seed: int = 7) -> pl.DataFrame:
    """Key columns like ``aggregate``'s: IPv4 and global IPv6 addresses, repeated pairs, mixed ports."""
    rng = np.random.default_rng(seed)

    def address(k: int) -> bytes:
        if rng.random() < 0.7:
            return addr_bytes(str(ipaddress.IPv4Address(int(rng.integers(0, 2**32)) if k % 5 else 167772160 + k % 7)))
        return ipaddress.IPv6Address((0x2001 << 112) + int(rng.integers(0, 2**62)) * (k % 3 + 1)).packed

    clients = [address(k) for k in range(n)]
    servers = [address(k + 1) if k % 4 else clients[k - 1] for k in range(n)]
    return pl.DataFrame(
        {
            "client_addr": clients,
            "server_addr": servers,
            "server_port": rng.choice([0, 22, 53, 443, 8080], n).astype(np.int32),
            "protocol": rng.choice([1, 6, 17], n).astype(np.int16),
        }
    ).unique(maintain_order=True)


def test_rows_come_out_in_postgres_primary_key_order(pg_dsn):
    stats = _stats(3000)
    ordered = in_key_order(stats).with_row_index("position", offset=0).with_columns(pl.col("position").cast(pl.Int64))
    assert sorted(ordered.drop("position").rows()) == sorted(stats.rows())  # the same rows, reordered
    with psycopg.connect(pg_dsn) as conn:
        conn.execute(f"CREATE TEMP TABLE k (position bigint, {KEY_DDL})")
        copy_arrow(conn.cursor(), "k", ordered.to_arrow(), ["int8", "inet", "inet", "int4", "int2"])
        by_postgres = conn.execute(f"SELECT position FROM k ORDER BY {', '.join(KEY)}").fetchall()
    assert [p for (p,) in by_postgres] == list(range(stats.height))


def test_addresses_that_are_not_16_bytes_still_sort():
    stats = pl.DataFrame(
        {
            "client_addr": [b"\x02", b"\x01"],
            "server_addr": [b"\x00", b"\x00"],
            "server_port": [1, 1],
            "protocol": [6, 6],
        }
    )
    assert in_key_order(stats)["client_addr"].to_list() == [b"\x01", b"\x02"]


def test_all_zero_addresses_sort_by_port_and_protocol():
    zero = bytes(16)
    stats = pl.DataFrame(
        {"client_addr": [zero] * 3, "server_addr": [zero] * 3, "server_port": [443, 22, 80], "protocol": [6, 6, 6]}
    )
    assert in_key_order(stats)["server_port"].to_list() == [22, 80, 443]
