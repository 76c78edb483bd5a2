"""``flowlens stack up|status|down``: the local PostgreSQL / Redis / Kafka / Prometheus stack.

``up`` installs what is missing, starts what is not running, waits for health and creates the
database and topics; running it again is a no-op. ``status`` checks each service of the mode over a
real connection and exits 1 when one is unhealthy. ``down`` stops only processes this stack started
(pidfile + command-line check). Modes: minimal = PostgreSQL; standard/full (and auto, which may
switch to them) = PostgreSQL + Redis + Kafka; full adds the monitoring (``monitoring.py``: the pipeline's
metrics exporter, Prometheus with the alert rules, Alertmanager). The mode of the last ``up`` is remembered in
``<state_dir>/run/stack.mode`` so ``status`` checks what was started.
"""

from __future__ import annotations

import argparse
import fcntl
import json
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from flowlens_dagster.stack import kafka, kafka_cluster, postgres, process, redis
from flowlens_dagster.stack.monitoring import ALERTMANAGER_SERVICE, EXPORTER_SERVICE, PROMETHEUS_SERVICE
from ingest.config import ConfigError, FlowLensConfig, load_config
from ingest.services import require

MODES = ("minimal", "standard", "full", "auto")
# Each has up/down/health/running_pid(cfg): a module (postgres, redis, kafka) or a monitoring Service.
ALL_SERVICES: dict[str, Any] = {
    "postgresql": postgres, "redis": redis, "kafka": kafka_cluster,  # one node, or kafka.brokers nodes
    "exporter": EXPORTER_SERVICE, "alertmanager": ALERTMANAGER_SERVICE, "prometheus": PROMETHEUS_SERVICE,
}  # fmt: skip
MONITORING = ("exporter", "alertmanager", "prometheus")


def services_for(mode: str) -> list[str]:
    if mode == "minimal":
        return ["postgresql"]
    return [name for name in ALL_SERVICES if mode == "full" or name not in MONITORING]


def _mode_file(cfg: FlowLensConfig):
    return cfg.state_dir / "run" / "stack.mode"


def recorded_mode(cfg: FlowLensConfig) -> str | None:
    path = _mode_file(cfg)
    mode = path.read_text().strip() if path.exists() else ""
    return mode if mode in MODES else None


@contextmanager
def _locked(cfg: FlowLensConfig) -> Iterator[None]:
    """One stack operation at a time (parallel test sessions may all call ``up`` at once)."""
    path = cfg.state_dir / "run" / "stack.lock"
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def up(cfg: FlowLensConfig, mode: str | None = None) -> None:
    """Bring the services of ``mode`` (default: the config's) up; idempotent."""
    mode = mode or cfg.mode
    with _locked(cfg):
        for name in services_for(mode):
            ALL_SERVICES[name].up(cfg.model_copy(update={"mode": mode}))  # the exporter reads what the mode runs
        _record_mode(cfg, mode)


def _record_mode(cfg: FlowLensConfig, mode: str) -> None:
    # Remember the widest mode started, so status after "up full; up minimal" still checks Kafka.
    previous = recorded_mode(cfg)
    if previous is None or len(services_for(mode)) >= len(services_for(previous)):
        _mode_file(cfg).parent.mkdir(parents=True, exist_ok=True)
        _mode_file(cfg).write_text(mode + "\n")


def status(cfg: FlowLensConfig, mode: str | None = None) -> dict[str, dict[str, object]]:
    """Health of each service of ``mode``: {"postgresql": {"healthy": bool, "detail": str, "pid": ...}}."""
    mode = mode or recorded_mode(cfg) or cfg.mode
    report: dict[str, dict[str, object]] = {}
    for name in services_for(mode):
        module = ALL_SERVICES[name]
        healthy, detail = module.health(cfg)
        report[name] = {"healthy": healthy, "detail": detail, "pid": module.running_pid(cfg)}
    return report


def down(cfg: FlowLensConfig, only: list[str] | None = None) -> list[str]:
    """Stop the services this stack started (all, or those in ``only``); Kafka first, PostgreSQL last."""
    with _locked(cfg):
        order = ("prometheus", "alertmanager", "exporter", "kafka", "redis", "postgresql")
        names = [name for name in order if only is None or name in only]
        stopped = [name for name in names if ALL_SERVICES[name].down(cfg)]
        if all(module.running_pid(cfg) is None for module in ALL_SERVICES.values()):
            _mode_file(cfg).unlink(missing_ok=True)
    return stopped


def _print_status(report: dict[str, dict[str, object]], as_json: bool) -> None:
    if as_json:
        print(json.dumps(report))
        return
    for name, entry in report.items():
        state = "healthy" if entry["healthy"] else "UNHEALTHY"
        owner = f"pid {entry['pid']}" if entry["pid"] else "not started by this stack"
        print(f"{name:<12} {state:<9} {entry['detail']} [{owner}]")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="flowlens stack",
        description="Start, check or stop the local PostgreSQL / Redis / Kafka stack, plus Prometheus, Alertmanager "
        "and the pipeline's metrics exporter in full mode (state under state_dir).",
    )
    parser.add_argument("--config", help="FlowLens YAML file (default: $FLOWLENS_CONFIG or ./flowlens.yaml)")
    sub = parser.add_subparsers(dest="action", required=True)
    up_p = sub.add_parser("up", help="install, start and wait for the services of a mode")
    up_p.add_argument("--mode", choices=MODES, help="default: the config's mode")
    st_p = sub.add_parser("status", help="check each service; exit 1 if one is unhealthy")
    st_p.add_argument("--mode", choices=MODES, help="default: the mode of the last `up`, else the config's")
    st_p.add_argument("--json", action="store_true", help="print one JSON object")
    sub.add_parser("down", help="stop the services this stack started")
    sub.add_parser(
        "topics",
        help="create or update the Kafka topics on kafka.bootstrap_servers (also an external cluster): "
        "partitions, retention, kafka.replication_factor, min.insync.replicas",
    )
    return parser


def main(argv: list[str]) -> int:
    args = _parser().parse_args(argv)
    try:
        cfg = load_config(args.config)
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return 2
    actions: dict[str, Callable[[], int]] = {
        "up": lambda: _up(cfg, args.mode),
        "status": lambda: _status(cfg, args.mode, args.json),
        "down": lambda: _down(cfg),
        "topics": lambda: _topics(cfg),
    }
    try:
        return actions[args.action]()
    except process.StackError as exc:
        print(f"flowlens stack {args.action}: {exc}", file=sys.stderr)
        return 1


def _up(cfg: FlowLensConfig, mode: str | None) -> int:
    up(cfg, mode)
    report = status(cfg, mode or cfg.mode)
    _print_status(report, as_json=False)
    return 0 if all(entry["healthy"] for entry in report.values()) else 1


def _status(cfg: FlowLensConfig, mode: str | None, as_json: bool) -> int:
    report = status(cfg, mode)
    _print_status(report, as_json)
    return 0 if all(entry["healthy"] for entry in report.values()) else 1


def _down(cfg: FlowLensConfig) -> int:
    stopped = down(cfg)
    print("stopped: " + (", ".join(stopped) if stopped else "nothing of ours was running"))
    return 0


def _topics(cfg: FlowLensConfig) -> int:
    require(cfg, ["kafka"], "flowlens stack topics")
    created = kafka_cluster.topics(cfg)
    print("created: " + (", ".join(created) if created else "none (all existed; settings reapplied)"))
    for name, info in kafka.describe_topics(cfg).items():
        print(f"{name:<24} partitions {info['partitions']:<3} replicas {info['replicas']} "
              f"min.insync.replicas {info['min.insync.replicas']} retention.ms {info['retention.ms']:<11} "
              f"{info['cleanup.policy']}")  # fmt: skip
    return 0
