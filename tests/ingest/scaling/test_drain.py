"""The windowed drain model: windows close, runs cost a fixed overhead plus their flows, catch-up batches."""

import json

import pytest

from ingest.config import load_config
from ingest.scaling.drain import (
    DEFAULT_RUN_OVERHEAD_SECONDS,
    Pipeline,
    Shape,
    burst_shape,
    pipeline_from,
    predict_drain,
    run_overhead_from,
    speeds_from,
)
from ingest.scaling.figures import bench_dir, load_results

# 10 flows/s, 100 flows/s from 150 s to 450 s (the burst ends half-way through the second window)
SHAPE = Shape(((10, 150), (100, 300), (10, 600)), burst=1)
FAST = Pipeline(flows_per_s=1_000, run_overhead_s=20, tick_s=1, close_delay_s=5)


def test_a_burst_drains_when_the_window_holding_its_end_is_processed():
    # Window [0, 300) holds 10 x 150 + 100 x 150 = 16,500 flows: a run of 20 + 16.5 s from the tick at
    # 305 s (closed at 300 + 5) to 341.5 s. Window [300, 600) holds the same: the first tick at or
    # after 605 s is 605.5 s (ticks every 1 s after 341.5), its run ends at 642 s with lag 42 s <= 300.
    prediction = predict_drain(SHAPE, FAST)
    assert [(r["start"], r["windows"], r["flows"]) for r in prediction.runs] == [(305, 1, 16_500), (605.5, 1, 16_500)]
    assert prediction.drain_seconds == pytest.approx(642 - 450)


def test_the_fixed_cost_of_a_run_counts_in_full_whatever_the_throughput():
    slow_start = Pipeline(flows_per_s=1e12, run_overhead_s=120, tick_s=1, close_delay_s=5)
    instant = Pipeline(flows_per_s=1e12, run_overhead_s=0, tick_s=1, close_delay_s=5)
    # with no processing time the drain is the wait for the window to close (150 s) plus the close delay
    assert predict_drain(SHAPE, instant).drain_seconds == pytest.approx(155)
    assert predict_drain(SHAPE, slow_start).drain_seconds == pytest.approx(155 + 120)


def test_a_backlog_above_the_pause_bound_is_caught_up_in_multi_window_runs():
    # 2,000 flows/s for 20 minutes at 1,500 flows/s of processing: lag passes pause_at (600 s)
    shape = Shape(((100, 300), (2_000, 1_200), (100, 6_000)), burst=1)
    batched = Pipeline(flows_per_s=1_500, run_overhead_s=60, tick_s=10, close_delay_s=5, catch_up_windows_per_run=36)
    single = Pipeline(flows_per_s=1_500, run_overhead_s=60, tick_s=10, close_delay_s=5, catch_up_windows_per_run=1,
                      windows_per_run=1)  # fmt: skip
    caught_up = predict_drain(shape, batched)
    one_by_one = predict_drain(shape, single)
    assert any(r["catch_up"] and r["windows"] > 1 for r in caught_up.runs)
    assert caught_up.max_lag_s > batched.pause_at_lag_s
    # one overhead for several windows: catching up in batches drains sooner than window by window
    assert caught_up.drain_seconds < one_by_one.drain_seconds
    assert len(caught_up.runs) < len(one_by_one.runs)


def test_a_pipeline_slower_than_the_steady_rate_never_drains():
    shape = Shape(((1_000, 300), (5_000, 300), (1_000, 300)), burst=1)
    slow = Pipeline(flows_per_s=900, run_overhead_s=5, tick_s=30, close_delay_s=30)
    assert predict_drain(shape, slow, horizon_windows=50).drain_seconds is None


def test_the_pipeline_comes_from_the_config_and_the_overhead_from_the_bench_file(tmp_path):
    cfg = load_config(environ={})
    p = pipeline_from(cfg, flows_per_s=50_000, run_overhead_s=7)
    assert p.tick_s == cfg.pipeline.sensor_interval_seconds
    assert (
        p.close_delay_s == cfg.pipeline.grace_seconds + cfg.ingest.batch_max_seconds + cfg.ingest.heartbeat_seconds / 2
    )
    assert (p.windows_per_run, p.catch_up_windows_per_run) == (
        cfg.pipeline.max_runs_per_tick,
        cfg.pipeline.catch_up_windows_per_run,
    )
    assert run_overhead_from({}) == (DEFAULT_RUN_OVERHEAD_SECONDS, "this project's default (no bench burst file)")
    directory = bench_dir(tmp_path)
    directory.mkdir()
    (directory / "burst.json").write_text(
        json.dumps({"bench": "burst", "figures": {}, "config": {"run_overhead_seconds": 4.5}})
    )
    value, source = run_overhead_from(load_results(directory))
    assert value == 4.5 and "bench/burst.json" in source


def test_the_planner_s_shape_starts_the_burst_on_a_window():
    shape = burst_shape(1_000, 8_000, 120)
    assert shape.burst_end == 300 + 120
    assert shape.flows_between(0, 300) == 300_000
    assert shape.flows_between(300, 600) == 8_000 * 120 + 1_000 * 180


def test_connections_cost_apart_from_flows_with_the_pipeline_bench_s_stage_split():
    results = {
        "pipeline": {
            "figures": {"flows": 2_000_000, "flow_stats_rows": 500_000, "read_seconds": 6, "enrich_seconds": 2,
                        "write_lake_seconds": 1, "aggregate_seconds": 1, "write_pg_seconds": 5, "assets_seconds": 5,
                        "dependencies_seconds": 10, "changes_seconds": 4},
            "config": {"per_check_seconds": {"landing_suite": 10, "dependencies_suite": 1}},
        }
    }  # fmt: skip
    flows_per_s, rows_per_s, source = speeds_from(results)
    assert flows_per_s == 2_000_000 / 20  # 10 s of flow stages + the 10 s landing check
    assert rows_per_s == 500_000 / 25
    assert "2,000,000 flows, 500,000 rows" in source
    assert speeds_from({}) is None
    # a window's run: overhead + flows / flows_per_s + its connections / rows_per_s
    shape = Shape(((1_000, 300), (1_000, 300)), burst=0, rows=lambda flows: flows / 10)
    p = Pipeline(flows_per_s=flows_per_s, rows_per_s=rows_per_s, run_overhead_s=5, tick_s=1, close_delay_s=0)
    run = predict_drain(shape, p).runs[0]
    assert run["seconds"] == pytest.approx(5 + 300_000 / 100_000 + 30_000 / 20_000)
