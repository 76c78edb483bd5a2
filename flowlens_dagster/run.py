"""``flowlens run``: the whole thing on one machine, in the minimal mode.

1. the stack (PostgreSQL only) and the migrations;
2. the ingest daemon on a local UDP port, assigning windows by the exporter's clock
   (``ingest.timestamp_source: export``) so a replayed past fills past windows;
3. the generator sending a realistic hour of traffic from the recent past at high speed;
4. Dagster (``dagster dev``: UI + daemon) with the watermark sensor on, started once the hour has
   landed (with exporter timestamps an idle daemon's watermark is the wall clock, so a sensor
   running earlier would close the past windows before their flows arrive);
5. once the sensor's runs have processed the hour, a summary of what landed in PostgreSQL.

The UI stays up (http://<dagster.host>:<dagster.port>) until Ctrl-C, which stops everything this
command started (not the stack: ``flowlens stack down`` does that). ``--exit`` returns after the
summary instead (scripts, tests).
"""

import argparse
import os
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg

from ingest.config import ConfigError, FlowLensConfig, load_config
from ingest.land.base import window_start

FLOWLENS = str(Path(sys.executable).parent / "flowlens")
SUMMARY_SQL = {
    "flows landed (flow_raw)": "SELECT count(*) FROM flowlens.flow_raw WHERE receive_time >= %(start)s",
    "windows processed": "SELECT count(*) FROM flowlens.window_loads WHERE asset = 'flow_stats'"
    " AND window_start >= %(start)s",
    "flow_stats rows": "SELECT count(*) FROM flowlens.flow_stats WHERE window_start >= %(start)s",
    "bytes in flow_stats": "SELECT coalesce(sum(bytes), 0) FROM flowlens.flow_stats WHERE window_start >= %(start)s",
    "network assets": "SELECT count(*) FROM flowlens.assets",
    "dependencies": "SELECT count(*) FROM flowlens.dependencies",
    "changes": "SELECT count(*) FROM flowlens.changes WHERE window_start >= %(start)s",
}
TOP_TALKERS = """
SELECT host(client_addr), host(server_addr) || ':' || server_port || '/' || protocol, sum(bytes) AS bytes
FROM flowlens.flow_stats WHERE window_start >= %(start)s GROUP BY 1, 2 ORDER BY 3 DESC LIMIT 5
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
    return parser.parse_args(argv)


def child_env(cfg: FlowLensConfig, config_path: str | None) -> dict[str, str]:
    env = {**os.environ, "FLOWLENS_MODE": "minimal", "FLOWLENS_INGEST__TIMESTAMP_SOURCE": "export"}
    if config_path:
        env["FLOWLENS_CONFIG"] = str(Path(config_path).resolve())
    return env


def start(argv: list[str], log: Path, env: dict[str, str]) -> subprocess.Popen:
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "ab") as out:
        return subprocess.Popen(argv, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)


def wait_for_windows(cfg: FlowLensConfig, first: datetime, last: datetime, timeout: float) -> int:
    """Wait until flow_stats has a load for every window in [first, last); return how many have."""
    expected = int((last - first) / timedelta(minutes=5))
    deadline, done = time.monotonic() + timeout, 0
    while time.monotonic() < deadline:
        with psycopg.connect(cfg.postgres.dsn()) as conn:
            done = conn.execute(
                "SELECT count(*) FROM flowlens.window_loads WHERE asset = 'topology_changes'"
                " AND window_start >= %s AND window_start < %s",
                (first, last),
            ).fetchone()[0]
        print(f"  pipeline: {done}/{expected} windows processed", flush=True)
        if done >= expected:
            break
        time.sleep(10)
    return done


def print_summary(cfg: FlowLensConfig, first: datetime) -> None:
    with psycopg.connect(cfg.postgres.dsn()) as conn:
        print(f"\nWhat landed in PostgreSQL (database {cfg.postgres.database}):")
        for label, query in SUMMARY_SQL.items():
            print(f"  {label:24} {conn.execute(query, {'start': first}).fetchone()[0]:>14,}")
        print("  top talkers:")
        for client, service, nbytes in conn.execute(TOP_TALKERS, {"start": first}).fetchall():
            print(f"    {client:>15} -> {service:24} {nbytes:>14,} bytes")
    print(f'\nDagster UI: http://{cfg.dagster.host}:{cfg.dagster.port}   (flowlens sql "..." to query)')


def stop(processes: list[subprocess.Popen]) -> None:
    for proc in processes:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
    for proc in processes:
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    try:
        cfg = load_config(args.config).model_copy(update={"mode": "minimal"})
    except ConfigError as exc:
        print(f"flowlens run: {exc}", file=sys.stderr)
        return 2
    from flowlens_dagster.instance import spawn_dagster
    from flowlens_dagster.migrate import migrate
    from flowlens_dagster.stack import cli as stack

    print("1/5 stack (minimal: PostgreSQL) and migrations", flush=True)
    stack.up(cfg, "minimal")
    migrate(cfg, log=lambda message: print(f"  {message}"))
    logs, env = cfg.state_dir / "logs", child_env(cfg, args.config)
    processes: list[subprocess.Popen] = []
    try:
        print(f"2/5 ingest daemon on udp 127.0.0.1:{args.port} (log {logs / 'ingest.log'})", flush=True)
        processes.append(
            start(
                [
                    FLOWLENS,
                    "ingest",
                    "--mode",
                    "minimal",
                    "--listen",
                    f"127.0.0.1:{args.port}",
                    "--instance-id",
                    "flowlens-run",
                    "--metrics-port",
                    "0",
                ],
                logs / "ingest.log",
                env,
            )
        )
        time.sleep(3)  # the daemon's sockets are bound
        first = window_start(datetime.now(UTC) - timedelta(minutes=args.minutes + 15))
        last = first + timedelta(minutes=args.minutes)
        # two simulated minutes past the hour so the daemon's watermark passes the last window's end
        real_seconds = (args.minutes + 2) * 60 / args.speed
        (cfg.state_dir / "run").mkdir(parents=True, exist_ok=True)
        print(f"3/5 generator: {first:%H:%M}..{last:%H:%M} UTC at {args.speed:g}x ({real_seconds:.0f} s)", flush=True)
        subprocess.run(
            [FLOWLENS, "generate", "--target", f"127.0.0.1:{args.port}", "--start", first.isoformat(),
             "--speed", str(args.speed), "--duration", str(real_seconds), "--rate", str(args.rate),
             "--truth", str(cfg.state_dir / "run" / "truth.parquet")],
            env=env, check=True,
        )  # fmt: skip
        time.sleep(cfg.ingest.batch_max_seconds + cfg.ingest.heartbeat_seconds + 1)  # last batches landed
        print(f"4/5 Dagster on http://{cfg.dagster.host}:{cfg.dagster.port} (log {logs / 'dagster.log'})", flush=True)
        # the code location reads the config from the environment: minimal mode, and a sensor
        # reaching back just far enough for the generated hour (not hours of empty windows)
        # (the lookback counts back from the daemon's watermark, which is the end of the generated span)
        os.environ.update({"FLOWLENS_MODE": "minimal", "FLOWLENS_PIPELINE__SENSOR_LOOKBACK_MINUTES": str(args.minutes)})
        processes.append(spawn_dagster(cfg, logs / "dagster.log", "minimal"))
        print("5/5 waiting for the watermark sensor's runs", flush=True)
        wait_for_windows(cfg, first, last, args.timeout)
        print_summary(cfg, first)
        if args.exit:
            return 0
        print("Ctrl-C stops the daemon and Dagster.", flush=True)
        while all(p.poll() is None for p in processes):
            time.sleep(1)
        print("a child process exited; see the logs above", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 0
    finally:
        stop(processes)
