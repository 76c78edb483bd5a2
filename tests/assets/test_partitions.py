"""Where the 5-minute partition set starts: configured, or chosen once and persisted (never shrinking)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from assets.partitions import partition_start, start_file
from ingest.config import FlowLensConfig

DAY = datetime(2026, 3, 10, 15, 42, tzinfo=UTC)


def config(tmp_path, **pipeline) -> FlowLensConfig:
    cfg = FlowLensConfig(state_dir=tmp_path)
    return cfg.model_copy(update={"pipeline": cfg.pipeline.model_copy(update=pipeline)})


def test_first_start_is_the_lookback_at_midnight_and_is_persisted(tmp_path):
    cfg = config(tmp_path)
    assert partition_start(cfg, now=DAY) == datetime(2026, 3, 3, tzinfo=UTC)
    assert start_file(cfg).read_text().strip() == "2026-03-03"


def test_the_persisted_start_does_not_move_as_days_pass(tmp_path):
    cfg = config(tmp_path)
    first = partition_start(cfg, now=DAY)
    assert partition_start(cfg, now=DAY + timedelta(days=30)) == first
    assert partition_start(cfg, now=DAY + timedelta(days=400)) == first


def test_the_lookback_follows_the_config(tmp_path):
    assert partition_start(config(tmp_path, partition_lookback_days=2), now=DAY) == datetime(2026, 3, 8, tzinfo=UTC)


def test_a_configured_start_wins_and_nothing_is_persisted(tmp_path):
    cfg = config(tmp_path, partition_start="2026-01-05T06:00:00+01:00")
    assert partition_start(cfg, now=DAY) == datetime(2026, 1, 5, tzinfo=UTC)
    assert not start_file(cfg).exists()


def test_a_broken_start_names_where_it_came_from(tmp_path):
    with pytest.raises(ValueError, match=r"pipeline\.partition_start='soon'"):
        partition_start(config(tmp_path, partition_start="soon"), now=DAY)
    cfg = config(tmp_path)
    start_file(cfg).parent.mkdir(parents=True)
    start_file(cfg).write_text("garbage\n")
    with pytest.raises(ValueError, match="partition_start='garbage"):
        partition_start(cfg, now=DAY)
