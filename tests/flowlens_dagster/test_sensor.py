"""The watermark sensor: pure tick planning, then a real tick against the minimal-mode landing."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import dagster as dg
import pytest

from assets.catch_up import CATCH_UP_TAG
from assets.resources import build_resources
from flowlens_dagster.definitions import defs
from flowlens_dagster.lag import lag_events
from flowlens_dagster.sensors import SENSOR_NAME, plan_tick, window_run_request
from ingest.config import FlowLensConfig
from ingest.land.base import Watermark
from ingest.land.postgres import PostgresLanding
from ingest.window import window_key
from tests.assets import scenario
from tests.assets.test_window_assets import pipeline_config

NOW = datetime(2026, 11, 26, 12, 31, 0, tzinfo=UTC)
FIRST = datetime(2026, 11, 24, tzinfo=UTC)
CFG = FlowLensConfig()  # grace 30 s, instance timeout 120 s, 12 runs per tick, lag 180/600/300


def mark(name: str, landed_through: datetime, heartbeat_age_s: float = 1) -> Watermark:
    return Watermark(name, landed_through, NOW - timedelta(seconds=heartbeat_age_s))


def test_window_is_complete_only_when_every_live_instance_is_past_it():
    cursor = {"next_window": "2026-11-26T12:10:00+00:00"}
    marks = [mark("a", NOW), mark("b", datetime(2026, 11, 26, 12, 22, tzinfo=UTC))]
    plan = plan_tick(CFG, marks, NOW, cursor, NOW, None, 0, FIRST)
    # b has landed through 12:22: windows 12:10 and 12:15 are complete, 12:20 is not
    assert [window_key(w) for w in plan.windows] == ["2026-11-26-12:10", "2026-11-26-12:15"]
    assert plan.next_window == datetime(2026, 11, 26, 12, 20, tzinfo=UTC)
    assert plan.live_instances == ["a", "b"]


def test_a_silent_instance_stops_holding_windows_back():
    cursor = {"next_window": "2026-11-26T12:10:00+00:00"}
    marks = [mark("a", NOW), mark("dead", datetime(2026, 11, 26, 12, 0, tzinfo=UTC), heartbeat_age_s=600)]
    plan = plan_tick(CFG, marks, NOW, cursor, NOW, None, 0, FIRST)
    assert plan.silent_instances == ["dead"]
    # grace: the window ending 12:30 closes only at 12:30:30 -> 12:25 is the last complete one
    assert [window_key(w) for w in plan.windows][-1] == "2026-11-26-12:25"


def test_requests_are_capped_per_tick_and_the_cursor_resumes_after_them():
    cfg = CFG.model_copy(update={"pipeline": CFG.pipeline.model_copy(update={"max_runs_per_tick": 3})})
    cursor = {"next_window": "2026-11-26T11:00:00+00:00"}
    plan = plan_tick(cfg, [mark("a", NOW)], NOW, cursor, NOW, NOW - timedelta(minutes=1), 0, FIRST)
    assert len(plan.windows) == 3
    again = plan_tick(cfg, [mark("a", NOW)], NOW, {"next_window": plan.next_window.isoformat()}, NOW, None, 0, FIRST)
    assert again.windows[0] == plan.windows[-1] + timedelta(minutes=5)


def test_catch_up_reaches_back_only_as_far_as_the_lookback():
    cfg = CFG.model_copy(update={"pipeline": CFG.pipeline.model_copy(update={"sensor_lookback_minutes": 20})})
    stale = {"next_window": "2026-11-26T08:00:00+00:00"}  # e.g. after a long outage
    for cursor in (stale, {}):
        plan = plan_tick(cfg, [mark("a", NOW)], NOW, cursor, NOW, None, 0, FIRST)
        # through = 12:30:30 (grace) -> floor = window of 12:10:30 = 12:10
        assert plan.windows[0] == datetime(2026, 11, 26, 12, 10, tzinfo=UTC)


def test_lag_alerts_then_holds_while_runs_are_queued_then_resumes():
    cursor = {"next_window": "2026-11-26T12:00:00+00:00"}
    marks = [mark("a", NOW)]
    alert = plan_tick(CFG, marks, NOW, cursor, NOW, NOW - timedelta(seconds=200), 0, FIRST)
    assert alert.alert and not alert.held and alert.windows
    held = plan_tick(CFG, marks, NOW, cursor, NOW, NOW - timedelta(seconds=700), in_flight=4, first_partition=FIRST)
    assert held.held and held.windows == [] and held.next_window == datetime(2026, 11, 26, 12, 0, tzinfo=UTC)
    # still above the resume threshold: stays held, but a drained queue gets one capped batch
    drained = plan_tick(
        CFG, marks, NOW, {**cursor, "held": True}, NOW, NOW - timedelta(seconds=400), in_flight=0,
        first_partition=FIRST,
    )  # fmt: skip
    assert drained.held and drained.windows
    resumed = plan_tick(
        CFG, marks, NOW, {**cursor, "held": True}, NOW, NOW - timedelta(seconds=100), in_flight=0,
        first_partition=FIRST,
    )  # fmt: skip
    assert not resumed.held and resumed.windows


def test_nothing_is_requested_while_a_window_run_is_in_flight():
    cursor = {"next_window": "2026-11-26T12:00:00+00:00"}
    busy = plan_tick(CFG, [mark("a", NOW)], NOW, cursor, NOW, NOW - timedelta(seconds=60), 1, FIRST)
    assert busy.windows == [] and busy.next_window == datetime(2026, 11, 26, 12, 0, tzinfo=UTC)
    # once it is done, everything that completed meanwhile goes into the next run
    idle = plan_tick(CFG, [mark("a", NOW)], NOW, cursor, NOW, NOW - timedelta(seconds=60), 0, FIRST)
    assert [window_key(w) for w in idle.windows][::5] == ["2026-11-26-12:00", "2026-11-26-12:25"]


def test_one_window_is_a_partition_run_several_are_one_range_run():
    single = window_run_request([datetime(2026, 11, 26, 12, 0, tzinfo=UTC)])
    assert single.partition_key == "2026-11-26-12:00" and single.run_key == "window-2026-11-26-12:00"
    catch_up = window_run_request(
        [datetime(2026, 11, 26, 12, 0, tzinfo=UTC) + i * timedelta(minutes=5) for i in range(3)]
    )
    assert catch_up.partition_key is None
    assert catch_up.partition_key_range == dg.PartitionKeyRange("2026-11-26-12:00", "2026-11-26-12:10")
    assert catch_up.run_key == "windows-2026-11-26-12:00...2026-11-26-12:10"


@pytest.mark.integration
def test_sensor_tick_reports_landed_windows_and_requests_runs(flowlens_config, clean_pg):
    base = scenario.base_window()
    flows = scenario.flow_rows(base)
    landing = PostgresLanding(clean_pg)
    try:
        for rows in flows.values():
            landing.write(scenario.batch(rows))
        landing.heartbeat("test-instance", base + 3 * scenario.WINDOW, sum(len(r) for r in flows.values()))
    finally:
        landing.close()
    resources = build_resources(pipeline_config(flowlens_config), use_env=False)
    sensor = defs.resolve_sensor_def(SENSOR_NAME)
    cursor = json.dumps({"next_window": base.isoformat()})
    with (
        dg.instance_for_test() as instance,
        dg.build_sensor_context(instance=instance, cursor=cursor, resources=resources) as context,
    ):
        result = sensor(context)
    assert isinstance(result, dg.SensorResult)
    keys = [window_key(base + i * scenario.WINDOW) for i in range(3)]
    [request] = result.run_requests  # catching up: one run over the three windows
    assert request.partition_key_range == dg.PartitionKeyRange(keys[0], keys[-1])
    counts = {e.partition: e.metadata["dagster/row_count"].value for e in result.asset_events}
    assert counts == {window_key(base + i * scenario.WINDOW): len(flows[i]) for i in range(3)}
    assert json.loads(result.cursor)["next_window"] == (base + 3 * scenario.WINDOW).isoformat()


def test_a_tick_with_postgres_down_skips_with_one_line(tmp_path):
    from tests.ingest.test_services import closed_port

    cfg = FlowLensConfig(mode="minimal", state_dir=tmp_path)
    cfg = cfg.model_copy(update={"postgres": cfg.postgres.model_copy(update={"port": closed_port()})})
    sensor = defs.resolve_sensor_def(SENSOR_NAME)
    resources = build_resources(cfg, use_env=False)
    with dg.instance_for_test() as instance, dg.build_sensor_context(instance=instance, resources=resources) as ctx:
        result = sensor(ctx)
    assert isinstance(result, dg.SkipReason)
    message = result.skip_message
    assert (
        "\n" not in message
        and message.startswith("watermark sensor: PostgreSQL at 127.0.0.1:")
        and "flowlens stack up" in message
    )


def test_above_the_pause_threshold_catch_up_runs_take_more_windows_and_defer_work():
    cfg = CFG.model_copy(
        update={"pipeline": CFG.pipeline.model_copy(update={"max_runs_per_tick": 4, "catch_up_windows_per_run": 10})}
    )
    cursor = {"next_window": "2026-11-26T10:00:00+00:00"}
    normal = plan_tick(cfg, [mark("a", NOW)], NOW, cursor, NOW, NOW - timedelta(seconds=100), 0, FIRST)
    behind = plan_tick(cfg, [mark("a", NOW)], NOW, cursor, NOW, NOW - timedelta(seconds=700), 0, FIRST)
    assert (normal.held, len(normal.windows)) == (False, 4)
    assert (behind.held, len(behind.windows)) == (True, 10)
    request = window_run_request(behind.windows, catch_up=behind.held)
    assert request.tags[CATCH_UP_TAG] == "true"
    assert CATCH_UP_TAG not in window_run_request(normal.windows).tags


def test_lag_transitions_are_told_once():
    assert [e["kind"] for e in lag_events({}, 200.0, True, False, CFG)] == ["lag_alert"]
    assert lag_events({"alert": True}, 250.0, True, False, CFG) == []  # still above: told already
    both = lag_events({"alert": True}, 700.0, True, True, CFG)
    assert [e["kind"] for e in both] == ["catch_up_started"] and both[0]["lag_seconds"] == 700.0
    assert [e["kind"] for e in lag_events({"alert": True, "held": True}, 100.0, False, False, CFG)] == [
        "catch_up_ended"
    ]
