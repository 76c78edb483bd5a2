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

MAX_SUSPECTS = 10_000  # beyond this the unexpected counts reported are lower bounds
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
        return f"{ident(k['column'])} NOT IN ({', '.join(literal(v) for v in k['value_set'])})"
    if kind == "ExpectColumnValueLengthsToEqual":
        return f"length({ident(k['column'])}) <> {int(k['value'])}"
    if kind == "ExpectColumnPairValuesAToBeGreaterThanB":
        op = "<" if k.get("or_equal") else "<="
        return f"{ident(k['column_A'])} {op} {ident(k['column_B'])}"
    raise ValueError(f"{kind} has no suspect-row predicate: add one here, or validate that suite with GX in full")


def unique_keys(suite: TableSuite) -> list[list[str]]:
    keys = []
    for expect in suite.expectations:
        if expect.kind == "ExpectCompoundColumnsToBeUnique":
            keys.append(list(expect.kwargs["column_list"]))
        elif expect.kind == "ExpectColumnValuesToBeUnique":
            keys.append([expect.kwargs["column"]])
    return keys


def suspects_sql(suite: TableSuite, base: str, dialect: str = "postgres", limit: int = MAX_SUSPECTS) -> str:
    """Rows of ``base`` (the suite's window query) that could fail ``suite``; helper columns start with ``_``.

    In DuckDB a wide key is partitioned by its hash (one integer instead of many columns: several
    times faster on the lake's 14-column flow key). A hash collision only adds suspect rows; GX
    then checks uniqueness on the real values, so the verdict stays exact.
    """
    rules = [f"coalesce({violation(e)}, FALSE)" for e in suite.expectations if e.kind not in UNIQUE_KINDS]
    keys = unique_keys(suite)
    counts = [f"count(*) OVER (PARTITION BY {_partition(key, dialect)}) AS _key_rows_{i}" for i, key in enumerate(keys)]
    rules += [f"_key_rows_{i} > 1" for i in range(len(keys))]
    inner = f"SELECT w.*{''.join(', ' + c for c in counts)} FROM ({base}) w"
    return f"SELECT * FROM ({inner}) s WHERE {' OR '.join(rules) or 'FALSE'} LIMIT {limit}"


def _partition(key: list[str], dialect: str) -> str:
    columns = ", ".join(ident(c) for c in key)
    return f"hash({columns})" if dialect == "duckdb" and len(key) > 1 else columns


def count_sql(base: str) -> str:
    return f"SELECT count(*) FROM ({base}) w"
