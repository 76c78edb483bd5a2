"""``flowlens bench burst``: the scaling model's §6.2 burst (absorb, process, drain), scaled to this machine.

The real pieces, in auto mode: ``flowlens ingest --mode auto`` (one receiving process), the
generator (``flowlens generate``) sending a steady rate for ``--before-windows`` whole windows and
into the next, a burst of several times that rate ending with that window, then the steady rate
again; the watermark
sensor evaluated every ``--tick-seconds`` and every run it requests executed in process (the window
job with its checks), on a throwaway database, Kafka topic and lake. Time is compressed: the
generator's export clock runs ``--speed`` times faster than the wall clock
(``ingest.timestamp_source: export``), so a 5-minute window passes in 300/speed seconds; lag and
drain are reported on that window clock, which is the clock the scaling model's thresholds are
written in.

Figures: ``absorbed_flows`` (flows landed during the burst), ``lost_flows`` (sent minus landed;
backpressure sampling counts as lost), ``sampled_flows``, ``max_lag_seconds``, ``drain_seconds``,
``mode_switches``. Lag is the sensor's (newest landed receive time minus the end of the newest
processed window, read after each tick's runs, so a run's end is seen as it ends, not a tick later).
``drain_seconds`` is on the window clock: from the burst's end until the window holding the
burst's end has been processed *and* lag is at or below ``max_acceptable_lag_seconds`` (lag read
before that window closes says nothing about the burst: between windows it is low by
construction). It is timed on the monotonic clock (from the burst's generator returning to the
tick that finds it drained) and multiplied by ``--speed``: the landing's newest receive time moves
in batches and stands still while the next generator process starts, though the run goes on. The
steady traffic after the burst goes on until then.

Baseline: the planner's windowed drain (:mod:`ingest.scaling.drain`) for the same shape and the same
loop: window closes, the tick interval, catch-up batching, a run's fixed cost and the pipeline's
throughput. The drain is a few window runs, so it moves with the speed of those runs, and a
shared machine's speed moves by a factor of two within minutes. The prediction is therefore
calibrated by this run, in its own steady phase, before the burst: a window of as many synthetic
flows as the burst's window holds (:func:`calibration_flows`; ``bench pipeline``'s kind, with the
connections the generator's estate has) and an empty window are run then, under the load the
burst's windows meet (the daemon receiving the steady rate; the burst's windows can only be
processed after the burst), and timed: the empty window is a run's fixed cost, the other one's
variable part over what this machine's ``bench pipeline`` file predicts for it (the scaling
model's figure without one) is the ``slowdown`` the file's speeds are divided by. What the
calibration must not time is paid before the traffic: the imports (an empty window), the
estate's one-time costs (half the synthetic window, same connections: every asset and dependency
is new, as the generator's are in its first window, which is why there are at least two steady
windows) and planner statistics (``ANALYZE``, as autovacuum keeps them in a database in service).
The window's close waits, besides the batch linger and half a heartbeat, for the generator process
after the burst to start sending (timed before the traffic). ``ratio.drain_seconds`` = measured /
predicted.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import json
import math
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np

from flowlens_dagster.bench.ingest import free_udp_port
from flowlens_dagster.bench.report import report
from ingest.config import ConfigError, FlowLensConfig, load_config
from ingest.services import ServiceUnavailable, require
from ingest.window import WINDOW as WINDOW_DELTA
from ingest.window import window_key, window_start

ROOT = Path(__file__).resolve().parents[2]
FLOWLENS = str(Path(sys.executable).parent / "flowlens")


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="flowlens bench burst", description=__doc__.split("\n\n")[0])
    p.add_argument("--json", action="store_true")
    p.add_argument("--steady", type=int, default=2_000, help="steady rate, flows per wall-clock second")
    p.add_argument("--burst", type=int, default=40_000, help="burst rate, flows per wall-clock second")
    p.add_argument("--before-windows", type=int, default=2,
                   help="steady windows before the burst's window (the burst ends at that window's end)")  # fmt: skip
    p.add_argument("--burst-seconds", type=float, default=10, help="burst duration (wall clock)")
    p.add_argument("--after-seconds", type=float, default=30,
                   help="steady traffic after the burst, at least (wall clock; it goes on until drained)")  # fmt: skip
    # 5: a window run's fixed cost (10-25 s on the loaded 2-core machine) stays well below
    # max_acceptable_lag_seconds on the window clock, so the drain is the burst window's processing and
    # not mostly whether one more run fits (at 10 one steady run alone was ~250 of the 300 s bound)
    p.add_argument("--speed", type=float, default=5, help="window-clock seconds per wall-clock second")
    p.add_argument("--tick-seconds", type=float, default=1, help="sensor evaluation interval (wall clock)")
    p.add_argument("--max-drain-seconds", type=float, default=300, help="give up waiting for the drain (wall clock)")
    return p.parse_args(argv)


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    if args.before_windows < 2:
        # the first generator window pays the estate's one-time costs (every asset and dependency new)
        print("flowlens bench burst: --before-windows must be at least 2", file=sys.stderr)
        return 2
    log = (lambda m: print(m, file=sys.stderr, flush=True)) if args.json else (lambda m: print(m, flush=True))
    try:
        base = load_config()
        require(base, ["postgres", "kafka"], "flowlens bench burst")
    except ServiceUnavailable as exc:  # already names the command
        print(exc, file=sys.stderr)
        return 2
    except ConfigError as exc:
        print(f"flowlens bench burst: {exc}", file=sys.stderr)
        return 2
    work = Path(tempfile.mkdtemp(prefix="flowlens-bench-burst-"))
    cfg = _bench_config(base, work)
    try:
        _prepare(base, cfg)
        figures, extra = Run(base, cfg, args, work, log).measure()
    except Exception as exc:  # a service failed mid-run: say which, clean up, no traceback
        print(f"flowlens bench burst: failed: {exc}", file=sys.stderr)
        _cleanup(base, cfg, work, log)
        return 1
    _cleanup(base, cfg, work, log)
    predicted = extra.pop("prediction")
    config = {
        "steady_flows_per_s": args.steady, "burst_flows_per_s": args.burst, "burst_seconds_wall": args.burst_seconds,
        "speed": args.speed, "clock": "lag and drain on the window clock (export time, speed x wall clock)",
        "baseline": "the planner's windowed drain for the same shape (ingest.scaling.drain), a run's fixed cost "
                    "and the machine's speed measured in this run's steady phase, before the burst (config.prediction)",
        "prediction": predicted, "run_overhead_seconds": predicted["run_overhead_seconds"],
        "thresholds": {k: v for k, v in cfg.thresholds.kafka.model_dump().items()}, **extra,
    }  # fmt: skip
    report("burst", figures, {"drain_seconds": predicted["drain_seconds"]}, config, args.json)
    return 0


def _bench_config(base: FlowLensConfig, work: Path) -> FlowLensConfig:
    name = f"flowlens_burst_bench_{os.getpid()}"
    thresholds = base.thresholds.kafka.model_copy(
        update={"rate_window_seconds": 5, "min_dwell_seconds": 10, "burst_duration_trigger_seconds": 5}
    )
    return base.model_copy(
        update={
            "mode": "auto",
            "state_dir": work / "state",
            "postgres": base.postgres.model_copy(update={"database": name}),
            "kafka": base.kafka.model_copy(update={"raw_topic": f"flows.raw.burst-{uuid.uuid4().hex[:8]}"}),
            "thresholds": base.thresholds.model_copy(update={"kafka": thresholds}),
            "dns": base.dns.model_copy(update={"enabled": False}),
            # a heartbeat every second: a window is seen complete soon after it ends (x speed on the window clock)
            "ingest": base.ingest.model_copy(
                update={"timestamp_source": "export", "processes": 1, "heartbeat_seconds": 1.0}
            ),
            "pipeline": base.pipeline.model_copy(
                # the daemon idles while the calibration windows run: it must stay live (its watermark
                # holds the windows back), else the sensor takes every window up to the wall clock
                update={"lake_dir": work / "lake", "grace_seconds": 0, "instance_timeout_seconds": 300}
            ),
        }
    )


def _env(cfg: FlowLensConfig) -> dict[str, str]:
    """FLOWLENS_* variables carrying the bench config to the daemon, the generator and the resources."""
    k = cfg.thresholds.kafka
    values = {
        "MODE": cfg.mode, "STATE_DIR": str(cfg.state_dir), "POSTGRES__DATABASE": cfg.postgres.database,
        "KAFKA__RAW_TOPIC": cfg.kafka.raw_topic, "INGEST__TIMESTAMP_SOURCE": "export",
        "PIPELINE__LAKE_DIR": str(cfg.lake_dir), "PIPELINE__GRACE_SECONDS": "0",
        "PIPELINE__INSTANCE_TIMEOUT_SECONDS": str(cfg.pipeline.instance_timeout_seconds), "DNS__ENABLED": "false",
        "THRESHOLDS__KAFKA__RATE_WINDOW_SECONDS": str(k.rate_window_seconds),
        "THRESHOLDS__KAFKA__MIN_DWELL_SECONDS": str(k.min_dwell_seconds),
        "THRESHOLDS__KAFKA__BURST_DURATION_TRIGGER_SECONDS": str(k.burst_duration_trigger_seconds),
        "INGEST__HEARTBEAT_SECONDS": str(cfg.ingest.heartbeat_seconds),
    }  # fmt: skip
    return {f"FLOWLENS_{key}": value for key, value in values.items()}


def _prepare(base: FlowLensConfig, cfg: FlowLensConfig) -> None:
    from confluent_kafka.admin import NewTopic

    from flowlens_dagster.migrate import migrate
    from flowlens_dagster.stack import kafka as kafka_stack
    from flowlens_dagster.stack import postgres as pg_stack

    pg_stack.ensure_database(base, cfg.postgres.database)
    migrate(cfg, log=lambda _m: None)
    topic = cfg.kafka.raw_topic
    admin = kafka_stack.admin(base)  # kept referenced until the result is in
    admin.create_topics([NewTopic(topic, cfg.kafka.raw_partitions, 1)])[topic].result(30)


def _cleanup(base: FlowLensConfig, cfg: FlowLensConfig, work: Path, log) -> None:
    from flowlens_dagster.stack import kafka as kafka_stack
    from flowlens_dagster.stack import postgres as pg_stack

    try:
        pg_stack.drop_database(base, cfg.postgres.database)
        topics = [cfg.kafka.raw_topic, f"{cfg.kafka.raw_topic}.watermarks", f"{cfg.kafka.raw_topic}.landed"]
        admin = kafka_stack.admin(base)
        for future in admin.delete_topics(topics, operation_timeout=30).values():
            with contextlib.suppress(Exception):  # the watermark topic may not exist
                future.result(timeout=30)
    except Exception as exc:
        log(f"cleanup incomplete ({exc}); drop {cfg.postgres.database} and topic {cfg.kafka.raw_topic} by hand")
    finally:
        shutil.rmtree(work, ignore_errors=True)


def before_seconds(args: argparse.Namespace) -> float:
    """The steady traffic before the burst, wall clock: ``--before-windows`` whole windows, then the burst's
    window until the burst, which ends with it (the drain starts at a window's end: no wait for a window
    to close is part of it, so it is the burst window's processing, not where the burst fell)."""
    window = WINDOW_DELTA.total_seconds()
    burst = args.burst_seconds * args.speed
    return (math.ceil((args.before_windows * window + burst) / window) * window - burst) / args.speed


def _prediction(base: FlowLensConfig, cfg: FlowLensConfig, args: argparse.Namespace, costs: dict) -> dict:
    """The planner's windowed drain for the bench's shape, on the window clock (wall figures x speed)."""
    from ingest.scaling.drain import Shape, pipeline_from, predict_drain, speeds_from
    from ingest.scaling.figures import bench_dir, load_results
    from ingest.scaling.plan import machine_figures

    speed = args.speed
    results = load_results(bench_dir(base.state_dir))
    speeds = speeds_from(results)
    if speeds is None:  # no stage timings: the whole window's rate, connections folded in
        figure = machine_figures(results)["pipeline_flows_per_s_per_worker"]
        speeds = (figure.value, math.inf, figure.source)
    flows_per_s, rows_per_s, source = speeds
    # the bench file's speeds are a quiet machine's: scale them by how this run's calibration window went
    quiet = costs["calibration_flows"] / flows_per_s + generator_connections(costs["calibration_flows"]) / rows_per_s
    measured = costs["calibration_run_seconds"] - costs["run_overhead_seconds"]
    slowdown = max(MIN_SLOWDOWN, measured / quiet)
    flows_per_s, rows_per_s = flows_per_s / slowdown, rows_per_s / slowdown
    shape = Shape(
        ((args.steady / speed, before_seconds(args) * speed), (args.burst / speed, args.burst_seconds * speed),
         (args.steady / speed, args.after_seconds * speed)),
        burst=1,
        rows=generator_connections,
    )  # fmt: skip
    ing = cfg.ingest
    pipeline = pipeline_from(
        cfg,
        flows_per_s=flows_per_s / speed,
        rows_per_s=rows_per_s / speed,
        run_overhead_s=costs["run_overhead_seconds"] * speed,
        tick_s=(args.tick_seconds + costs["tick_seconds"]) * speed,
        # the generator's restart after the burst is a wait for the window to close, as the batch linger is
        close_delay_s=cfg.pipeline.grace_seconds
        + (ing.batch_max_seconds + ing.heartbeat_seconds / 2 + costs["generator_start_seconds"]) * speed,
    )
    prediction = predict_drain(shape, pipeline)
    return {
        "drain_seconds": prediction.as_dict()["drain_seconds"],
        "model": prediction.as_dict(),
        "pipeline_flows_per_s": round(flows_per_s),
        "pipeline_rows_per_s": round(rows_per_s) if math.isfinite(rows_per_s) else None,
        "pipeline_source": source,
        "slowdown": round(slowdown, 2),
        "slowdown_note": "calibration window's variable seconds / the bench file's speeds for it",
        **costs,
    }


MIN_SLOWDOWN = 0.25  # a calibration window that ran faster than its fixed cost says nothing about speed


@functools.lru_cache(maxsize=64)
def _connections(flows: int) -> int:
    from ingest.tools.generate import Enterprise

    drawn = Enterprise().flows(flows, np.random.default_rng(3), np.zeros(flows, np.int64))
    src, dst = (drawn[k][:, 12:].copy().view(">u4")[:, 0].astype(np.uint64) for k in ("src_addr", "dst_addr"))
    service = drawn["dst_port"].astype(np.uint64) << np.uint64(8) | drawn["protocol"].astype(np.uint64)
    # the estate's addresses fit in 32 bits and (port, protocol) in 24: one 64-bit key per pair of ends
    pairs = np.unique(np.column_stack([src << np.uint64(32) | dst, service]), axis=0)
    return len(pairs)


def generator_connections(flows: float) -> float:
    """Distinct connections (flow_stats rows) in a window of ``flows`` of the generator's estate (drawn)."""
    return float(_connections(int(round(flows, -3)) or 1)) if flows >= 1 else 0.0


def calibration_flows(args: argparse.Namespace) -> int:
    """As many synthetic flows as the burst's window holds (rounded to 10k): the window timed in the steady
    phase is then as large as the one the drain waits for, so its time is not extrapolated from a fixed
    cost and a slope measured apart (a shared machine's load moves each of them by itself)."""
    window = WINDOW_DELTA.total_seconds() / args.speed
    burst = min(args.burst_seconds, window)
    return max(10_000, int(round(args.burst * burst + args.steady * (window - burst), -4)))


def calibration_windows(start: datetime) -> list[datetime]:
    """The four windows before ``start`` the calibration runs use (contiguous, so the window checks see
    no gap): empty (imports), synthetic (one-time costs), synthetic again (timed), empty (timed)."""
    return [start - n * WINDOW_DELTA for n in (4, 3, 2, 1)]


class Run:
    """One bench run: daemon, generator phases in a thread, sensor ticks and runs in this thread."""

    AFTER_CHUNK_SECONDS = 10.0  # the steady traffic after the burst goes on in chunks until drained

    def __init__(self, base: FlowLensConfig, cfg: FlowLensConfig, args: argparse.Namespace, work: Path, log):
        self.base, self.cfg, self.args, self.work, self.log = base, cfg, args, work, log
        self.env = {**{k: v for k, v in os.environ.items() if not k.startswith("FLOWLENS_")}, **_env(cfg)}
        for key in ("HOST", "PORT", "USER", "PASSWORD"):
            value = getattr(cfg.postgres, key.lower())
            self.env[f"FLOWLENS_POSTGRES__{key}"] = str(value)
        self.env["FLOWLENS_KAFKA__BOOTSTRAP_SERVERS"] = cfg.kafka.bootstrap_servers
        self.env["FLOWLENS_REDIS__PORT"] = str(cfg.redis.port)
        self.sent = 0
        self.burst_sent = 0
        self.burst_started = threading.Event()
        self.burst_done = threading.Event()
        self.burst_end_at = 0.0  # monotonic: the burst's generator returned (its export clock at the burst's end)
        self.drained = threading.Event()
        self.start: datetime | None = None
        self.runs: list[dict] = []
        self.stats_path = work / "ingest-stats.json"

    @property
    def burst_end(self) -> datetime:
        """The burst's end on the window clock (the generator's export clock is exact)."""
        return self.start + timedelta(seconds=(before_seconds(self.args) + self.args.burst_seconds) * self.args.speed)

    def measure(self) -> tuple[dict, dict]:
        import dagster as dg

        from assets.resources import build_resources

        port = free_udp_port()
        stats_file = self.stats_path
        daemon = subprocess.Popen(
            [FLOWLENS, "ingest", "--listen", f"127.0.0.1:{port}", "--processes", "1", "--metrics-port", "0",
             "--instance-id", "burst", "--mode", "auto", "--stats-file", str(stats_file)],
            env=self.env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
        )  # fmt: skip
        saved = {k: v for k, v in os.environ.items() if k.startswith("FLOWLENS_")}
        os.environ.update(self.env)  # the Dagster resources read the bench config
        try:
            # well inside the sensor's lookback (it never requests windows older than that): the
            # calibration takes a minute or more before the first tick, and no window may fall out
            reach = timedelta(minutes=self.cfg.pipeline.sensor_lookback_minutes) - timedelta(minutes=60)
            start = datetime.now(UTC) - max(reach, timedelta(minutes=20))
            self.start = start = start.replace(minute=start.minute - start.minute % 5, second=0, microsecond=0)
            resources = build_resources(self.cfg, use_env=False)
            with dg.instance_for_test() as instance:
                costs = self._calibrate_before(instance, resources, start)
                sender = threading.Thread(target=self._send, args=(port, start), daemon=True)
                sender.start()
                costs |= self._calibrate_steady(instance, resources, start)
                prediction = _prediction(self.base, self.cfg, self.args, costs)  # before the burst
                lags = self._tick_until_drained(instance, resources, start)
                self.drained.set()
                sender.join()
        finally:
            os.killpg(daemon.pid, signal.SIGTERM)
            daemon.wait(timeout=120)
            for key in [k for k in os.environ if k.startswith("FLOWLENS_")]:
                del os.environ[key]
            os.environ.update(saved)
        final = json.loads(stats_file.read_text())
        figures, extra = self._figures(final, lags)
        return figures, {**extra, "prediction": prediction}

    def _calibrate_before(self, instance, resources, start: datetime) -> dict:
        """Before the traffic: an empty window (it pays the imports), a window of half the calibration's
        synthetic flows (it pays their estate's one-time costs: every asset and dependency is new, as the
        generator's are in its first window), sensor ticks on the idle landing; the window timed in the
        steady phase is landed now, so its writing is no load then."""
        windows = calibration_windows(start)
        self._run(instance, resources, {"partition_key": window_key(windows[0]), "tags": {}})
        flows = calibration_flows(self.args)
        self._land_calibration(windows[1], flows // 2)  # every connection of the estate, at half the cost
        self._land_calibration(windows[2], flows)
        self._run(instance, resources, {"partition_key": window_key(windows[1]), "tags": {}})
        self._analyze()
        began = time.monotonic()
        ticks = 2
        for _ in range(ticks):
            self._tick(instance, resources, json.dumps({"next_window": start.isoformat()}), run=False)
            _lag(self.cfg, start)
        return {"tick_seconds": round((time.monotonic() - began) / ticks, 2), "generator_start_seconds": self._start()}

    def _start(self) -> float:
        """How long a generator process takes to start sending, measured now: after the burst the next one
        starts, and until it sends, the burst's window is not seen complete (nothing else moves the window
        clock). A few flows to a port nothing listens on."""
        began = time.monotonic()
        subprocess.run(
            [FLOWLENS, "generate", "--target", f"127.0.0.1:{free_udp_port()}", "--flows", "100", "--rate", "0",
             "--versions", "9", "--seed", "3"],
            env=self.env, cwd=ROOT, capture_output=True, timeout=120, check=False,
        )  # fmt: skip
        return round(time.monotonic() - began, 2)

    def _analyze(self) -> None:
        """Planner statistics for the throwaway database, as autovacuum keeps them in a database in service:
        without them PostgreSQL plans the window checks' joins for empty tables (a nested loop over tens of
        thousands of rows), and when autovacuum happens to catch up moves a run's time by a minute."""
        import psycopg

        with psycopg.connect(self.cfg.postgres.dsn(), autocommit=True) as conn:
            conn.execute("ANALYZE")

    def _calibrate_steady(self, instance, resources, start: datetime) -> dict:
        """In the steady phase, so under the load the burst's windows are processed with (the daemon
        receiving the steady rate, the machine's other work as it is now): the same synthetic window
        again (its estate known by now, as the generator's is when the burst comes) and an empty window
        (a run's fixed cost), both timed."""
        windows = calibration_windows(start)
        timed = []
        for window in windows[2:]:
            began = time.monotonic()
            self._run(instance, resources, {"partition_key": window_key(window), "tags": {}})
            timed.append(time.monotonic() - began)
        self.runs.clear()
        before_burst = not self.burst_started.is_set()
        self.log(f"calibration in the steady phase: {calibration_flows(self.args):,} flows in {timed[0]:.1f}s, "
                 f"empty window {timed[1]:.1f}s{'' if before_burst else ' (the burst had begun)'}")  # fmt: skip
        return {
            "run_overhead_seconds": round(timed[1], 2),
            "calibration_flows": calibration_flows(self.args),
            "calibration_run_seconds": round(timed[0], 2),
            "calibrated_before_burst": before_burst,
        }

    def _land_calibration(self, window: datetime, flows: int) -> None:
        """Write ``flows`` synthetic flows (``bench pipeline``'s kind, with the connections the generator's
        estate has in the timed window) straight into ``flow_raw`` for ``window``: the daemon never sees
        them, so they cost no switch and no loss."""
        from flowlens_dagster.bench.pipeline import synthetic_window
        from ingest.land.postgres import PostgresLanding

        pairs = int(generator_connections(calibration_flows(self.args)))
        landing = PostgresLanding(self.cfg.postgres.dsn(), self.cfg.backpressure.postgresql)
        try:
            for batch in synthetic_window(window, flows, pairs):
                landing.write(batch)
        finally:
            landing.close()

    def _run(self, instance, resources, request: dict) -> None:
        from flowlens_dagster.definitions import defs
        from flowlens_dagster.jobs import window_job

        began = time.monotonic()
        defs.resolve_job_def(window_job.name).execute_in_process(
            partition_key=request["partition_key"], tags=request["tags"], instance=instance, resources=resources,
            raise_on_error=False,
        )  # fmt: skip
        self.runs.append({"seconds": round(time.monotonic() - began, 2), **request})

    def _tick(self, instance, resources, cursor: str, run: bool = True) -> str:
        """One sensor evaluation, then (``run``) the run it requests, executed in process; returns the cursor."""
        import dagster as dg

        from flowlens_dagster.definitions import defs
        from flowlens_dagster.sensors import SENSOR_NAME

        sensor = defs.resolve_sensor_def(SENSOR_NAME)
        with dg.build_sensor_context(instance=instance, cursor=cursor, resources=resources) as context:
            result = sensor(context)
            cursor = context.cursor or cursor
        if isinstance(result, dg.SensorResult):
            cursor = result.cursor or cursor
            for request in result.run_requests if run else []:
                self._run(instance, resources, {"partition_key": request.partition_key, "tags": dict(request.tags)})
        return cursor

    def _send(self, port: int, start: datetime) -> None:
        a = self.args
        # the steady traffic after the burst in one process for --after-seconds (a restart stalls the window
        # clock), then in short ones until drained
        phases = [(a.steady, before_seconds(a)), (a.burst, a.burst_seconds), (a.steady, a.after_seconds)]
        after = 0.0
        while True:
            rate, seconds = phases.pop(0) if phases else (a.steady, self.AFTER_CHUNK_SECONDS)
            if rate == a.burst and not self.burst_done.is_set():
                self.burst_started.set()
            out = subprocess.run(
                [FLOWLENS, "generate", "--target", f"127.0.0.1:{port}", "--start", start.isoformat(), "--speed",
                 str(a.speed), "--duration", str(seconds), "--rate", str(rate), "--versions", "9", "--seed", "3"],
                env=self.env, cwd=ROOT, capture_output=True, text=True, timeout=seconds * 5 + 60,
            )  # fmt: skip
            if out.returncode != 0:
                self.log(f"generator failed: {out.stderr[-500:]}")
                break
            flows = int(json.loads(out.stdout.strip().splitlines()[-1])["flows"])
            self.sent += flows
            start += timedelta(seconds=seconds * a.speed)
            if rate == a.burst and not self.burst_done.is_set():
                self.burst_sent, self.burst_end_at = flows, time.monotonic()
                self.burst_done.set()
            elif self.burst_done.is_set():
                after += seconds
                if after >= a.after_seconds and self.drained.is_set():
                    break
                if after >= a.after_seconds + a.max_drain_seconds:
                    break

    def _tick_until_drained(self, instance, resources, start: datetime) -> list[tuple[float, datetime, float]]:
        """Sensor ticks (and their runs) until the burst's windows are processed and lag is back under the bound.

        Returns (monotonic time, end of the newest processed window, lag) after each tick's runs.
        """
        bound = self.cfg.backpressure.kafka.max_acceptable_lag_seconds
        burst_window_end = window_start(self.burst_end - timedelta(microseconds=1)) + WINDOW_DELTA
        cursor = json.dumps({"next_window": start.isoformat()})
        lags: list[tuple[float, datetime, float]] = []
        began = time.monotonic()
        while True:
            cursor = self._tick(instance, resources, cursor)
            newest, processed_end = _lag(self.cfg, start)
            lag = max(0.0, (newest - processed_end).total_seconds())
            lags.append((time.monotonic(), processed_end, lag))
            drained = self.burst_done.is_set() and processed_end >= burst_window_end and lag <= bound
            waited = time.monotonic() - began > self.args.max_drain_seconds + before_seconds(self.args)
            if drained or waited:
                return lags
            time.sleep(self.args.tick_seconds)

    def _figures(self, final: dict, lags: list[tuple[float, datetime, float]]) -> tuple[dict, dict]:
        bound = self.cfg.backpressure.kafka.max_acceptable_lag_seconds
        burst_window_end = window_start(self.burst_end - timedelta(microseconds=1)) + WINDOW_DELTA
        drained_at = next((at for at, end, lag in lags if end >= burst_window_end and lag <= bound), None)
        switches = _switches(self.cfg)
        lost = self.sent - int(final.get("flows_landed", 0))
        # on the monotonic clock, to the millisecond, scaled to the window clock: the landing's newest
        # receive time moves in batches (a second of wall clock) and stands still while the generator
        # restarts after the burst, though the window's run goes on
        drain = (drained_at - self.burst_end_at) * self.args.speed if drained_at else None
        figures = {
            "absorbed_flows": max(0, self.burst_sent - lost),
            "lost_flows": lost,
            "sampled_flows": int(final.get("sampled", 0)),
            "max_lag_seconds": round(max((lag for _, _, lag in lags), default=0.0), 1),
            "drain_seconds": None if drain is None else round(max(0.0, drain), 1),
            "mode_switches": len(switches),
        }
        extra = {"sent_flows": self.sent, "switches": switches, "drain_bound_seconds": bound, "runs": self.runs}
        return figures, extra


def _lag(cfg: FlowLensConfig, start: datetime) -> tuple[datetime, datetime]:
    """The sensor's lag figures: the newest landed receive time and the end of the newest processed window."""
    import psycopg

    from flowlens_dagster.sensors import NEWEST_PROCESSED
    from ingest.land import open_landing

    landing = open_landing(cfg)
    try:
        newest = landing.newest_receive_time()
    finally:
        landing.close()
    with psycopg.connect(cfg.postgres.dsn()) as conn:
        processed = conn.execute(NEWEST_PROCESSED).fetchone()[0]
    processed_end = processed + WINDOW_DELTA if processed else start  # nothing processed yet
    return newest or start, max(processed_end, start)


def _switches(cfg: FlowLensConfig) -> list[dict]:
    import psycopg

    with psycopg.connect(cfg.postgres.dsn()) as conn:
        rows = conn.execute(
            "SELECT switched_at, from_landing, to_landing, reason FROM flowlens.mode_switches ORDER BY switched_at"
        ).fetchall()
    return [{"at": r[0].isoformat(), "from": r[1], "to": r[2], "reason": r[3]} for r in rows]
