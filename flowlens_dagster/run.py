"""``flowlens run``: the whole thing on one machine, in the minimal mode.

1. the stack (PostgreSQL only) and the migrations;
2. the ingest daemon on a local UDP port, assigning windows by the exporter's clock
   (``ingest.timestamp_source: export``) so a replayed past fills past windows;
3. the generator sending a realistic hour of traffic from the recent past at high speed (60x: an
   hour in a minute);
4. Dagster (``dagster dev``: UI + daemon) with the watermark sensor on, started once the hour has
   landed. The windows close when the daemon's watermark passes them or, once the exporters have
   gone quiet, seconds later (see :func:`dagster_overrides`); the sensor requests the whole hour as
   one partition-range run (catch-up), then one run per window that closes later;
5. once the hour is processed, a summary of what landed in PostgreSQL, checked against the
   generator's ground truth.

Running it again is safe: it generates only what is not processed yet (from the end of the newest
processed window, at most ``--minutes`` back; nothing if that is less than a window), and the
sensor's cursor, kept in the Dagster instance under the state directory, never requests a window twice.

The UI stays up (http://<dagster.host>:<dagster.port>) until Ctrl-C or SIGTERM, which stops
everything this command started: the daemon, Dagster and the stack services that were not already
running (``--keep-stack`` leaves them up). ``--exit`` returns after the summary instead (scripts).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg

from assets.keys import DONE_ASSET
from ingest.config import ConfigError, FlowLensConfig, load_config
from ingest.land.postgres import summarize_window
from ingest.window import WINDOW, WINDOW_MINUTES, window_index, window_start

FLOWLENS = str(Path(sys.executable).parent / "flowlens")
QUIET_INSTANCE_SECONDS = 20  # sensor: an ingest instance without a heartbeat this long is not live
DNS_SECONDS_PER_WINDOW = 1.0  # reverse-DNS budget per window while catching up the generated span
SPANS_FILE = "spans.jsonl"  # under <state_dir>/run: one line per generated span, with its ground truth
PROCESSED_END = "SELECT max(window_start) + interval '5 minutes' FROM flowlens.window_loads WHERE asset = %s"
# flow_raw is compared with the truth only for the generator's exporters inside its spans: other
# traffic landing meanwhile (a real exporter, a replay) is not the generator's
DEFAULT_EXPORTERS = ["127.0.0.1", "127.0.0.2", "127.0.0.3"]  # flowlens generate's (--exporters 3)
# what the landing holds: label -> value of the [first, end) / [end, never) summaries of flow_raw
LANDED = {
    "flows landed (flow_raw)": lambda in_windows, after: in_windows.rows + after.rows,
    "bytes landed": lambda in_windows, after: in_windows.bytes + after.bytes,
    "bytes in those windows": lambda in_windows, after: in_windows.bytes,
    "bytes after them": lambda in_windows, after: after.bytes,
}
SUMMARY_SQL = {
    "windows processed": f"SELECT count(*) FROM flowlens.window_loads WHERE asset = '{DONE_ASSET}'"
    " AND window_start >= %(first)s AND window_start < %(end)s",
    "flow_stats rows": "SELECT count(*) FROM flowlens.flow_stats WHERE window_start >= %(first)s",
    "bytes in flow_stats": "SELECT coalesce(sum(bytes), 0) FROM flowlens.flow_stats WHERE window_start >= %(first)s",
    "network assets": "SELECT count(*) FROM flowlens.assets",
    "dependencies": "SELECT count(*) FROM flowlens.dependencies",
    "changes": "SELECT count(*) FROM flowlens.changes WHERE window_start >= %(first)s",
}
# landed, processed, what landed in and after the processed windows, then the pipeline's tables
SUMMARY_ORDER = (*list(LANDED)[:2], *list(SUMMARY_SQL)[:1], *list(LANDED)[2:], *list(SUMMARY_SQL)[1:])
TOP_TALKERS = """
SELECT host(client_addr), host(server_addr) || ':' || server_port || '/' || protocol, sum(bytes) AS bytes
FROM flowlens.flow_stats WHERE window_start >= %(first)s GROUP BY 1, 2 ORDER BY 3 DESC LIMIT 5
"""


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="flowlens run", description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", help="FlowLens YAML file (default: $FLOWLENS_CONFIG or ./flowlens.yaml)")
    parser.add_argument("--minutes", type=int, default=60, help="simulated traffic to generate (default 60)")
    parser.add_argument("--speed", type=float, default=60.0, help="simulated seconds per real second")
    parser.add_argument("--rate", type=int, default=2_000, help="generator flows per second (sent)")
    parser.add_argument("--port", type=int, default=2055, help="UDP port of the ingest daemon")
    parser.add_argument("--timeout", type=float, default=900, help="seconds to wait for the pipeline")
    parser.add_argument("--exit", action="store_true", help="stop everything after the summary")
    parser.add_argument("--keep-stack", action="store_true", help="leave the stack services running at the end")
    args = parser.parse_args(argv)
    if args.minutes < 5 or args.speed <= 0 or args.rate <= 0:
        parser.error("need --minutes >= 5 (one window), --speed > 0 and --rate > 0")
    return args


def plan_span(now: datetime, minutes: int, processed_end: datetime | None) -> tuple[datetime, datetime]:
    """The [first, last) window span to generate: ``minutes`` ending a window before now, minus what is processed.

    The span ends a whole window back, so the generator's clock (faster than the wall clock) stays in
    the past. ``first == last`` means there is nothing new to generate.
    """
    last = window_start(now - WINDOW)
    first = last - timedelta(minutes=minutes - minutes % WINDOW_MINUTES)
    if processed_end is not None:
        first = min(max(first, processed_end), last)
    return first, last


def child_env(config_path: str | None) -> dict[str, str]:
    env = {**os.environ, "FLOWLENS_MODE": "minimal", "FLOWLENS_INGEST__TIMESTAMP_SOURCE": "export"}
    if config_path:
        env["FLOWLENS_CONFIG"] = str(Path(config_path).resolve())
    return env


def start(argv: list[str], log: Path, env: dict[str, str]) -> subprocess.Popen:
    """Start ``argv`` in its own session (Ctrl-C reaches only us; we stop it), output to ``log``."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "ab") as out:
        return subprocess.Popen(
            argv, env=env, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )


def dagster_overrides(cfg: FlowLensConfig, first: datetime) -> dict[str, str]:
    """Config for this run's Dagster (the code location reads it from the environment).

    - catch-up reaches back to ``first`` (the sensor counts its lookback back from the newest
      complete time, which is the wall clock once the daemon goes quiet);
    - the whole span in one run (not ``max_runs_per_tick`` windows a run);
    - an ingest instance whose exporters have gone quiet stops holding windows open after
      seconds, not minutes: the generated hour is over, nothing more will arrive for it;
    - a short reverse-DNS budget: the generator's addresses have no PTR records, and a full budget
      of timeouts per window would dominate the catch-up (lookups not started wait, counted).
    """
    # the sensor's first tick comes within a minute or two of Dagster's start: two windows of slack
    reach = datetime.now(UTC) - first + 2 * WINDOW
    pipe = cfg.pipeline
    env = {
        "FLOWLENS_MODE": "minimal",
        "FLOWLENS_PIPELINE__SENSOR_LOOKBACK_MINUTES": str(int(reach / timedelta(minutes=1))),
        "FLOWLENS_PIPELINE__MAX_RUNS_PER_TICK": str(max(pipe.max_runs_per_tick, int(reach / WINDOW) + 2)),
        "FLOWLENS_PIPELINE__INSTANCE_TIMEOUT_SECONDS": str(min(pipe.instance_timeout_seconds, QUIET_INSTANCE_SECONDS)),
    }
    if cfg.dns.enabled and cfg.dns.max_seconds_per_window > DNS_SECONDS_PER_WINDOW:
        env["FLOWLENS_DNS__MAX_SECONDS_PER_WINDOW"] = str(DNS_SECONDS_PER_WINDOW)
    return env


def processed_end(cfg: FlowLensConfig) -> datetime | None:
    """The end of the newest fully processed window, or None before the first."""
    with psycopg.connect(cfg.postgres.dsn()) as conn:
        return conn.execute(PROCESSED_END, (DONE_ASSET,)).fetchone()[0]


def generate(cfg: FlowLensConfig, args: argparse.Namespace, first: datetime, last: datetime, env) -> dict:
    """Send [first, last) to the daemon; record the span and its ground truth."""
    run_dir = cfg.state_dir / "run"
    run_dir.mkdir(parents=True, exist_ok=True)
    real_seconds = (last - first).total_seconds() / args.speed
    print(f"3/5 generator: {first:%H:%M}..{last:%H:%M} UTC at {args.speed:g}x ({real_seconds:.0f} s)", flush=True)
    truth = run_dir / f"truth-{first:%Y%m%dT%H%M}.parquet"
    proc = subprocess.run(
        [FLOWLENS, "generate", "--target", f"127.0.0.1:{args.port}", "--start", first.isoformat(),
         "--speed", str(args.speed), "--duration", str(real_seconds), "--rate", str(args.rate),
         "--seed", str(window_index(first)), "--truth", str(truth)],
        env=env, check=True, stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    sent = json.loads(proc.stdout.strip().splitlines()[-1])
    span = {"first": first.isoformat(), "last": last.isoformat(), "flows": sent["flows"], "bytes": sent["flow_bytes"],
            "exporters": sent["exporters"]}  # fmt: skip
    with open(run_dir / SPANS_FILE, "a") as out:
        out.write(json.dumps(span) + "\n")
    print(f"  sent {sent['flows']:,} flows ({sent['flow_bytes']:,} bytes) in {sent['seconds']:.0f} s; truth {truth}")
    return span


def spans(cfg: FlowLensConfig) -> list[dict]:
    path = cfg.state_dir / "run" / SPANS_FILE
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.exists() else []


def ui_answers(cfg: FlowLensConfig) -> bool:
    try:
        with urllib.request.urlopen(f"http://{cfg.dagster.host}:{cfg.dagster.port}/server_info", timeout=5) as resp:
            return resp.status == 200
    except OSError:
        return False


def windows_done(cfg: FlowLensConfig, first: datetime, last: datetime) -> int:
    with psycopg.connect(cfg.postgres.dsn()) as conn:
        return conn.execute(
            "SELECT count(*) FROM flowlens.window_loads WHERE asset = %s AND window_start >= %s AND window_start < %s",
            (DONE_ASSET, first, last),
        ).fetchone()[0]


def window_runs(cfg: FlowLensConfig, since: datetime) -> tuple[int, int]:
    """(in flight, failed) runs of the window job created since ``since``, from the Dagster instance."""
    import dagster as dg

    from flowlens_dagster.instance import dagster_home
    from flowlens_dagster.jobs import window_job
    from flowlens_dagster.sensors import IN_FLIGHT

    with dg.DagsterInstance.from_config(str(dagster_home(cfg))) as instance:
        count = instance.get_runs_count
        in_flight = count(dg.RunsFilter(job_name=window_job.name, statuses=IN_FLIGHT, created_after=since))
        failed = count(
            dg.RunsFilter(job_name=window_job.name, statuses=[dg.DagsterRunStatus.FAILURE], created_after=since)
        )
    return in_flight, failed


def wait_for_windows(
    cfg: FlowLensConfig, first: datetime, last: datetime, timeout: float, processes: list[subprocess.Popen]
) -> tuple[int, int]:
    """Wait until every window in [first, last) is processed and no window run is still going (its
    asset checks run last); return (windows processed, failed window runs)."""
    since, expected = datetime.now(UTC), int((last - first) / WINDOW)
    deadline, done, failed, shown, ui = time.monotonic() + timeout, 0, 0, -1, False
    while time.monotonic() < deadline and all(p.poll() is None for p in processes):
        time.sleep(5)
        done = windows_done(cfg, first, last)
        if not ui and ui_answers(cfg):
            ui = True
            print(f"  Dagster UI answers on http://{cfg.dagster.host}:{cfg.dagster.port}", flush=True)
        if done != shown:
            print(f"  pipeline: {done}/{expected} windows processed", flush=True)
            shown = done
        if done >= expected and ui:
            in_flight, failed = window_runs(cfg, since)
            if in_flight == 0:
                break
    return done, failed


def print_summary(cfg: FlowLensConfig) -> None:
    """What landed, next to what the generator sent (all spans this state directory generated)."""
    generated = spans(cfg)
    if not generated:
        print("\nNothing generated yet in this state directory.")
        return
    first = min(datetime.fromisoformat(s["first"]) for s in generated)
    end = processed_end(cfg) or first
    sent_flows, sent_bytes = sum(s["flows"] for s in generated), sum(s["bytes"] for s in generated)
    with psycopg.connect(cfg.postgres.dsn()) as conn:
        print(f"\nWhat landed in PostgreSQL (database {cfg.postgres.database}) since {first:%Y-%m-%d %H:%M} UTC:")
        print(f"  {'generator sent (truth)':24} {sent_flows:>14,} flows {sent_bytes:>16,} bytes")
        # spans recorded before the exporters were: the generator's default ones
        exporters = sorted({e for span in generated for e in span.get("exporters", DEFAULT_EXPORTERS)})
        last = max(datetime.fromisoformat(span["last"]) for span in generated)
        in_windows = summarize_window(conn, first, end, exporters)
        after = summarize_window(conn, end, max(end, last), exporters)
        params = {"first": first, "end": end}
        values = {label: value(in_windows, after) for label, value in LANDED.items()}
        values |= {label: conn.execute(query, params).fetchone()[0] for label, query in SUMMARY_SQL.items()}
        for label in SUMMARY_ORDER:
            print(f"  {label:24} {values[label]:>14,}")
        print(f"  processed through        {end:%Y-%m-%d %H:%M} UTC")
        print("  top talkers:")
        for client, service, nbytes in conn.execute(TOP_TALKERS, {"first": first}).fetchall():
            print(f"    {client:>15} -> {service:24} {nbytes:>14,} bytes")
    print(f'\nDagster UI: http://{cfg.dagster.host}:{cfg.dagster.port}   (flowlens sql "..." to query)')
    print(f"Query API:  {api_url(cfg)}   (docs /docs; `flowlens users add NAME --role admin` to log in)")
    print(f"Console:    http://{cfg.api.host}:{cfg.api.port}/   (the map in a browser; same login)")


def api_url(cfg: FlowLensConfig) -> str:
    return f"http://{cfg.api.host}:{cfg.api.port}/api/v1"


def stop(processes: list[subprocess.Popen]) -> None:
    """SIGTERM each process group, wait, then SIGKILL what is left."""
    for proc in processes:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
    for proc in processes:
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def _interrupt(signum: int, _frame) -> None:
    raise KeyboardInterrupt(signal.Signals(signum).name)


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    try:
        cfg = load_config(args.config).model_copy(update={"mode": "minimal"})
    except ConfigError as exc:
        print(f"flowlens run: {exc}", file=sys.stderr)
        return 2
    # SIGTERM and SIGHUP clean up like Ctrl-C (without this they would orphan the children); SIGINT
    # too, explicitly: started in the background by a shell, we would inherit it as ignored
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, _interrupt)
    from flowlens_dagster.stack import cli as stack

    running_before = {name for name, module in stack.ALL_SERVICES.items() if module.running_pid(cfg)}
    processes: list[subprocess.Popen] = []
    try:
        return _run(cfg, args, processes)
    except KeyboardInterrupt:
        print("\nflowlens run: stopping", flush=True)
        return 130
    finally:
        stop(processes)
        started = [name for name in stack.services_for("minimal") if name not in running_before]
        if started and not args.keep_stack:
            stopped = stack.down(cfg, only=started)
            print(f"stopped {', '.join(stopped) or 'nothing'} (started by this run)", flush=True)


def _run(cfg: FlowLensConfig, args: argparse.Namespace, processes: list[subprocess.Popen]) -> int:
    from flowlens_dagster.instance import spawn_dagster
    from flowlens_dagster.migrate import migrate
    from flowlens_dagster.stack import cli as stack

    began = time.monotonic()
    print("1/5 stack (minimal: PostgreSQL) and migrations", flush=True)
    stack.up(cfg, "minimal")
    migrate(cfg, log=lambda message: print(f"  {message}"))
    logs, env = cfg.state_dir / "logs", child_env(args.config)
    print(f"2/5 ingest daemon on udp 127.0.0.1:{args.port} (log {logs / 'ingest.log'})", flush=True)
    daemon = [FLOWLENS, "ingest", "--mode", "minimal", "--listen", f"127.0.0.1:{args.port}", "--processes", "1",
              "--instance-id", "flowlens-run", "--metrics-port", "0"]  # fmt: skip
    processes.append(start(daemon, logs / "ingest.log", env))
    time.sleep(3)  # the daemon's socket is bound
    if processes[0].poll() is not None:
        print(f"flowlens run: the ingest daemon exited; see {logs / 'ingest.log'} (port busy? try --port)")
        return 1
    done_through = processed_end(cfg)
    first, last = plan_span(datetime.now(UTC), args.minutes, done_through)
    if first < last:
        generate(cfg, args, first, last, env)
        time.sleep(cfg.ingest.batch_max_seconds + cfg.ingest.heartbeat_seconds + 1)  # last batches and heartbeat
    else:
        print(
            f"3/5 generator: nothing new to send (processed through {done_through:%H:%M} UTC; it generates only"
            " windows that ended at least 5 minutes ago)",
            flush=True,
        )
    print(f"4/5 Dagster on http://{cfg.dagster.host}:{cfg.dagster.port} (log {logs / 'dagster.log'})", flush=True)
    os.environ.update(dagster_overrides(cfg, first))
    processes.append(spawn_dagster(cfg, logs / "dagster.log", "minimal"))
    print(f"  query API on {api_url(cfg)} (log {logs / 'api.log'})", flush=True)
    processes.append(start([FLOWLENS, "api", "--mode", "minimal"], logs / "api.log", env))
    print("5/5 waiting for the watermark sensor's runs", flush=True)
    done, failed = wait_for_windows(cfg, first, last, args.timeout, processes)
    print_summary(cfg)
    print(f"\nfrom start to summary: {time.monotonic() - began:.0f} s", flush=True)
    expected = int((last - first) / WINDOW)
    complete = done >= expected and not failed
    if not complete:
        print(
            f"flowlens run: {done} of {expected} windows processed, {failed} failed window run(s); "
            f"see {logs / 'dagster.log'} and the runs in the UI",
            file=sys.stderr,
        )
    if args.exit:
        return 0 if complete else 1
    print("Ctrl-C stops the daemon and Dagster.", flush=True)
    while all(p.poll() is None for p in processes):
        time.sleep(1)
    print("a child process exited; see the logs in " + str(logs), file=sys.stderr)
    return 1
