"""What the watermark sensor does about lag and failed runs, beyond choosing windows.

- **Alerts** (:func:`lag_events`): the tick's lag state compared with the previous tick's gives
  the transitions worth telling: lag rose above ``alert_at_lag_seconds`` (``lag_alert``), the
  pipeline entered catch-up above ``pause_at_lag_seconds`` (``catch_up_started``) or left it
  below ``max_acceptable_lag_seconds`` (``catch_up_ended``). Each is logged and published on the
  Redis channel ``changes:alerts`` once, not on every tick.
- **Failed windows** (:func:`retry_requests`): a window run that failed (after the run's own step
  retries, ``pipeline.window_retries``) is requested again, once per failed run (run key
  ``retry-<failed run id>``, tags ``flowlens/retry_of`` and ``flowlens/attempt``), before any new
  window, up to ``pipeline.window_max_attempts`` runs; then it is given up with a
  ``window_failed`` alert (the ``no_window_gap`` check keeps pointing at it). Never silently.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import dagster as dg

from assets.catch_up import CATCH_UP_TAG
from ingest.config import FlowLensConfig

RETRY_OF_TAG, ATTEMPT_TAG = "flowlens/retry_of", "flowlens/attempt"
PARTITION_TAG = "dagster/partition"
RANGE_TAGS = ("dagster/asset_partition_range_start", "dagster/asset_partition_range_end")
RECENT_FAILED_RUNS = 25


def lag_events(cursor: dict, lag: float | None, alert: bool, held: bool, cfg: FlowLensConfig) -> list[dict]:
    """Alerts for the transitions between the previous tick (``cursor``) and this one."""
    bp = cfg.backpressure.kafka
    base = {"lag_seconds": None if lag is None else round(lag, 1), "at": datetime.now(UTC).isoformat()}
    events = []
    if alert and not cursor.get("alert"):
        events.append({"kind": "lag_alert", "threshold_seconds": bp.alert_at_lag_seconds, **base})
    if held and not cursor.get("held"):
        events.append({"kind": "catch_up_started", "threshold_seconds": bp.pause_at_lag_seconds, **base})
    if not held and cursor.get("held"):
        events.append({"kind": "catch_up_ended", "threshold_seconds": bp.max_acceptable_lag_seconds, **base})
    return events


def retry_requests(
    instance: dg.DagsterInstance, job_name: str, cfg: FlowLensConfig, now: datetime
) -> tuple[list[dg.RunRequest], list[dg.DagsterRun]]:
    """Run requests for failed window runs not yet requested again, oldest first, and the runs given up."""
    since = now - timedelta(minutes=cfg.pipeline.sensor_lookback_minutes)
    failed = instance.get_runs(
        dg.RunsFilter(job_name=job_name, statuses=[dg.DagsterRunStatus.FAILURE], created_after=since),
        limit=RECENT_FAILED_RUNS,
    )
    requests, given_up = [], []
    for run in sorted(failed, key=lambda r: r.tags.get(PARTITION_TAG) or r.tags.get(RANGE_TAGS[0]) or ""):
        if instance.get_runs_count(dg.RunsFilter(tags={RETRY_OF_TAG: run.run_id})):
            continue  # already requested again
        attempt = int(run.tags.get(ATTEMPT_TAG, "1"))
        if attempt >= cfg.pipeline.window_max_attempts:
            given_up.append(run)
            continue
        tags = {k: run.tags[k] for k in (*RANGE_TAGS, CATCH_UP_TAG) if k in run.tags}
        tags.update({RETRY_OF_TAG: run.run_id, ATTEMPT_TAG: str(attempt + 1)})
        requests.append(
            dg.RunRequest(run_key=f"retry-{run.run_id}", partition_key=run.tags.get(PARTITION_TAG), tags=tags)
        )
    return requests, given_up


def given_up_event(run: dg.DagsterRun) -> dict:
    windows = run.tags.get(PARTITION_TAG) or "...".join(run.tags.get(t, "?") for t in RANGE_TAGS)
    return {
        "kind": "window_failed",
        "windows": windows,
        "run_id": run.run_id,
        "attempts": int(run.tags.get(ATTEMPT_TAG, "1")),
        "at": datetime.now(UTC).isoformat(),
        "action": f"fix the cause, then backfill {windows} (README: Pipeline, backfill)",
    }
