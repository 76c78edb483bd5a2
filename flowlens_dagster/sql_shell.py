"""``flowlens sql``: run SQL against FlowLens PostgreSQL, or with ``--lake`` against the Parquet lake.

Examples::

    flowlens sql "SELECT * FROM flowlens.flow_stats ORDER BY bytes DESC LIMIT 10"
    flowlens sql --lake "SELECT server_ip, sum(bytes) FROM enriched_flows GROUP BY 1 ORDER BY 2 DESC LIMIT 5"
    flowlens sql -f report.sql --csv > report.csv

With ``--lake`` DuckDB runs in process with the view ``enriched_flows`` over
``<lake>/enriched_flows/*/*/*.parquet`` (hive columns ``date`` and ``"window"`` included; quote
``"window"``: it is an SQL keyword).
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
from pathlib import Path

from ingest.config import ConfigError, load_config

LAKE_VIEWS = ("enriched_flows",)


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="flowlens sql", description=__doc__.split("\n\n")[0])
    parser.add_argument("query", nargs="?", help="SQL text (or use -f FILE, or pipe it on stdin)")
    parser.add_argument("-f", "--file", type=Path, help="read the SQL from this file")
    parser.add_argument("--lake", action="store_true", help="query the Parquet lake with DuckDB")
    parser.add_argument("--config", help="FlowLens config file (default: $FLOWLENS_CONFIG or ./flowlens.yaml)")
    out = parser.add_mutually_exclusive_group()
    out.add_argument("--csv", action="store_true", help="print CSV")
    out.add_argument("--json", action="store_true", help="print one JSON object per row")
    return parser.parse_args(argv)


def run_postgres(cfg, query: str) -> tuple[list[str], list[tuple]]:
    import psycopg

    with psycopg.connect(cfg.postgres.dsn(), autocommit=True) as conn, conn.cursor() as cur:
        cur.execute(query)
        if cur.description is None:
            return ["status"], [(cur.statusmessage,)]
        return [c.name for c in cur.description], cur.fetchall()


def lake_connection(lake_dir: Path):
    """A DuckDB connection with one view per lake dataset that has files."""
    import duckdb

    con = duckdb.connect()
    for name in LAKE_VIEWS:
        pattern = lake_dir / name / "*" / "*" / "*.parquet"
        if list((lake_dir / name).glob("*/*/*.parquet")):
            con.execute(
                f"CREATE VIEW {name} AS SELECT * FROM read_parquet('{pattern}', hive_partitioning = true, "
                "union_by_name = true)"
            )
    return con


def run_lake(cfg, query: str) -> tuple[list[str], list[tuple]]:
    con = lake_connection(cfg.lake_dir)
    try:
        rel = con.sql(query)
        if rel is None:
            return ["status"], [("OK",)]
        return rel.columns, rel.fetchall()
    finally:
        con.close()


def print_rows(columns: list[str], rows: list[tuple], fmt: str, stream=sys.stdout) -> None:
    if fmt == "csv":
        writer = csv.writer(stream)
        writer.writerow(columns)
        writer.writerows(rows)
        return
    if fmt == "json":
        for row in rows:
            print(json.dumps(dict(zip(columns, row, strict=True)), default=str), file=stream)
        return
    cells = [[("" if v is None else str(v)) for v in row] for row in rows]
    widths = [max([len(c)] + [len(r[i]) for r in cells]) for i, c in enumerate(columns)]
    print("  ".join(c.ljust(w) for c, w in zip(columns, widths, strict=True)), file=stream)
    print("  ".join("-" * w for w in widths), file=stream)
    for row in cells:
        print("  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)), file=stream)
    print(f"({len(rows)} row{'s' if len(rows) != 1 else ''})", file=stream)


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    query = args.file.read_text() if args.file else args.query
    if query is None and not sys.stdin.isatty():
        query = sys.stdin.read()
    if not query or not query.strip():
        print("flowlens sql: give a query, -f FILE, or SQL on stdin", file=sys.stderr)
        return 2
    try:
        cfg = load_config(args.config)
        columns, rows = (run_lake if args.lake else run_postgres)(cfg, query)
    except ConfigError as exc:
        print(f"flowlens sql: {exc}", file=sys.stderr)
        return 2
    except Exception as exc:  # a query error is the user's to fix: show it plainly, no traceback
        target = f"the lake at {cfg.lake_dir}" if args.lake else f"PostgreSQL {cfg.postgres.host}:{cfg.postgres.port}"
        print(f"flowlens sql: {type(exc).__name__}: {exc}\n(query ran against {target})", file=sys.stderr)
        return 1
    print_rows(columns, rows, "csv" if args.csv else "json" if args.json else "table")
    return 0
