"""``flowlens api`` (serve the query API) and ``flowlens users`` (API users and tokens)."""

from __future__ import annotations

import argparse
import getpass
import json
import os
import resource
import shutil
import sys

import psycopg

from ingest.config import ConfigError, FlowLensConfig, load_config
from ingest.services import ServiceUnavailable, needed, require


def check_services(cfg: FlowLensConfig, command: str) -> None:
    """Raise ServiceUnavailable (one line, with the command that fixes it) unless PostgreSQL with the
    API's migrations and, outside the minimal mode, Redis answer."""
    require(cfg, [s for s in needed(cfg) if s != "kafka"], command)
    try:
        with psycopg.connect(cfg.postgres.dsn(), connect_timeout=3) as conn:
            missing = conn.execute("SELECT to_regclass('flowlens.api_users')").fetchone()[0] is None
    except psycopg.OperationalError as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else "no answer"
        raise ServiceUnavailable(f"{command}: PostgreSQL refused the connection ({first})") from None
    if missing:
        raise ServiceUnavailable(f"{command}: the API's tables are missing; run `flowlens migrate`")


def raise_open_files() -> None:
    """1,000 WebSockets need more descriptors than the usual soft limit of 1,024: take the hard limit."""
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def serve(cfg: FlowLensConfig, workers: int) -> None:
    """Run uvicorn with ``workers`` processes; each builds the app from the same config (environment)."""
    import uvicorn

    metrics_dir = cfg.state_dir / "run" / f"api-metrics-{cfg.api.port}"
    shutil.rmtree(metrics_dir, ignore_errors=True)  # samples of a previous run's (dead) workers
    metrics_dir.mkdir(parents=True)
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(metrics_dir)
    raise_open_files()  # one descriptor per WebSocket client
    uvicorn.run(
        "flowlens_dagster.api.app:create_app",
        factory=True,
        host=cfg.api.host,
        port=cfg.api.port,
        workers=workers,
        log_level="warning",
        loop="uvloop",  # libuv's event loop and the C HTTP parser: much less Python per request
        http="httptools",
        access_log=False,  # one log line per request would cost more than a cached answer
        ws="websockets-sansio",
        ws_ping_interval=None,
    )


def api_main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="flowlens api", description="Serve the query API (docs at /docs).")
    parser.add_argument("--config", help="FlowLens YAML config (default: flowlens.yaml or $FLOWLENS_CONFIG)")
    parser.add_argument("--host", help="listen address (api.host, default 127.0.0.1)")
    parser.add_argument("--port", type=int, help="listen port (api.port, default 58080)")
    parser.add_argument("--workers", type=int, help="worker processes (api.workers)")
    parser.add_argument("--mode", choices=["minimal", "standard", "full", "auto"], help="minimal: no Redis")
    args = parser.parse_args(argv)
    # workers are separate processes that read the config from the environment: the options become
    # environment overrides, set in this process only when it goes on to serve
    options = {"FLOWLENS_API__HOST": args.host, "FLOWLENS_API__PORT": args.port, "FLOWLENS_MODE": args.mode}
    overrides = {key: str(value) for key, value in options.items() if value is not None}
    if args.config:
        overrides["FLOWLENS_CONFIG"] = os.path.abspath(args.config)
    try:
        cfg = load_config(environ={**os.environ, **overrides})
    except ConfigError as exc:
        print(f"flowlens api: {exc}", file=sys.stderr)
        return 2
    check_services(cfg, "flowlens api")
    workers = args.workers or cfg.api.workers
    if not cfg.uses_redis and workers > 1:
        # sessions, limits and the cache live in process without Redis: workers would not share them
        print(f"flowlens api: {cfg.mode} mode has no Redis; serving with 1 worker instead of {workers}", flush=True)
        workers = 1
    print(f"FlowLens API on http://{cfg.api.host}:{cfg.api.port}/api/v1 (docs /docs, mode {cfg.mode})", flush=True)
    os.environ.update(overrides)
    os.environ["FLOWLENS_API__WORKERS"] = str(workers)  # auto mode's Redis rule counts the processes
    serve(cfg, workers)
    return 0


def users_main(argv: list[str]) -> int:
    from flowlens_dagster.api import auth

    parser = argparse.ArgumentParser(prog="flowlens users", description="API users (roles viewer, admin) and tokens.")
    sub = parser.add_subparsers(dest="action", required=True)
    add = sub.add_parser("add", help="add a user (password from the terminal or, with --password-stdin, stdin)")
    add.add_argument("username")
    add.add_argument("--role", choices=auth.ROLES, default="viewer")
    add.add_argument("--password-stdin", action="store_true", help="read the password from stdin (scripts)")
    listing = sub.add_parser("list", help="list users")
    listing.add_argument("--json", action="store_true")
    remove = sub.add_parser("remove", help="remove a user and their tokens")
    remove.add_argument("username")
    token = sub.add_parser("token", help="create an API token for a user (printed once)")
    token.add_argument("username")
    token.add_argument("--name", default="automation", help="a label for the token")
    args = parser.parse_args(argv)
    cfg = load_config()
    dsn = cfg.postgres.dsn()
    check_services(cfg.model_copy(update={"mode": "minimal"}), "flowlens users")
    try:
        return _users_action(args, dsn, auth)
    except ValueError as exc:
        print(f"flowlens users: {exc}", file=sys.stderr)
        return 2


def _users_action(args: argparse.Namespace, dsn: str, auth) -> int:
    if args.action == "add":
        password = sys.stdin.readline().rstrip("\n") if args.password_stdin else _ask_password()
        user = auth.add_user(dsn, args.username, password, args.role)
        print(f"added {user.username} ({user.role}), id {user.id}")
    elif args.action == "list":
        rows = auth.list_users(dsn)
        if args.json:
            print(json.dumps(rows, default=str))
        for row in [] if args.json else rows:
            print(
                f"{row['id']:>5}  {row['username']:24} {row['role']:7} tokens {row['tokens']}"
                f"  since {row['created_at']:%Y-%m-%d}"
            )
    elif args.action == "remove":
        if not auth.remove_user(dsn, args.username):
            raise ValueError(f"no user {args.username!r}")
        print(f"removed {args.username}")
    else:
        print(auth.create_token(dsn, args.username, args.name))
    return 0


def _ask_password() -> str:
    first = getpass.getpass("password: ")
    if getpass.getpass("again: ") != first:
        raise ValueError("the passwords differ")
    return first
