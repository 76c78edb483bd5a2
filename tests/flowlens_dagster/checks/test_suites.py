"""The GX suites themselves: the fast suspect-row path agrees with Great Expectations validating the
whole window in PostgreSQL, and each rule catches what it is meant to catch."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from assets import enriched_flows
from flowlens_dagster.checks import names, suites
from flowlens_dagster.checks.evaluate import BY_NAME, evaluate, sources_from
from flowlens_dagster.checks.gx_runner import RUNNER
from flowlens_dagster.checks.suspects import suspects_sql, violation
from flowlens_dagster.checks.windows import Span

from .conftest import KEY0, WINDOW0, Pipeline


def verdicts(failures: list[dict]) -> dict[tuple[str, str], int | None]:
    """{(expectation, column): unexpected count} of a list of failures (as in check metadata)."""
    return {(f["expectation"], f["column"]): f["unexpected_count"] for f in failures}


@pytest.mark.integration
def test_suspect_rows_give_the_same_verdicts_as_full_gx_validation(pipeline: Pipeline) -> None:
    pipeline.land(WINDOW0)
    pipeline.process(WINDOW0)
    span = Span.window(WINDOW0)
    sources = sources_from(pipeline.resources)
    builds = (suites.landing_suite, suites.flow_stats_suite, suites.assets_suite, suites.dependencies_suite,
              suites.changes_suite)  # fmt: skip
    for build in builds:  # clean: both paths pass, and GX itself passes on the whole window
        assert RUNNER.validate_sql(sources.url, build(span)).success, build.__name__
        assert evaluate(BY_NAME[build(span).name], sources, [span]).passed, build.__name__
    # Corrupt: in the landing, byte counts in the wrong unit (fewer bytes than 20 per packet) and an
    # unassigned protocol (the window read again: the read now takes the edited rows, not the landed
    # batches); negative byte counts in flow_stats; a change stamped 2 minutes into the window.
    landed = "SELECT ctid FROM flowlens.flow_raw WHERE receive_time >= %s AND receive_time < %s"
    window = (WINDOW0, WINDOW0 + timedelta(minutes=5))
    pipeline.sql(f"UPDATE flowlens.flow_raw SET bytes = 10 * packets WHERE ctid IN ({landed} LIMIT 3)", window)
    pipeline.sql(f"UPDATE flowlens.flow_raw SET protocol = 200 WHERE ctid IN ({landed} OFFSET 10 LIMIT 1)", window)
    enriched_flows.process_window(WINDOW0, pipeline.landing, pipeline.lake, None, pipeline.postgres)
    pipeline.sql(
        "UPDATE flowlens.flow_stats SET bytes = -1 WHERE ctid IN "
        "(SELECT ctid FROM flowlens.flow_stats WHERE window_start = %s LIMIT 2)",
        (WINDOW0,),
    )
    pipeline.sql(
        "INSERT INTO flowlens.changes (window_start, kind, subject, addr) VALUES (%s, 'new_asset', '10.7.7.7', NULL)",
        (WINDOW0 + timedelta(minutes=2),),
    )
    sources = sources_from(pipeline.resources)  # fresh: the window's load and lake changed
    between, in_set = "expect_column_values_to_be_between", "expect_column_values_to_be_in_set"
    expected_failures = {
        suites.flow_stats_suite: {(between, "bytes"): 2, (between, "bytes_minus_20x_packets"): 2},
        suites.landing_suite: {(between, "bytes_minus_20x_packets"): 3, (in_set, "protocol"): 1},
        suites.changes_suite: {(in_set, "window_start"): 1, (in_set, "subject_columns_set"): 1},
    }
    for build, expected in expected_failures.items():
        full = RUNNER.validate_sql(sources.url, build(span))  # GX on every row of the window, in PostgreSQL
        fast = evaluate(BY_NAME[build(span).name], sources, [span])  # the checks' path
        assert verdicts(full.metadata()["failures"]) == expected, build.__name__
        assert verdicts(fast.metadata["failures"]) == expected, build.__name__
        assert not fast.passed and fast.metadata["rows"] == full.rows and KEY0 in fast.message


def test_each_expectation_kind_has_a_suspect_predicate() -> None:
    span = Span.window(datetime(2026, 1, 1, 0, 5, tzinfo=UTC))
    for build in (suites.landing_suite, suites.enriched_suite, suites.flow_stats_suite, suites.assets_suite,
                  suites.dependencies_suite, suites.changes_suite):  # fmt: skip
        suite = build(span)
        sql = suspects_sql(suite, "SELECT * FROM t")
        assert sql.startswith("SELECT * FROM (SELECT * FROM t) w WHERE ") and "LIMIT" in sql
    rollup = suites.rollup_suite(
        "flow_stats_hourly", "hour_start", Span.of(span.start, span.start + timedelta(hours=1), "h")
    )
    assert "GROUP BY" not in suspects_sql(rollup, "SELECT 1")  # its primary key already guarantees uniqueness
    assert "hash(" in suspects_sql(suites.enriched_suite(span), "SELECT 1", "duckdb")  # the lake has no key
    assert violation(suites.between("bytes", 0, None, "")) == '("bytes" < 0)'
    with pytest.raises(ValueError, match="no suspect-row predicate"):
        violation(suites.Expect("ExpectColumnMeanToBeBetween", {"column": "bytes"}, ""))


def test_windows_must_be_aligned() -> None:
    with pytest.raises(ValueError, match="not the start of a 5-minute window"):
        Span.window(datetime(2026, 1, 1, 0, 3, tzinfo=UTC))
    assert Span.window(datetime(2026, 1, 1, 0, 5, tzinfo=UTC)).key == "2026-01-01-00:05"
    assert names.FLOW_STATS in names.WINDOW_ASSETS
