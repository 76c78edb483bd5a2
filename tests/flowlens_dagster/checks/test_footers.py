"""Parquet statistics settle row rules only when no row can break them (pure: a temporary file)."""

from __future__ import annotations

from datetime import UTC, datetime

import pyarrow as pa
import pyarrow.parquet as pq

from flowlens_dagster.checks import footers, suites
from flowlens_dagster.checks.windows import Span

SPAN = Span.window(datetime(2026, 11, 25, 10, 0, tzinfo=UTC))


def suite(*expects: suites.Expect) -> suites.TableSuite:
    return suites.TableSuite("t", 1, "t", SPAN, tuple(expects))


def test_statistics_prove_only_rules_no_row_breaks(tmp_path) -> None:
    table = pa.table({
        "port": pa.array([22, 443, 8080, 65535], pa.int32()),
        "proto": pa.array([6, 6, 17, 200], pa.uint8()),
        "version": pa.array([10, 10, 10, 10], pa.uint8()),
        "maybe": pa.array([1, None, 3, 4], pa.int64()),
        "start": pa.array([SPAN.start] * 4, pa.timestamp("us", "UTC")),
    })  # fmt: skip
    pq.write_table(table, tmp_path / "a.parquet", row_group_size=2)
    ranges = footers.column_ranges([tmp_path / "a.parquet"])
    rules = suite(
        *suites.ports("port"),  # 0: [22, 65535] inside 0-65535
        suites.protocol("proto"),  # 1: 200 is outside the set: must be scanned
        suites.Expect("ExpectColumnValuesToBeInSet", {"column": "version", "value_set": [9, 10]}, ""),  # 2
        *suites.not_null("maybe", "port"),  # 3: has a NULL; 4: none
        suites.between("maybe", 2, None, ""),  # 5: min is 1
        suites.starts_at("start", SPAN),  # 6: a single value, the span start
        suites.between(suites.IP_MINIMUM, 0, None, ""),  # 7: computed, not in the file
        suites.ordered("port", "maybe"),  # 8: two columns: never settled here
    )
    assert footers.proven_rules(rules, ranges) == frozenset({0, 2, 4, 6})


def test_a_group_without_statistics_settles_nothing(tmp_path) -> None:
    pq.write_table(pa.table({"port": pa.array([1, 2], pa.int32())}), tmp_path / "b.parquet", write_statistics=False)
    ranges = footers.column_ranges([tmp_path / "b.parquet"])
    assert footers.proven_rules(suite(*suites.ports("port"), *suites.not_null("port")), ranges) == frozenset()
