"""sql/011's topology views, the impact() function (as replaced by sql/030) and the address topology
query of the API, in PostgreSQL."""

from __future__ import annotations

import asyncio
import ipaddress

import psycopg
import pytest
from psycopg.rows import dict_row

from flowlens_dagster.api import params, queries
from tests.flowlens_dagster.api.conftest import T0

pytestmark = pytest.mark.integration


def edges(dsn: str, pairs: list[tuple[str, str, int]]) -> None:
    with psycopg.connect(dsn) as conn:
        for client, server, port in pairs:
            conn.execute(
                "INSERT INTO flowlens.dependencies VALUES (%s, %s, %s, 6, %s, %s, %s, %s)",
                (client, server, port, T0, T0, T0, T0),
            )


def impact(dsn: str, target: str, depth: int) -> list[tuple]:
    with psycopg.connect(dsn) as conn:
        rows = conn.execute(
            "SELECT host(addr), depth, host(via_server), server_port FROM flowlens.impact(%s, %s) ORDER BY depth, addr",
            (target, depth),
        ).fetchall()
    return rows


def test_impact_takes_each_address_once_at_its_smallest_depth(clean_pg):
    # a diamond (2 and 3 use 1, 4 uses 2 and 3), a longer way round (5 uses 1, 6 uses 5, 4 uses 6)
    # and a cycle (1 uses 4)
    edges(clean_pg, [("10.0.0.2", "10.0.0.1", 80), ("10.0.0.3", "10.0.0.1", 80), ("10.0.0.4", "10.0.0.2", 81),
                     ("10.0.0.4", "10.0.0.3", 81), ("10.0.0.5", "10.0.0.1", 82), ("10.0.0.6", "10.0.0.5", 83),
                     ("10.0.0.4", "10.0.0.6", 84), ("10.0.0.1", "10.0.0.4", 85)])  # fmt: skip
    assert impact(clean_pg, "10.0.0.1", 3) == [
        ("10.0.0.2", 1, "10.0.0.1", 80),
        ("10.0.0.3", 1, "10.0.0.1", 80),
        ("10.0.0.5", 1, "10.0.0.1", 82),
        ("10.0.0.4", 2, "10.0.0.2", 81),  # the smallest via of the level above
        ("10.0.0.6", 2, "10.0.0.5", 83),
    ]  # the target itself (a client of 10.0.0.4) is never in its own impact
    assert [r[0] for r in impact(clean_pg, "10.0.0.1", 1)] == ["10.0.0.2", "10.0.0.3", "10.0.0.5"]
    assert impact(clean_pg, "10.0.0.9", 3) == []


def test_impact_on_a_dense_layered_graph_counts_every_address_once(clean_pg):
    # 5 layers of 12 addresses, each address using every address of the layer below: 12^3 simple paths
    # reach each address of the top layer (011 enumerated them all); 48 addresses are affected
    layers = [[f"10.1.{layer}.{i}" for i in range(12)] for layer in range(5)]
    pairs = [(c, s, 443) for upper, lower in zip(layers[1:], layers[:-1], strict=True) for c in upper for s in lower]
    edges(clean_pg, pairs)
    rows = impact(clean_pg, "10.1.0.0", 6)
    assert [sum(1 for r in rows if r[1] == depth) for depth in (1, 2, 3, 4)] == [12, 12, 12, 12]
    assert {r[0] for r in rows if r[1] == 4} == set(layers[4])


def test_topology_views_count_and_name_both_ends(clean_pg):
    edges(clean_pg, [("10.0.0.2", "10.0.0.1", 5432), ("10.0.0.3", "10.0.0.1", 5432), ("10.0.0.1", "10.0.0.9", 53)])
    with psycopg.connect(clean_pg) as conn:
        for addr, name in (("10.0.0.1", "db"), ("10.0.0.2", "app")):
            conn.execute(
                "INSERT INTO flowlens.assets (addr, name, first_seen, last_seen) VALUES (%s, %s, %s, %s)",
                (addr, name, T0, T0),
            )
        nodes = conn.execute(
            "SELECT host(addr), serves, consumes FROM flowlens.topology_nodes ORDER BY addr"
        ).fetchall()
        named = conn.execute(
            "SELECT host(client_addr), client_name, host(server_addr), server_name FROM flowlens.topology_edges"
            " ORDER BY client_addr, server_addr"
        ).fetchall()
    assert nodes == [("10.0.0.1", 2, 1), ("10.0.0.2", 0, 1)]
    assert named == [("10.0.0.1", "db", "10.0.0.9", None), ("10.0.0.2", "app", "10.0.0.1", "db"),
                     ("10.0.0.3", None, "10.0.0.1", "db")]  # fmt: skip


@pytest.mark.parametrize("port", [None, 443])
def test_address_topology_by_prefix_pages_through_either_end_in_key_order(clean_pg, port):
    # edges with the client in 10.2.0.0/24, the server in it, both, or neither, across two ports
    pairs = [(f"10.{c}.0.{i}", f"10.{s}.0.{j}", p) for c, s in ((2, 3), (3, 2), (2, 2), (3, 3), (1, 2), (2, 4))
             for i, j in ((1, 9), (5, 1)) for p in (443, 80)]  # fmt: skip
    edges(clean_pg, pairs)
    net = ipaddress.ip_network("10.2.0.0/24")
    expected = sorted(
        (ipaddress.ip_address(c), ipaddress.ip_address(s), p)
        for c, s, p in pairs
        if (ipaddress.ip_address(c) in net or ipaddress.ip_address(s) in net) and port in (None, p)
    )
    f = params.filters(prefix_="10.2.0.0/24", port_=str(port) if port else None)

    async def pages() -> list[tuple]:
        seen, cursor = [], None
        async with await psycopg.AsyncConnection.connect(clean_pg, row_factory=dict_row) as conn:
            while True:
                page = await queries.topology_addresses(conn, f, 3, cursor)
                assert len(page["edges"]) <= 3
                seen += [(ipaddress.ip_address(e["client"]), ipaddress.ip_address(e["server"]), e["port"])
                         for e in page["edges"]]  # fmt: skip
                if page["next_cursor"] is None:
                    return seen
                cursor = params.decode_cursor(page["next_cursor"], 4)

    assert asyncio.run(pages()) == expected
