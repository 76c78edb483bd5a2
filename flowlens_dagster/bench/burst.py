"""``flowlens bench burst``: the scaling model's §6.2 burst (absorb, process, drain), scaled to this machine.

The real pieces, in auto mode: ``flowlens ingest --mode auto`` (one receiving process), the
generator (``flowlens generate``) sending a steady rate, a burst of several times that rate, then
the steady rate again; the watermark sensor evaluated every ``--tick-seconds`` and every run it
requests executed in process (the window job with its checks), on a throwaway database, Kafka
topic and lake. Time is compressed: the generator's export clock runs ``--speed`` times faster
than the wall clock (``ingest.timestamp_source: export``), so a 5-minute window passes in
300/speed seconds; lag and drain are reported on that window clock, which is the clock the
scaling model's thresholds are written in.

Figures: ``absorbed_flows`` (flows landed during the burst), ``lost_flows`` (sent minus landed;
backpressure sampling counts as lost), ``sampled_flows``, ``max_lag_seconds``, ``drain_seconds``
(burst end until lag is below ``max_acceptable_lag_seconds``), ``mode_switches``. Baseline: the
planner's predicted drain for the same shape (``flowlens plan`` with this machine's bench files),
so ``ratio.drain_seconds`` = measured / predicted when the planner predicts a backlog.
"""

from __future__ import annotations

import argparse
import contextlib
import json
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

from flowlens_dagster.bench.ingest import free_udp_port
from flowlens_dagster.bench.report import report
from ingest.config import ConfigError, FlowLensConfig, load_config
from ingest.services import ServiceUnavailable, require

ROOT = Path(__file__).resolve().parents[2]
FLOWLENS = str(Path(sys.executable).parent / "flowlens")


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="flowlens bench burst", description=__doc__.split("\n\n")[0])
    p.add_argument("--json", action="store_true")
    p.add_argument("--steady", type=int, default=3_000, help="steady rate, flows per wall-clock second")
    p.add_argument("--burst", type=int, default=40_000, help="burst rate, flows per wall-clock second")
    p.add_argument("--before-seconds", type=float, default=15, help="steady traffic before the burst (wall clock)")
    p.add_argument("--burst-seconds", type=float, default=30, help="burst duration (wall clock)")
    p.add_argument("--after-seconds", type=float, default=60, help="steady traffic after the burst (wall clock)")
    p.add_argument("--speed", type=float, default=10, help="window-clock seconds per wall-clock second")
    p.add_argument("--tick-seconds", type=float, default=3, help="sensor evaluation interval (wall clock)")
    p.add_argument("--max-drain-seconds", type=float, default=300, help="give up waiting for the drain (wall clock)")
    return p.parse_args(argv)


def main(argv: list[str]) -> int:
    args = parse_args(argv)
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
        figures, extra = Run(cfg, args, work, log).measure()
    except Exception as exc:  # a service failed mid-run: say which, clean up, no traceback
        print(f"flowlens bench burst: failed: {exc}", file=sys.stderr)
        _cleanup(base, cfg, work, log)
        return 1
    _cleanup(base, cfg, work, log)
    predicted = _predicted_drain(base, args)
    config = {
        "steady_flows_per_s": args.steady, "burst_flows_per_s": args.burst, "burst_seconds_wall": args.burst_seconds,
        "speed": args.speed, "clock": "lag and drain on the window clock (export time, speed x wall clock)",
        "baseline": "flowlens plan's predicted drain for the same shape (machine figures where saved)",
        "thresholds": {k: v for k, v in cfg.thresholds.kafka.model_dump().items()}, **extra,
    }  # fmt: skip
    report("burst", figures, {"drain_seconds": predicted}, config, args.json)
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
            "ingest": base.ingest.model_copy(update={"timestamp_source": "export", "processes": 1}),
            "pipeline": base.pipeline.model_copy(
                update={"lake_dir": work / "lake", "grace_seconds": 0, "instance_timeout_seconds": 5}
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
        topics = [cfg.kafka.raw_topic, f"{cfg.kafka.raw_topic}.watermarks"]
        admin = kafka_stack.admin(base)
        for future in admin.delete_topics(topics, operation_timeout=30).values():
            with contextlib.suppress(Exception):  # the watermark topic may not exist
                future.result(timeout=30)
    except Exception as exc:
        log(f"cleanup incomplete ({exc}); drop {cfg.postgres.database} and topic {cfg.kafka.raw_topic} by hand")
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _predicted_drain(base: FlowLensConfig, args: argparse.Namespace) -> float | None:
    """The planner's drain for the shape on the window clock (rates per window-clock second)."""
    from ingest.scaling.figures import bench_dir, load_results
    from ingest.scaling.plan import PlanInput, make_plan

    results = load_results(bench_dir(base.state_dir))
    scale = args.speed
    inp = PlanInput(args.steady / scale, args.burst / scale, args.burst_seconds * scale)
    # one pipeline worker: this machine; the planner's per-worker figure is per wall-clock second
    plan = make_plan(inp, base, results)
    capacity = plan.figures["pipeline_flows_per_s_per_worker"]["value"] / scale
    backlog = max(0.0, inp.burst_peak_flows_per_sec - capacity) * inp.burst_seconds
    surplus = capacity - inp.flows_per_sec
    return round(backlog / surplus, 1) if surplus > 0 else None


class Run:
    """One bench run: daemon, generator phases in a thread, sensor ticks and runs in this thread."""

    def __init__(self, cfg: FlowLensConfig, args: argparse.Namespace, work: Path, log):
        self.cfg, self.args, self.work, self.log = cfg, args, work, log
        self.env = {**{k: v for k, v in os.environ.items() if not k.startswith("FLOWLENS_")}, **_env(cfg)}
        for key in ("HOST", "PORT", "USER", "PASSWORD"):
            value = getattr(cfg.postgres, key.lower())
            self.env[f"FLOWLENS_POSTGRES__{key}"] = str(value)
        self.env["FLOWLENS_KAFKA__BOOTSTRAP_SERVERS"] = cfg.kafka.bootstrap_servers
        self.env["FLOWLENS_REDIS__PORT"] = str(cfg.redis.port)
        self.sent = 0
        self.burst_end: float | None = None
        self.generator_done = threading.Event()
        self.burst_sent = 0
        self.start: datetime | None = None

    def measure(self) -> tuple[dict, dict]:
        port = free_udp_port()
        stats_file = self.work / "ingest-stats.json"
        daemon = subprocess.Popen(
            [FLOWLENS, "ingest", "--listen", f"127.0.0.1:{port}", "--processes", "1", "--metrics-port", "0",
             "--instance-id", "burst", "--mode", "auto", "--stats-file", str(stats_file)],
            env=self.env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
        )  # fmt: skip
        saved = {k: v for k, v in os.environ.items() if k.startswith("FLOWLENS_")}
        os.environ.update(self.env)  # the Dagster resources read the bench config
        try:
            time.sleep(3)
            start = datetime.now(UTC) - timedelta(hours=3)
            start = start.replace(minute=start.minute - start.minute % 5, second=0, microsecond=0)
            self.start = start
            sender = threading.Thread(target=self._send, args=(port, start), daemon=True)
            sender.start()
            lags = self._tick_until_drained(start)
            sender.join()
        finally:
            os.killpg(daemon.pid, signal.SIGTERM)
            daemon.wait(timeout=120)
            for key in [k for k in os.environ if k.startswith("FLOWLENS_")]:
                del os.environ[key]
            os.environ.update(saved)
        final = json.loads(stats_file.read_text())
        return self._figures(final, lags)

    def _send(self, port: int, start: datetime) -> None:
        a = self.args
        phases = [(a.steady, a.before_seconds), (a.burst, a.burst_seconds), (a.steady, a.after_seconds)]
        for index, (rate, seconds) in enumerate(phases):
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
            if index == 1:
                self.burst_end, self.burst_sent = time.monotonic(), flows
        self.generator_done.set()

    def _tick_until_drained(self, start: datetime) -> list[tuple[float, float]]:
        """Sensor ticks (and their runs) until the lag is back under the bound after the burst."""
        import dagster as dg

        from assets.resources import build_resources
        from flowlens_dagster.definitions import defs
        from flowlens_dagster.jobs import window_job
        from flowlens_dagster.sensors import SENSOR_NAME

        resources = build_resources(self.cfg, use_env=False)
        sensor, job = defs.resolve_sensor_def(SENSOR_NAME), defs.resolve_job_def(window_job.name)
        bound = self.cfg.backpressure.kafka.max_acceptable_lag_seconds
        cursor = json.dumps({"next_window": start.isoformat()})
        lags: list[tuple[float, float]] = []
        with dg.instance_for_test() as instance:
            while True:
                with dg.build_sensor_context(instance=instance, cursor=cursor, resources=resources) as context:
                    result = sensor(context)
                    cursor = context.cursor or cursor
                if isinstance(result, dg.SensorResult):
                    cursor = result.cursor or cursor
                    for request in result.run_requests:
                        job.execute_in_process(
                            partition_key=request.partition_key,
                            tags=dict(request.tags),
                            instance=instance,
                            resources=resources,
                            raise_on_error=False,
                        )
                lag = _lag(self.cfg, start)
                lags.append((time.monotonic(), lag))
                drained = self.burst_end is not None and self.generator_done.is_set() and lag <= bound
                waited = self.burst_end is not None and time.monotonic() - self.burst_end > self.args.max_drain_seconds
                if drained or waited:
                    return lags
                time.sleep(self.args.tick_seconds)

    def _figures(self, final: dict, lags: list[tuple[float, float]]) -> tuple[dict, dict]:
        bound = self.cfg.backpressure.kafka.max_acceptable_lag_seconds
        after = [(t, lag) for t, lag in lags if self.burst_end is not None and t >= self.burst_end]
        drained_at = next((t for t, lag in after if lag <= bound), None)
        switches = _switches(self.cfg)
        lost = self.sent - int(final.get("flows_landed", 0))
        figures = {
            "absorbed_flows": max(0, self.burst_sent - lost),
            "lost_flows": lost,
            "sampled_flows": int(final.get("sampled", 0)),
            "max_lag_seconds": round(max((lag for _, lag in lags), default=0.0), 1),
            "drain_seconds": round((drained_at - self.burst_end) * self.args.speed, 1) if drained_at else None,
            "mode_switches": len(switches),
        }
        return figures, {"sent_flows": self.sent, "switches": switches, "drain_bound_seconds": bound}


def _lag(cfg: FlowLensConfig, start: datetime) -> float:
    """Lag as the sensor measures it: newest landed receive time minus the newest processed window's end."""
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
    if newest is None:
        return 0.0
    processed_end = processed + timedelta(minutes=5) if processed else start  # nothing processed yet
    return max(0.0, (newest - processed_end).total_seconds())


def _switches(cfg: FlowLensConfig) -> list[dict]:
    import psycopg

    with psycopg.connect(cfg.postgres.dsn()) as conn:
        rows = conn.execute(
            "SELECT switched_at, from_landing, to_landing, reason FROM flowlens.mode_switches ORDER BY switched_at"
        ).fetchall()
    return [{"at": r[0].isoformat(), "from": r[1], "to": r[2], "reason": r[3]} for r in rows]
