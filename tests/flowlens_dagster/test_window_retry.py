"""A window run that fails is retried inside the run (RetryPolicy), then requested again by the sensor."""

from __future__ import annotations

import json
from contextlib import contextmanager

import dagster as dg
import psycopg
import pytest

from assets.resources import build_resources
from flowlens_dagster.definitions import defs
from flowlens_dagster.jobs import window_job
from flowlens_dagster.lag import ATTEMPT_TAG, RETRY_OF_TAG
from flowlens_dagster.sensors import SENSOR_NAME
from ingest.config import load_config
from ingest.land.postgres import PostgresLanding
from ingest.window import window_key
from tests.assets import scenario
from tests.assets.test_window_assets import pipeline_config

pytestmark = pytest.mark.integration


@contextmanager
def landing_table_missing(dsn: str):
    """A real fault: flow_raw is gone while the window runs (renamed, then put back)."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("ALTER TABLE flowlens.flow_raw RENAME TO flow_raw_away")
    try:
        yield
    finally:
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute("ALTER TABLE flowlens.flow_raw_away RENAME TO flow_raw")


def tick(instance, resources, cursor: dict):
    sensor = defs.resolve_sensor_def(SENSOR_NAME)
    with dg.build_sensor_context(instance=instance, cursor=json.dumps(cursor), resources=resources) as context:
        return sensor(context)


def test_a_failed_window_is_retried_then_requested_again(flowlens_config, clean_pg, monkeypatch, tmp_path):
    monkeypatch.setenv("FLOWLENS_STATE_DIR", str(tmp_path))
    base = scenario.base_window()
    rows = scenario.flow_rows(base)[0]
    landing = PostgresLanding(clean_pg)
    try:
        landing.write(scenario.batch(rows))
        landing.heartbeat("test-instance", base + scenario.WINDOW, len(rows))
    finally:
        landing.close()
    resources = build_resources(pipeline_config(flowlens_config), use_env=False)
    job = defs.resolve_job_def(window_job.name)
    key = window_key(base)
    after = {"next_window": (base + scenario.WINDOW).isoformat()}  # the window was requested already
    with dg.instance_for_test() as instance:
        with landing_table_missing(clean_pg):
            failed = job.execute_in_process(partition_key=key, instance=instance, resources=resources,
                                            raise_on_error=False)  # fmt: skip
        assert not failed.success
        retried = [e for e in failed.all_events if e.event_type == dg.DagsterEventType.STEP_UP_FOR_RETRY]
        assert len(retried) == load_config().pipeline.window_retries  # retried in the run, with backoff

        result = tick(instance, resources, after)
        [request] = result.run_requests  # the failed window, before anything new
        assert request.partition_key == key
        assert (request.tags[RETRY_OF_TAG], request.tags[ATTEMPT_TAG]) == (failed.run_id, "2")
        assert request.run_key == f"retry-{failed.run_id}"
        assert json.loads(result.cursor)["next_window"] == after["next_window"]

        rerun = job.execute_in_process(partition_key=key, tags=request.tags, instance=instance, resources=resources)
        assert rerun.success
        with psycopg.connect(clean_pg) as conn:
            flows = conn.execute("SELECT sum(flows) FROM flowlens.flow_stats WHERE window_start = %s", (base,))
            assert flows.fetchone()[0] == len(rows)
        again = tick(instance, resources, after)  # requested once per failed run: nothing more
        requests = again.run_requests if isinstance(again, dg.SensorResult) else []
        assert all(RETRY_OF_TAG not in r.tags for r in requests)
