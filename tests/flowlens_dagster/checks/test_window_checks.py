"""Every window check against a window the real pipeline processed, clean and then corrupted on purpose."""

from __future__ import annotations

import shutil
from datetime import timedelta

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from flowlens_dagster.checks import names, run_window_checks
from flowlens_dagster.checks.evaluate import BY_NAME, CHECKS, evaluate, sources_from
from flowlens_dagster.checks.windows import Span
from ingest.window import window_key

from .conftest import KEY0, WINDOW0, Pipeline

pytestmark = pytest.mark.integration


def check(pipeline: Pipeline, name: str, window=WINDOW0):
    return evaluate(BY_NAME[name], sources_from(pipeline.resources), [Span.window(window)])


def test_clean_window_passes_every_check(pipeline: Pipeline) -> None:
    pipeline.land(WINDOW0)
    pipeline.process(WINDOW0)
    result = run_window_checks(WINDOW0, pipeline.resources)
    assert result["failed"] == {}
    assert result["passed"] is True
    assert result["checks"] == sum(1 for c in CHECKS if c.period == "window")
    flows = check(pipeline, names.STATS_CONSERVE_FLOWS).metadata["flow_stats"]["flows"]
    assert flows == 600


def test_negative_byte_count_fails_flow_stats_suite_and_conservation(pipeline: Pipeline) -> None:
    pipeline.land(WINDOW0)
    pipeline.process(WINDOW0)
    pipeline.sql(
        "UPDATE flowlens.flow_stats SET bytes = -1500 WHERE ctid = "
        "(SELECT ctid FROM flowlens.flow_stats WHERE window_start = %s LIMIT 1)",
        (WINDOW0,),
    )
    suite = check(pipeline, names.FLOW_STATS_SUITE)
    assert not suite.passed
    assert KEY0 in suite.message and "byte counts are never negative" in suite.message
    failed = {f["column"]: f for f in suite.metadata["failures"]}
    assert failed["bytes"]["unexpected_count"] == 1 and failed["bytes"]["examples"] == [-1500]
    assert failed["bytes_minus_20x_packets"]["unexpected_count"] == 1
    conserve = check(pipeline, names.STATS_CONSERVE_FLOWS)
    assert not conserve.passed and KEY0 in conserve.message and "bytes" in conserve.metadata["difference"]
    assert check(pipeline, names.LAKE_MATCHES_LOAD).passed  # the lake itself is intact


def test_duplicated_lake_file_fails_unique_key_and_lake_reconciliation(pipeline: Pipeline) -> None:
    pipeline.land(WINDOW0)
    pipeline.process(WINDOW0)
    window_dir = pipeline.lake.window_dir(WINDOW0)
    shutil.copy(window_dir / "part-0.parquet", window_dir / "part-1.parquet")  # a write landed twice
    suite = check(pipeline, names.ENRICHED_SUITE)
    assert not suite.passed and KEY0 in suite.message
    (dup,) = [f for f in suite.metadata["failures"] if f["expectation"] == "expect_compound_columns_to_be_unique"]
    assert dup["unexpected_count"] == 1200 and "src_addr" in dup["column"]
    assert dup["examples"][0]["src_addr"].startswith("10.1.")  # addresses shown as IP text, not bytes
    lake = check(pipeline, names.LAKE_MATCHES_LOAD)
    assert not lake.passed and "hold 1200 flows but enriched_flows wrote 600" in lake.message
    assert f"--partition {KEY0}" in lake.message
    # As in one Dagster step: the suites' shared screen scan also gives the lake totals the
    # reconciliations use; they see the duplicate too.
    shared = sources_from(pipeline.resources)
    for name in (names.ENRICHED_SUITE, names.LAKE_MATCHES_LOAD, names.STATS_CONSERVE_FLOWS):
        finding = evaluate(BY_NAME[name], shared, [Span.window(WINDOW0)])
        assert not finding.passed, (name, finding.message)
    assert shared.lake(Span.window(WINDOW0)).flows == 1200


def test_row_deleted_from_landed_window_fails_landing_reconciliation(pipeline: Pipeline) -> None:
    pipeline.land(WINDOW0)
    pipeline.process(WINDOW0)
    pipeline.sql(
        "DELETE FROM flowlens.flow_raw WHERE ctid = (SELECT ctid FROM flowlens.flow_raw WHERE receive_time >= %s "
        "AND receive_time < %s LIMIT 1)",
        (WINDOW0, WINDOW0 + timedelta(minutes=5)),
    )
    finding = check(pipeline, names.LANDING_MATCHES_LOAD)
    assert not finding.passed
    assert KEY0 in finding.message and "holds 599 flows but enriched_flows read 600" in finding.message
    assert finding.metadata["missing_flows"] == 1
    assert check(pipeline, names.STATS_CONSERVE_FLOWS).passed  # downstream still agrees with the lake


def test_late_data_names_the_window_to_rematerialize(pipeline: Pipeline) -> None:
    pipeline.land(WINDOW0)
    pipeline.process(WINDOW0)
    pipeline.land(WINDOW0, flows=40, seed=9)  # an exporter's flows for the window arrive after processing
    finding = check(pipeline, names.LANDING_MATCHES_LOAD)
    assert not finding.passed
    assert finding.message.startswith(f"late data in window {KEY0}")
    assert "40 flows arrived after" in finding.message and f"Re-materialize partition {KEY0}" in finding.message
    assert finding.metadata["late_flows"] == 40 and finding.metadata["rematerialize"] == KEY0
    pipeline.process(WINDOW0)  # what the message says to do
    assert run_window_checks(WINDOW0, pipeline.resources)["failed"] == {}


def test_skipped_window_fails_gap_check(pipeline: Pipeline) -> None:
    windows = [WINDOW0 + timedelta(minutes=5 * i) for i in range(4)]
    for i, window in enumerate(windows):
        pipeline.land(window, flows=200, seed=i)
        if i != 1:  # the second window is landed but never processed
            pipeline.process(window)
    assert check(pipeline, names.NO_WINDOW_GAP, windows[0]).passed
    gap = check(pipeline, names.NO_WINDOW_GAP, windows[3])
    assert not gap.passed
    skipped = window_key(windows[1])
    assert gap.metadata["missing_windows"] == [skipped]
    assert f"before {window_key(windows[3])}" in gap.message and f"--partition {skipped}" in gap.message
    missing = check(pipeline, names.LAKE_MATCHES_LOAD, windows[1])
    assert not missing.passed and "never materialized" in missing.message


def test_assets_and_dependencies_cover_flow_stats(pipeline: Pipeline) -> None:
    pipeline.land(WINDOW0)
    pipeline.process(WINDOW0)
    (server,) = pipeline.sql(
        "SELECT server_addr::text FROM flowlens.flow_stats WHERE window_start = %s LIMIT 1", (WINDOW0,)
    )[0]
    pipeline.sql("DELETE FROM flowlens.assets WHERE addr = %s::inet", (server,))
    pipeline.sql("DELETE FROM flowlens.dependencies WHERE server_addr = %s::inet", (server,))
    assets = check(pipeline, names.ASSETS_COVER_STATS)
    assert not assets.passed and server in assets.message and assets.metadata["absent_count"] == 1
    deps = check(pipeline, names.DEPENDENCIES_COVER_STATS)
    assert not deps.passed and f"-> {server}:" in deps.message and KEY0 in deps.message


def test_rows_repeating_the_probe_columns_but_not_the_flow_key_are_unique(pipeline: Pipeline) -> None:
    """The uniqueness check first groups the flow key's probe columns (evaluate.KEY_PROBES): rows
    that repeat those but differ elsewhere in the key (the same flows from another exporter) are
    not duplicates, and rows that repeat the whole key are."""
    pipeline.land(WINDOW0)
    pipeline.process(WINDOW0)
    window_dir = pipeline.lake.window_dir(WINDOW0)
    part = pq.read_table(window_dir / "part-0.parquet")
    exporter = part.schema.get_field_index("exporter")
    other = pa.array(
        [b"\x00" * 10 + b"\xff\xff" + bytes([192, 0, 2, 99])] * part.num_rows, part.schema.field(exporter).type
    )
    pq.write_table(part.set_column(exporter, part.schema.field(exporter), other), window_dir / "part-1.parquet")
    suite = check(pipeline, names.ENRICHED_SUITE)
    assert not [
        f for f in suite.metadata.get("failures", []) if f["expectation"] == "expect_compound_columns_to_be_unique"
    ]
    shutil.copy(window_dir / "part-0.parquet", window_dir / "part-2.parquet")  # now 600 flows repeat the whole key
    suite = check(pipeline, names.ENRICHED_SUITE)
    (dup,) = [f for f in suite.metadata["failures"] if f["expectation"] == "expect_compound_columns_to_be_unique"]
    assert dup["unexpected_count"] == 1200
