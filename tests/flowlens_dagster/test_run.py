"""``flowlens run``'s pure pieces: which span it generates, first time and again (the full run is manual)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from flowlens_dagster.run import WINDOW, dagster_overrides, parse_args, plan_span
from ingest.config import FlowLensConfig, load_config

NOW = datetime(2026, 11, 26, 19, 57, 12, tzinfo=UTC)


def test_first_run_generates_whole_windows_ending_a_window_before_now():
    first, last = plan_span(NOW, 60, None)
    # 19:57 -> the span ends at 19:50 (a whole window back)
    assert (first, last) == (datetime(2026, 11, 26, 18, 50, tzinfo=UTC), datetime(2026, 11, 26, 19, 50, tzinfo=UTC))


def test_a_second_run_generates_only_what_is_not_processed_yet():
    _, last = plan_span(NOW, 60, None)
    # within the same window: everything up to the first run's end is processed -> nothing new
    assert plan_span(NOW + timedelta(minutes=1), 60, last) == (last, last)
    # once the next window is a window back, that one window
    assert plan_span(NOW + timedelta(minutes=3), 60, last) == (last, last + WINDOW)
    # twenty minutes later: only the windows after the processed end
    first, later = plan_span(NOW + timedelta(minutes=20), 60, last)
    assert first == last and (later - first) == 4 * WINDOW
    # hours later: at most --minutes back, not the whole gap
    first, later = plan_span(NOW + timedelta(hours=5), 60, last)
    assert later - first == timedelta(minutes=60)


def test_minutes_shorter_than_a_window_are_refused():
    with pytest.raises(SystemExit):
        parse_args(["--minutes", "3"])


def test_dagster_overrides_reach_back_to_the_span_and_are_valid_config():
    cfg = FlowLensConfig()
    first = datetime.now(UTC) - timedelta(minutes=65)
    env = dagster_overrides(cfg, first)
    loaded = load_config(environ=env)
    pipe = loaded.pipeline
    # the sensor's floor (newest complete time minus the lookback) is at or before the span's start
    assert datetime.now(UTC) - timedelta(minutes=pipe.sensor_lookback_minutes) <= first
    assert pipe.max_runs_per_tick * WINDOW >= timedelta(minutes=pipe.sensor_lookback_minutes)
    assert pipe.instance_timeout_seconds <= cfg.pipeline.instance_timeout_seconds
    assert loaded.mode == "minimal"
