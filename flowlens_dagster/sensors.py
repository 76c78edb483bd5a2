"""The watermark sensor: decides which 5-minute windows are complete and requests their runs.

A window [W, W+5m) is complete when every *live* ingest instance has landed everything received
before W+5m (its watermark) and the grace period has passed since W+5m, so batches still in
flight are in. An instance whose last heartbeat is older than ``pipeline.instance_timeout_seconds``
is not live: a crashed or stopped collector never holds the pipeline back. With no live
instance at all, nothing more can arrive: every window that landed (and is past grace) is complete.

Each tick (``plan_tick``, pure and unit-tested) then:

- reports every newly complete window as a materialization of ``flows_landed`` (rows, bytes and
  source position when the landing can summarize a window cheaply);
- requests the complete windows, oldest first, at most ``pipeline.max_runs_per_tick`` of them,
  as ONE run: a single window with run key ``window-<partition>``, several (catching up) as a
  partition-range run (every window asset has ``BackfillPolicy.single_run``) with run key
  ``windows-<first>...<last>``, so a window is never requested twice. Automatic catch-up reaches
  back at most ``pipeline.sensor_lookback_minutes``; older windows need a backfill;
- requests a window run that failed again before any new window (see :mod:`flowlens_dagster.lag`);
- requests nothing while a window run is queued or running: windows are processed in order (topology
  changes compare a window with the ones before it), and the next tick takes every window that
  completed meanwhile as one range run, so a slow run makes the next run bigger, not the queue longer;
- measures lag (the scaling model §8.2) in seconds: newest landed receive time minus the end of the newest
  processed window (``window_loads`` of ``flow_stats``). Above ``alert_at_lag_seconds`` it alerts
  (log and Redis ``changes:alerts``). Above ``pause_at_lag_seconds`` it *pauses one-window
  processing* and catches up until lag is below ``max_acceptable_lag_seconds``: each run takes up
  to ``pipeline.catch_up_windows_per_run`` windows as one single-run backfill, tagged
  ``flowlens/catch_up`` so it defers the non-blocking work (reverse DNS, ``flows.enriched``; see
  :mod:`assets.catch_up`). Lag, catch-up and completeness are in the tick's log; the same
  lag, per ``flows.raw`` partition, is served by ``flowlens metrics`` (``flowlens_dagster/monitoring``).

The cursor is JSON: ``{"next_window": ISO time, "held": bool, "alert": bool, "given_up": [run ids]}``.
"""

import json
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import dagster as dg

from assets.catch_up import CATCH_UP_TAG
from assets.partitions import START
from assets.resources import LandingResource, PostgresResource
from flowlens_dagster.lag import RETRY_OF_TAG, given_up_event, lag_events, retry_requests
from ingest.config import FlowLensConfig, load_config
from ingest.land.base import Landing, SummarizesWindows, Watermark
from ingest.scaling.alerts import publish_alert
from ingest.scaling.redis_use import pipeline_uses_redis
from ingest.services import ServiceUnavailable, require
from ingest.window import WINDOW, window_key, window_start

SENSOR_NAME = "watermark_sensor"
# the run tags `dagster asset materialize --partition-range A...B` sets (Dagster's system tags)
RANGE_START_TAG, RANGE_END_TAG = "dagster/asset_partition_range_start", "dagster/asset_partition_range_end"


@dataclass
class TickPlan:
    """What one sensor tick decided."""

    windows: list[datetime]  # windows to request now
    complete_through: datetime | None  # every window ending at or before this is complete
    next_window: datetime  # cursor: the first window not yet requested
    lag_seconds: float | None
    held: bool
    alert: bool
    live_instances: list[str] = field(default_factory=list)
    silent_instances: list[str] = field(default_factory=list)

    def summary(self) -> str:
        lag = "n/a" if self.lag_seconds is None else f"{self.lag_seconds:.0f}s"
        state = (
            "CATCH-UP (lag above pause threshold: large runs, DNS and flows.enriched deferred)"
            if self.held
            else "running"
        )
        return (
            f"complete through {self.complete_through.isoformat() if self.complete_through else 'nothing'}; "
            f"requesting {len(self.windows)} window(s) {[window_key(w) for w in self.windows[:3]]}"
            f"{'...' if len(self.windows) > 3 else ''}; next {window_key(self.next_window)}; lag {lag}"
            f"{' ALERT' if self.alert else ''}; {state}; live {self.live_instances}; silent {self.silent_instances}"
        )


def complete_through(
    watermarks: list[Watermark], now: datetime, grace: timedelta, timeout: timedelta
) -> tuple[datetime | None, list[str], list[str]]:
    """The time before which every window is complete, plus the live and silent instance names."""
    live = [w for w in watermarks if now - w.heartbeat_at <= timeout]
    silent = [w for w in watermarks if now - w.heartbeat_at > timeout]
    if live:
        through = min(w.landed_through for w in live)
    elif silent:
        through = now  # nobody is landing any more: everything that landed is final
    else:
        return None, [], []
    # late batches: a window closes only once the grace period has passed on the wall clock too
    through = min(through, now - grace)
    return through, sorted(w.instance for w in live), sorted(w.instance for w in silent)


def plan_tick(
    cfg: FlowLensConfig,
    watermarks: list[Watermark],
    now: datetime,
    cursor: dict,
    newest_landed: datetime | None,
    newest_processed_end: datetime | None,
    in_flight: int,
    first_partition: datetime,
) -> TickPlan:
    """Decide this tick's run requests and lag state from watermarks and the previous cursor."""
    pipe, bp = cfg.pipeline, cfg.backpressure.kafka
    through, live, silent = complete_through(
        watermarks, now, timedelta(seconds=pipe.grace_seconds), timedelta(seconds=pipe.instance_timeout_seconds)
    )
    # Automatic catch-up reaches back at most sensor_lookback_minutes; older windows are left to an
    # explicit backfill (`dagster asset materialize --partition-range`), so a long outage cannot queue
    # days of runs and a first tick does not start at the beginning of time.
    floor = window_start((through or now) - timedelta(minutes=pipe.sensor_lookback_minutes))
    next_window = datetime.fromisoformat(cursor["next_window"]) if cursor.get("next_window") else floor
    next_window = max(next_window, floor, first_partition)

    lag = None
    if newest_landed is not None:
        processed = newest_processed_end or next_window
        lag = max(0.0, (newest_landed - processed).total_seconds())
    held = bool(cursor.get("held"))
    if lag is not None:
        if lag > bp.pause_at_lag_seconds:
            held = True
        elif lag < bp.max_acceptable_lag_seconds:
            held = False
    alert = lag is not None and lag > bp.alert_at_lag_seconds

    windows: list[datetime] = []
    # One window run at a time, held or not: windows must be processed in order, and whatever
    # completes while a run is in flight goes into the next (range) run. Held (catching up), a run
    # takes many more windows: one run's fixed cost is paid once for all of them.
    cap = pipe.catch_up_windows_per_run if held else pipe.max_runs_per_tick
    if through is not None and in_flight == 0:
        current = next_window
        while current + WINDOW <= through and len(windows) < cap:
            windows.append(current)
            current += WINDOW
        next_window = current
    return TickPlan(windows, through, next_window, lag, held, alert, live, silent)


NEWEST_PROCESSED = "SELECT max(window_start) FROM flowlens.window_loads WHERE asset = 'flow_stats'"


def landed_event(landing: Landing, window: datetime) -> dg.AssetMaterialization:
    """The ``flows_landed`` materialization reporting one complete window (totals when the landing can summarize)."""
    meta: dict[str, object] = {"window_start": window.isoformat(), "window_end": (window + WINDOW).isoformat()}
    if isinstance(landing, SummarizesWindows):
        summary = landing.summarize_window(window, window + WINDOW)
        meta.update(
            {
                "dagster/row_count": dg.MetadataValue.int(summary.rows),
                "bytes": dg.MetadataValue.int(summary.bytes),
                "packets": dg.MetadataValue.int(summary.packets),
                "receive_time_range": f"{summary.first} .. {summary.last}",
            }
        )
    return dg.AssetMaterialization(asset_key="flows_landed", partition=window_key(window), metadata=meta)


IN_FLIGHT = [
    dg.DagsterRunStatus.QUEUED,
    dg.DagsterRunStatus.NOT_STARTED,
    dg.DagsterRunStatus.STARTING,
    dg.DagsterRunStatus.STARTED,
]


def _in_flight(context: dg.SensorEvaluationContext, job_name: str) -> int:
    return context.instance.get_runs_count(dg.RunsFilter(job_name=job_name, statuses=IN_FLIGHT))


def build_sensor(job) -> dg.SensorDefinition:
    """The watermark sensor targeting ``job`` (the 5-minute window job)."""
    cfg = load_config()

    @dg.sensor(
        name=SENSOR_NAME,
        job=job,
        minimum_interval_seconds=cfg.pipeline.sensor_interval_seconds,
        default_status=dg.DefaultSensorStatus.RUNNING,
        description=__doc__,
    )
    def watermark_sensor(
        context: dg.SensorEvaluationContext, landing: LandingResource, postgres: PostgresResource
    ) -> dg.SensorResult | dg.SkipReason:
        cfg = landing.flowlens_config()
        try:  # a stopped stack is one line per tick in the UI, not a traceback
            require(cfg, ["postgres", "kafka"] if cfg.uses_kafka else ["postgres"], "watermark sensor")
        except ServiceUnavailable as exc:
            return dg.SkipReason(str(exc))
        cursor = json.loads(context.cursor) if context.cursor else {}
        opened = landing.open()
        try:
            now = datetime.now(UTC)
            in_flight = _in_flight(context, job.name)
            retries, given_up = retry_requests(context.instance, job.name, cfg, now)
            with postgres.connect() as conn:
                newest_processed = conn.execute(NEWEST_PROCESSED).fetchone()[0]
            plan = plan_tick(
                cfg,
                opened.watermarks(),
                now,
                cursor,
                opened.newest_receive_time(),
                newest_processed + WINDOW if newest_processed else None,
                in_flight=in_flight or len(retries),  # a failed window goes first
                first_partition=START,
            )
            events = [landed_event(opened, w) for w in plan.windows]
        finally:
            opened.close()
        (context.log.warning if plan.alert or plan.held else context.log.info)(plan.summary())
        state = _tell(context, cfg, postgres, cursor, plan, given_up)
        new_cursor = json.dumps({"next_window": plan.next_window.isoformat(), **state})
        if retries and not in_flight:
            context.log.warning(f"window run {retries[0].tags[RETRY_OF_TAG]} failed: requesting its windows again")
            return dg.SensorResult(run_requests=retries[:1], cursor=new_cursor)
        if not plan.windows:
            context.update_cursor(new_cursor)
            return dg.SkipReason(plan.summary())
        request = window_run_request(plan.windows, catch_up=plan.held)
        return dg.SensorResult(run_requests=[request], cursor=new_cursor, asset_events=events)

    return watermark_sensor


def window_run_request(windows: list[datetime], catch_up: bool = False) -> dg.RunRequest:
    """One run over consecutive ``windows``: a plain partition run for one, a range run for several;
    ``catch_up`` tags it so it defers non-blocking work (:mod:`assets.catch_up`)."""
    first, last = window_key(windows[0]), window_key(windows[-1])
    tags = {CATCH_UP_TAG: "true"} if catch_up else {}
    if len(windows) == 1:
        return dg.RunRequest(partition_key=first, run_key=f"window-{first}", tags=tags)
    # every window asset (single_run backfill policy) sees the whole range in context.partition_time_window
    return dg.RunRequest(
        run_key=f"windows-{first}...{last}",
        tags={RANGE_START_TAG: first, RANGE_END_TAG: last, **tags},
    )


def _tell(
    context, cfg: FlowLensConfig, postgres: PostgresResource, cursor: dict, plan: TickPlan, given_up: list
) -> dict:
    """Log and publish (Redis ``changes:alerts``, in auto mode only while the query API uses Redis:
    ``ingest.scaling.redis_use``) this tick's lag transitions and newly given-up windows; return the
    cursor state that makes each one told once."""
    told = list(cursor.get("given_up", []))
    events = lag_events(cursor, plan.lag_seconds, plan.alert, plan.held, cfg)
    events += [given_up_event(run) for run in given_up if run.run_id not in told]
    on_redis = False
    if events:
        with postgres.connect() as conn:
            on_redis = pipeline_uses_redis(cfg, conn)
    for event in events:
        context.log.warning(f"alert: {json.dumps(event)}")
        if on_redis:
            publish_alert(cfg, event)
    told += [e["run_id"] for e in events if e["kind"] == "window_failed"]
    return {"held": plan.held, "alert": plan.alert, "given_up": told[-50:]}
