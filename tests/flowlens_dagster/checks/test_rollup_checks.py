"""Hourly and daily rollup checks: suites pass on the real rollups, conservation catches a late reload."""

from __future__ import annotations

from datetime import timedelta

import pytest

from assets.keys import FLOW_STATS_DAILY, FLOW_STATS_HOURLY
from assets.rollups import roll_up
from flowlens_dagster.checks import names
from flowlens_dagster.checks.evaluate import BY_NAME, evaluate, sources_from
from flowlens_dagster.checks.windows import Span

from .conftest import WINDOW0, Pipeline

pytestmark = pytest.mark.integration


def test_rollups_pass_then_a_reloaded_window_breaks_conservation(pipeline: Pipeline) -> None:
    hour = WINDOW0.replace(minute=0)
    day = hour.replace(hour=0)
    for i in range(2):
        pipeline.land(hour + timedelta(minutes=5 * i), flows=300, seed=i)
        pipeline.process(hour + timedelta(minutes=5 * i))
    roll_up(pipeline.postgres, FLOW_STATS_HOURLY, hour, hour + timedelta(hours=1), None)
    roll_up(pipeline.postgres, FLOW_STATS_DAILY, day, day + timedelta(days=1), None)
    hour_span = Span.of(hour, hour + timedelta(hours=1), hour.strftime("%Y-%m-%d-%H:%M"))
    day_span = Span.of(day, day + timedelta(days=1), day.strftime("%Y-%m-%d"))
    sources = sources_from(pipeline.resources)
    for name, span in ((names.HOURLY_SUITE, hour_span), (names.HOURLY_CONSERVES_STATS, hour_span),
                       (names.DAILY_SUITE, day_span), (names.DAILY_CONSERVES_STATS, day_span)):  # fmt: skip
        finding = evaluate(BY_NAME[name], sources, [span])
        assert finding.passed, finding.message

    pipeline.land(hour, flows=25, seed=7)  # late flows for the first window, reloaded after the rollup
    pipeline.process(hour)
    finding = evaluate(BY_NAME[names.HOURLY_CONSERVES_STATS], sources_from(pipeline.resources), [hour_span])
    assert not finding.passed
    assert finding.metadata["difference"]["flows"] == -25
    assert hour_span.key in finding.message and f"re-materialize partition {hour_span.key}" in finding.message
