"""Traffic of the bench database's dependencies, in each table the pipeline aggregates into.

Every dependency of ``flowlens_bench_api`` gets rows as the pipeline would leave them at the end of the
dependencies' last seen day: two days rolled up into ``flow_stats_daily``, the next hour in
``flow_stats_hourly`` and the 5-minute window after it in ``flow_stats``, so a grouped map's bytes
read all three tables (``flowlens_dagster/api/group_bytes.py``). Bytes differ per dependency
(a hash of its addresses), so heavier and lighter group pairs exist. Written in SQL, not timed.
"""

from __future__ import annotations

import psycopg

from ingest.config import FlowLensConfig

FIRST_DAY = "2026-11-24"  # the bench's dependencies are last seen on 2026-11-26
# (table, period column, period starts)
PERIODS = (
    ("flowlens.flow_stats_daily", "day_start", ("2026-11-24T00:00:00Z", "2026-11-25T00:00:00Z")),
    ("flowlens.flow_stats_hourly", "hour_start", ("2026-11-26T00:00:00Z",)),
    ("flowlens.flow_stats", "window_start", ("2026-11-26T01:00:00Z",)),
)
FILL_SQL = """INSERT INTO {table} ({column}, client_addr, server_addr, server_port, protocol, bytes, packets, flows,
                                   first_seen, last_seen)
              SELECT %(start)s::timestamptz, client_addr, server_addr, server_port, protocol, b, b / 1000 + 1, 1,
                     %(start)s::timestamptz, %(start)s::timestamptz
              FROM (SELECT *, 1000 * (1 + abs(hashtext(host(client_addr) || host(server_addr))) %% 100000)::bigint AS b
                    FROM flowlens.dependencies) d"""


def has_traffic(cfg: FlowLensConfig) -> bool:
    with psycopg.connect(cfg.postgres.dsn()) as conn:
        return conn.execute("SELECT EXISTS (SELECT 1 FROM flowlens.flow_stats_daily)").fetchone()[0]


def fill(cfg: FlowLensConfig) -> None:
    """Replace the traffic rows of the bench database (one transaction), then vacuum and analyze them
    (statistics for the planner, and a visibility map so index-only scans skip the heap)."""
    with psycopg.connect(cfg.postgres.dsn()) as conn:
        for table, _, _ in PERIODS:
            conn.execute(f"SELECT flowlens.ensure_day_partitions('{table}', %s::date, 3)", (FIRST_DAY,))
            conn.execute(f"DELETE FROM {table}")
        for table, column, starts in PERIODS:
            for start in starts:
                conn.execute(FILL_SQL.format(table=table, column=column), {"start": start})
    with psycopg.connect(cfg.postgres.dsn(), autocommit=True) as conn:
        for table, _, _ in PERIODS:
            conn.execute(f"VACUUM (ANALYZE) {table}")  # a partitioned table: each partition too
