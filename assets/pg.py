"""Window writes to PostgreSQL: stage a table by binary COPY, create day partitions, record the load.

A window's write goes: binary COPY (``ingest.land.pgbinary.copy_arrow``) into a temporary table,
then one ``INSERT ... ON CONFLICT`` (merge) or ``DELETE`` + ``INSERT`` (replace) in the same
transaction as the ``window_loads`` row. ``flow_stats`` instead COPYs a window into a bare table of
its own and attaches it as the window's partition (:func:`stage_flow_stats_window`, ``sql/044``).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import datetime
from typing import Any

import psycopg
import pyarrow as pa
from psycopg import sql

from ingest.land.pgbinary import copy_arrow, sql_identifier


def stage(cur: psycopg.Cursor, like: str, table: pa.Table, pg_types: Sequence[str]) -> str:
    """COPY ``table`` into a fresh temporary table shaped like ``like``'s columns; returns its name."""
    temp = "stage_" + like.split(".")[-1]
    cur.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(sql.Identifier(temp)))
    columns = sql.SQL(", ").join(sql.Identifier(name) for name in table.column_names)
    cur.execute(
        sql.SQL("CREATE TEMP TABLE {} ON COMMIT DROP AS SELECT {} FROM {} WITH NO DATA").format(
            sql.Identifier(temp), columns, sql_identifier(like)
        )
    )
    copy_arrow(cur, temp, table, pg_types)
    return temp


def ensure_day_partitions(cur: psycopg.Cursor, parent: str, first: datetime, last: datetime) -> None:
    """Create the day partitions of ``parent`` covering [first, last] (UTC days)."""
    days = (last.date() - first.date()).days + 1
    cur.execute("SELECT flowlens.ensure_day_partitions(%s::regclass, %s::date, %s)", (parent, first.date(), days))


def stage_flow_stats_window(cur: psycopg.Cursor, window: datetime, end: datetime) -> str | None:
    """A fresh unindexed table for the ``flow_stats`` rows of [window, end), to COPY into and then
    :func:`attach_flow_stats_window`; None when the window's day partition predates ``sql/044``
    (a plain table: the window is replaced in it by DELETE + COPY)."""
    cur.execute("SELECT flowlens.stage_flow_stats_window(%s, %s)", (window, end))
    return cur.fetchone()[0]


def default_flow_stats_window(cur: psycopg.Cursor, stage: str, window: datetime) -> None:
    """The staged table's ``window_start`` defaults to ``window``, so its COPY leaves the column out
    (``sql/049``)."""
    cur.execute("SELECT flowlens.default_flow_stats_window(%s::regclass, %s)", (stage, window))


def attach_flow_stats_window(cur: psycopg.Cursor, stage: str, window: datetime, end: datetime) -> None:
    """Build the staged window's key (one sorted pass), drop the window's previous partition,
    attach the staged one in its place (``sql/044``) and analyze it (``sql/049``)."""
    cur.execute("SELECT flowlens.attach_flow_stats_window(%s::regclass, %s, %s)", (stage, window, end))
    # the window's first queries (checks, API) must not be planned without statistics (sql/049)
    cur.execute("SELECT flowlens.analyze_flow_stats_window(%s)", (window,))


def record_window_load(cur: psycopg.Cursor, load: dict[str, Any]) -> None:
    """Upsert the ``flowlens.window_loads`` row of one (window, asset) write (same transaction as the write)."""
    cur.execute(
        """
        INSERT INTO flowlens.window_loads (window_start, asset, run_id, source, source_position, rows_read,
            rows_written, bytes_total, packets_total, started_at, finished_at)
        VALUES (%(window_start)s, %(asset)s, %(run_id)s, %(source)s, %(source_position)s, %(rows_read)s,
            %(rows_written)s, %(bytes_total)s, %(packets_total)s, %(started_at)s, now())
        ON CONFLICT (window_start, asset) DO UPDATE SET run_id = EXCLUDED.run_id, source = EXCLUDED.source,
            source_position = EXCLUDED.source_position, rows_read = EXCLUDED.rows_read,
            rows_written = EXCLUDED.rows_written, bytes_total = EXCLUDED.bytes_total,
            packets_total = EXCLUDED.packets_total, started_at = EXCLUDED.started_at, finished_at = now()
        """,
        {**load, "source_position": json.dumps(load.get("source_position") or {}, default=str)},
    )
