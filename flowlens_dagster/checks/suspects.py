"""Turn a suite into one SQL query that selects the window's *suspect rows*: the rows that break at
least one row rule of the suite, or share a key that must be unique.

Why: Great Expectations evaluates each expectation with its own pass (a query per metric in
PostgreSQL, a full-column computation in pandas). On a window of 200k flows that costs seconds,
more than the pipeline spends processing the window. Every row-level expectation in these suites
fails exactly on rows that the suspect query selects, so validating the suite against the suspect
rows gives the same verdicts and the same unexpected counts and examples, after one scan done by
the database engine (PostgreSQL for tables, DuckDB for the Parquet lake). Normally the suspect set
is empty and GX has almost nothing to do. ``tests/flowlens_dagster/checks`` compares both paths.

Each supported expectation maps to a violation predicate; uniqueness maps to a window count per key.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from flowlens_dagster.checks.suites import Expect, TableSuite

MAX_SUSPECTS = 2_000  # beyond this the unexpected counts reported are lower bounds (GX: ~1 s per 1,000 rows)
UNIQUE_KINDS = ("ExpectCompoundColumnsToBeUnique", "ExpectColumnValuesToBeUnique")


def literal(value: Any) -> str:
    """A SQL literal both PostgreSQL and DuckDB read the same way."""
    if isinstance(value, bool):
        return "TRUE" if value else "FALSE"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, datetime):
        return f"TIMESTAMPTZ '{value.isoformat()}'"
    return "'" + str(value).replace("'", "''") + "'"


def ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def violation(expect: Expect) -> str:
    """SQL that is TRUE for a row breaking ``expect`` (NULL-safe, like GX: nulls only break not-null)."""
    k, kind = expect.kwargs, expect.kind
    if kind == "ExpectColumnValuesToNotBeNull":
        return f"{ident(k['column'])} IS NULL"
    if kind == "ExpectColumnValuesToBeBetween":
        parts = []
        if "min_value" in k:
            parts.append(f"{ident(k['column'])} < {literal(k['min_value'])}")
        if "max_value" in k:
            parts.append(f"{ident(k['column'])} > {literal(k['max_value'])}")
        return "(" + " OR ".join(parts) + ")"
    if kind == "ExpectColumnValuesToBeInSet":
        return _not_in(ident(k["column"]), list(k["value_set"]))
    if kind == "ExpectColumnValueLengthsToEqual":
        return f"length({ident(k['column'])}) <> {int(k['value'])}"
    if kind == "ExpectColumnPairValuesAToBeGreaterThanB":
        op = "<" if k.get("or_equal") else "<="
        return f"{ident(k['column_A'])} {op} {ident(k['column_B'])}"
    raise ValueError(f"{kind} has no suspect-row predicate: add one here, or validate that suite with GX in full")


def _not_in(column: str, values: list[Any]) -> str:
    """``column NOT IN values``; integer sets as ranges (a 148-value IN list costs DuckDB ~0.7 s per 1M rows)."""
    if not values or not all(isinstance(v, int) and not isinstance(v, bool) for v in values):
        return f"{column} NOT IN ({', '.join(literal(v) for v in values)})"
    ranges, ordered = [], sorted(set(values))
    low = prev = ordered[0]
    for value in [*ordered[1:], None]:
        if value is not None and value == prev + 1:
            prev = value
            continue
        ranges.append(f"{column} = {low}" if low == prev else f"{column} BETWEEN {low} AND {prev}")
        if value is not None:
            low = prev = value
    return f"NOT ({' OR '.join(ranges)})"


def unique_keys(suite: TableSuite) -> list[list[str]]:
    """Keys that must be unique and that no database constraint already guarantees."""
    keys = []
    for expect in suite.expectations:
        if expect.enforced_by:
            continue
        if expect.kind == "ExpectCompoundColumnsToBeUnique":
            keys.append(list(expect.kwargs["column_list"]))
        elif expect.kind == "ExpectColumnValuesToBeUnique":
            keys.append([expect.kwargs["column"]])
    return keys


def row_predicate(suite: TableSuite, proven: frozenset[int] = frozenset()) -> str:
    """SQL that is TRUE for a row breaking one of the suite's row rules (every rule but uniqueness),
    leaving out the rules whose indexes are in ``proven`` (settled by Parquet statistics)."""
    rules = [
        f"coalesce({violation(e)}, FALSE)"
        for i, e in enumerate(suite.expectations)
        if e.kind not in UNIQUE_KINDS and i not in proven
    ]
    return " OR ".join(rules) or "FALSE"


def screen_sql(base: str, screened: dict[str, tuple[TableSuite, frozenset[int]]], sums: tuple[str, ...] = ()) -> str:
    """One scan of ``base``: its row count (``rows``), the ``sums`` of these columns (same names) and,
    per named suite, how many rows break one of its row rules not already proven. Suites that read
    the same rows (the lake) share the scan."""
    counts = [
        f"count(*) FILTER (WHERE {row_predicate(suite, proven)}) AS {ident(name)}"
        for name, (suite, proven) in screened.items()
    ]
    totals = [f"sum({ident(c)}::HUGEINT) AS {ident(c)}" for c in sums]
    return f"SELECT {', '.join(['count(*) AS rows', *totals, *counts])} FROM ({base}) w"


def repeated_keys_sql(base: str, key: list[str]) -> str:
    """DuckDB: how many hashes of ``key`` occur more than once in ``base``; 0 proves the key unique
    (equal keys hash equally), more sends the suite to the exact suspect-row path."""
    columns = ", ".join(ident(c) for c in key)
    return f"SELECT count(*) AS repeated FROM (SELECT hash({columns}) FROM ({base}) d GROUP BY 1 HAVING count(*) > 1) r"


def suspect_predicate(suite: TableSuite, base: str, dialect: str = "postgres") -> str:
    """SQL that is TRUE for a row of ``base`` that could fail ``suite``.

    Uniqueness: rows whose key occurs more than once (a grouped second scan of ``base``). In DuckDB
    a wide key is grouped by its hash, one integer instead of many columns; a hash collision only
    adds suspect rows, and GX then checks uniqueness on the real values, so the verdict stays exact.
    """
    rules = [row_predicate(suite)]
    for key in unique_keys(suite):
        columns = ", ".join(ident(c) for c in key)
        if dialect == "duckdb" and len(key) > 1:
            rules.append(f"hash({columns}) IN (SELECT hash({columns}) FROM ({base}) d GROUP BY 1 HAVING count(*) > 1)")
        else:
            row = f"({columns})" if len(key) > 1 else columns
            rules.append(f"{row} IN (SELECT {columns} FROM ({base}) d GROUP BY {columns} HAVING count(*) > 1)")
    return " OR ".join(rules) or "FALSE"


def suspects_sql(suite: TableSuite, base: str, dialect: str = "postgres", limit: int = MAX_SUSPECTS) -> str:
    """The suspect rows of ``base`` (at most ``limit``).

    Ordered by the unique key when there is one, so that rows sharing a key stay together when the
    limit cuts the set: otherwise a cut could keep one row of each duplicate pair and GX would see
    no duplicate at all.
    """
    keys = unique_keys(suite)
    order = ""
    if keys:
        columns = ", ".join(ident(c) for c in keys[0])
        order = f" ORDER BY hash({columns})" if dialect == "duckdb" and len(keys[0]) > 1 else f" ORDER BY {columns}"
    return f"SELECT * FROM ({base}) w WHERE {suspect_predicate(suite, base, dialect)}{order} LIMIT {limit}"


def summary_sql(suite: TableSuite, base: str, dialect: str = "postgres") -> str:
    """One scan: (rows, suspect rows) of ``base``; the suspects are fetched only when there are any."""
    return f"SELECT count(*), count(*) FILTER (WHERE {suspect_predicate(suite, base, dialect)}) FROM ({base}) w"
