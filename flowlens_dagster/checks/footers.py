"""What the lake's Parquet footers prove without reading a row: row rules that hold on every row.

Each Parquet row group stores, per column, its null count and its minimum and maximum. When they
show that no row can break a rule (no NULL for NOT NULL; [min, max] inside a range; a single value,
or a small integer range, inside a set), the screening scan of
:func:`flowlens_dagster.checks.evaluate.lake_screen` leaves that rule out, and with it the columns
only that rule reads (decoding them is what a scan of 15M flows costs). A rule the statistics do not
settle (missing statistics, computed columns, rules on two columns) is scanned as before, and the
suspect-row path still evaluates every rule, so verdicts and counts do not change.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from flowlens_dagster.checks.suites import TableSuite

MAX_SET_RANGE = 4096  # integer ranges checked value by value against a set (protocol: 0-255)


@dataclass
class ColumnRange:
    """Null count and [low, high] of one column over every row group (None: a group had no min/max)."""

    nulls: int | None = 0
    low: Any = None
    high: Any = None
    ranged: bool = True

    def add(self, stats: Any, rows: int) -> None:
        if stats is None or not stats.has_null_count:
            self.nulls, self.ranged = None, False
            return
        if self.nulls is not None:
            self.nulls += stats.null_count
        if stats.null_count == rows:
            return  # all NULL: no value to bound
        if not stats.has_min_max:
            self.ranged = False
            return
        self.low = stats.min if self.low is None else min(self.low, stats.min)
        self.high = stats.max if self.high is None else max(self.high, stats.max)


def column_ranges(files: list[Path]) -> dict[str, ColumnRange]:
    """Every top-level column's :class:`ColumnRange` over the files' row groups."""
    import pyarrow.parquet as pq

    ranges: dict[str, ColumnRange] = {}
    for path in files:
        meta = pq.read_metadata(path)
        for g in range(meta.num_row_groups):
            group = meta.row_group(g)
            for c in range(group.num_columns):
                column = group.column(c)
                ranges.setdefault(column.path_in_schema, ColumnRange()).add(column.statistics, group.num_rows)
    return ranges


def proven_rules(suite: TableSuite, ranges: dict[str, ColumnRange]) -> frozenset[int]:
    """Indexes of ``suite.expectations`` that the statistics prove hold on every row."""
    return frozenset(i for i, e in enumerate(suite.expectations) if _holds(e.kind, e.kwargs, ranges))


def _holds(kind: str, kwargs: dict[str, Any], ranges: dict[str, ColumnRange]) -> bool:
    found = ranges.get(kwargs.get("column", ""))
    if found is None:
        return False
    if kind == "ExpectColumnValuesToNotBeNull":
        return found.nulls == 0
    if not found.ranged:
        return False
    if found.low is None:  # no value at all (every row NULL, or none): range and set rules ignore NULLs
        return found.nulls is not None
    try:
        if kind == "ExpectColumnValuesToBeBetween":
            low_ok = "min_value" not in kwargs or found.low >= kwargs["min_value"]
            return low_ok and ("max_value" not in kwargs or found.high <= kwargs["max_value"])
        if kind == "ExpectColumnValuesToBeInSet":
            return _inside_set(found.low, found.high, kwargs["value_set"])
    except TypeError:  # statistics of another type than the rule's bounds: not settled here
        return False
    return False


def _inside_set(low: Any, high: Any, values: list[Any]) -> bool:
    if low == high:
        return low in values
    if isinstance(low, int) and isinstance(high, int) and high - low <= MAX_SET_RANGE:
        allowed = set(values)
        return all(v in allowed for v in range(low, high + 1))
    return False
