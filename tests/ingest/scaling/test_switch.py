"""Auto mode's switch rules: hysteresis, dwell, bursts, unreachable targets; contradictory thresholds."""

from __future__ import annotations

from pathlib import Path

import pytest

from ingest.config import ConfigError, KafkaThresholds, load_config
from ingest.scaling.switch import KAFKA, POSTGRES, ModeSwitcher, RateMeter

T = KafkaThresholds(rate_window_seconds=10, min_dwell_seconds=30, burst_duration_trigger_seconds=5)


def feed(switcher: ModeSwitcher, start: int, seconds: int, rate: int) -> list:
    """``rate`` flows each second from ``start``; commit and collect every switch decided."""
    switches = []
    for second in range(start, start + seconds):
        for quarter in range(4):  # a few writes per second, as the daemon's batches come
            now = second + quarter / 4
            switcher.observe(now, rate // 4)
            decided = switcher.decide(now)
            if decided is not None:
                switcher.commit(decided)
                switches.append(decided)
    return switches


def test_meter_averages_whole_seconds_before_the_current_one():
    meter = RateMeter(keep=20)
    for second in range(10):
        meter.add(second + 0.5, 1000 * second)
    assert meter.rate(10.0, 5) == pytest.approx(sum(1000 * s for s in range(5, 10)) / 5)
    assert meter.rate(30.0, 5) == 0  # nothing in the last five seconds


def test_ramp_up_and_down_switches_once_each_way_with_hysteresis():
    s = ModeSwitcher(T, processes=1, now=0)
    assert feed(s, 0, 60, 2_000) == []
    up = feed(s, 60, 60, 20_000)
    assert [(x.source, x.target) for x in up] == [(POSTGRES, KAFKA)]
    assert "enable" in up[0].reason and 60 < up[0].at <= 72  # within a rate window of the step
    # between disable (5k) and enable (10k): stays on Kafka however long
    assert feed(s, 120, 60, 7_000) == []
    down = feed(s, 180, 60, 2_000)
    assert [(x.source, x.target) for x in down] == [(KAFKA, POSTGRES)]
    assert s.landing == POSTGRES


def test_a_burst_switches_at_once_even_inside_the_dwell():
    s = ModeSwitcher(T, processes=1, now=0)
    switches = feed(s, 0, 12, 40_000)
    assert len(switches) == 1 and switches[0].reason.startswith("burst")
    assert switches[0].at < T.min_dwell_seconds  # the dwell did not hold it back
    assert switches[0].at <= T.burst_duration_trigger_seconds + 1


def test_dwell_holds_a_switch_back():
    s = ModeSwitcher(T, processes=1, now=0)
    assert feed(s, 0, 25, 15_000) == []  # above enable but below burst: waits for the 30 s dwell
    assert len(feed(s, 25, 10, 15_000)) == 1


def test_rate_is_scaled_by_the_processes_sharing_the_traffic():
    s = ModeSwitcher(T, processes=4, now=0)
    assert len(feed(s, 30, 20, 3_000)) == 1  # 3k per process x 4 = 12k >= enable


def test_an_unreachable_target_postpones_the_next_attempt():
    s = ModeSwitcher(T, processes=1, now=0)
    feed(s, 0, 40, 0)
    for second in range(40, 71):
        s.observe(second, 20_000)
        if second == 60:
            assert s.decide(60) is not None
            s.postpone(60, 10)
        if 60 < second < 70:
            assert s.decide(second) is None and s.landing == POSTGRES
    assert s.decide(70.5) is not None


@pytest.mark.parametrize(
    ("yaml", "message"),
    [
        ("enable_at_flows_per_sec: 1000\n      disable_at_flows_per_sec: 2000", "must not exceed"),
        ("enable_at_flows_per_sec: 40000\n      burst_threshold_flows_per_sec: 30000", "a burst is a rate above"),
    ],
)
def test_contradictory_thresholds_are_a_config_error(tmp_path: Path, yaml: str, message: str):
    path = tmp_path / "flowlens.yaml"
    path.write_text(f"flowlens:\n  thresholds:\n    kafka:\n      {yaml}\n")
    with pytest.raises(ConfigError, match=message) as info:
        load_config(path, environ={})
    assert "thresholds.kafka" in str(info.value)
