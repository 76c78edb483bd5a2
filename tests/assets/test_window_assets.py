"""The window assets on real PostgreSQL with real flows landed through the minimal-mode landing."""

from __future__ import annotations

import dagster as dg
import psycopg
import pytest

from assets.changes import topology_changes
from assets.enriched_flows import enriched_flows
from assets.flow_stats import flow_stats
from assets.resources import build_resources
from assets.topology import dependencies, network_assets
from ingest.window import window_key
from tests.assets import scenario

pytestmark = pytest.mark.integration
WINDOW_ASSETS = [enriched_flows, flow_stats, network_assets, dependencies, topology_changes]

SNAPSHOT_QUERIES = {
    "flow_stats": "SELECT window_start, host(client_addr), host(server_addr), server_port, protocol, bytes, packets,"
    " flows, first_seen, last_seen FROM flowlens.flow_stats ORDER BY 1, 2, 3, 4, 5",
    "assets": "SELECT host(addr), name, known, first_seen, last_seen, first_window, last_window"
    " FROM flowlens.assets ORDER BY 1",
    "dependencies": "SELECT host(client_addr), host(server_addr), server_port, protocol, first_seen, last_seen,"
    " first_window, last_window FROM flowlens.dependencies ORDER BY 1, 2, 3, 4",
    "changes": "SELECT window_start, kind, subject, details FROM flowlens.changes ORDER BY 1, 2, 3",
    "window_loads": "SELECT window_start, asset, source, rows_read, rows_written, bytes_total, packets_total"
    " FROM flowlens.window_loads ORDER BY 1, 2",
}


def snapshot(dsn: str) -> dict[str, list[tuple]]:
    with psycopg.connect(dsn) as conn:
        return {name: conn.execute(q).fetchall() for name, q in SNAPSHOT_QUERIES.items()}


@pytest.fixture
def landed(flowlens_config, clean_pg):
    """Scenario flows in flow_raw, windows base .. base+2."""
    base = scenario.base_window()
    return base, scenario.land(clean_pg, base)


def pipeline_config(cfg):
    """The test stack's config in the minimal mode; no reverse DNS (test addresses have no PTR records);
    dependencies gone after the scenario's number of windows."""
    pipeline = cfg.pipeline.model_copy(update={"dependency_gone_after_windows": scenario.GONE_AFTER})
    dns = cfg.dns.model_copy(update={"enabled": False})
    return cfg.model_copy(update={"mode": "minimal", "dns": dns, "pipeline": pipeline})


def materialize(cfg, window) -> None:
    cfg = pipeline_config(cfg)
    result = dg.materialize(
        WINDOW_ASSETS, partition_key=window_key(window), resources=build_resources(cfg, use_env=False)
    )
    assert result.success


def test_windows_produce_the_expected_tables(flowlens_config, landed, pg_dsn):
    base, flows = landed
    for index in sorted(flows):
        materialize(flowlens_config, base + index * scenario.WINDOW)
    snap = snapshot(pg_dsn)

    expected_stats = scenario.expected_flow_stats(base, flows)
    assert snap["flow_stats"] == expected_stats

    assets, deps, changes = scenario.expected_topology(base, expected_stats)
    assert {row[0]: (row[5], row[6]) for row in snap["assets"]} == assets
    assert {tuple(row[:4]): (row[6], row[7]) for row in snap["dependencies"]} == deps
    assert {(row[0], row[1], row[2]) for row in snap["changes"]} == changes
    assert any(kind == "dependency_gone" for _, kind, _ in changes)  # the scenario exercises every kind

    # window_loads reconciles: what enriched_flows read equals what flow_stats summed, per window
    loads = {(row[0], row[1]): row for row in snap["window_loads"]}
    for index, rows in flows.items():
        window = base + index * scenario.WINDOW
        assert loads[(window, "enriched_flows")][3] == len(rows)
        assert loads[(window, "flow_stats")][5] == sum(r["bytes"] for r in rows)


def test_rematerializing_a_window_leaves_tables_identical(flowlens_config, landed, pg_dsn):
    base, flows = landed
    for index in sorted(flows):
        materialize(flowlens_config, base + index * scenario.WINDOW)
    before = snapshot(pg_dsn)
    materialize(flowlens_config, base + scenario.WINDOW)  # the middle window again
    materialize(flowlens_config, base)
    assert snapshot(pg_dsn) == before


def test_lake_is_hive_partitioned_and_readable_by_duckdb(flowlens_config, landed):
    import duckdb

    base, flows = landed
    materialize(flowlens_config, base)
    lake = build_resources(flowlens_config, use_env=False)["lake"]
    con = duckdb.connect()
    rows = con.sql(
        # DuckDB infers the hive value 'HHMM' as an integer, except with a leading zero (before 10:00)
        f"SELECT date, \"window\"::INT, count(*), sum(bytes) FROM read_parquet('{lake.window_glob()}',"
        ' hive_partitioning=true) WHERE date = $date AND "window"::INT = $window GROUP BY ALL',
        params={"date": base.date(), "window": int(base.strftime("%H%M"))},
    ).fetchall()
    assert rows == [(base.date(), int(base.strftime("%H%M")), len(flows[0]), sum(r["bytes"] for r in flows[0]))]
