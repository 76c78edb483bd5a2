"""The pipeline's Redis use per mode: static in minimal/standard/full, the API's recorded decision in auto
(read from PostgreSQL: tests/assets/test_changes_redis_use.py)."""

import pytest

from ingest.config import FlowLensConfig
from ingest.scaling.redis_use import pipeline_uses_redis


@pytest.mark.parametrize(("mode", "expected"), [("minimal", False), ("standard", True), ("full", True)])
def test_static_modes_decide_without_postgres(mode, expected):
    assert pipeline_uses_redis(FlowLensConfig(mode=mode), conn=None) is expected


class Recorded:
    """A connection answering IN_USE_SQL with one value, keeping the parameters it was asked with."""

    def __init__(self, value):
        self.value, self.asked = value, []

    def execute(self, sql, params):
        self.asked.append(params)
        return self

    def fetchone(self):
        return (self.value,)


@pytest.mark.parametrize(("value", "expected"), [(True, True), (False, False), (None, False)])
def test_auto_mode_follows_the_recorded_decision_within_three_checks(value, expected):
    cfg = FlowLensConfig(mode="auto")
    conn = Recorded(value)
    assert pipeline_uses_redis(cfg, conn) is expected
    assert conn.asked == [{"stale": 3 * cfg.thresholds.redis.check_seconds}]
