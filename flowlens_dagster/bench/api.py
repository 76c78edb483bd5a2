"""``flowlens bench api [--json]``: the query API under load, next to the same queries straight on PostgreSQL.

Setup (not timed): database ``flowlens_bench_api`` (kept between runs; rebuilt when its size differs
or with ``--rebuild``) with ``--assets`` assets (default 100,000: the scaling model's "100k nodes") and
``--dependencies`` dependencies (default 1,000,000), written with COPY. Dependencies are skewed the way
real estates are: ``--servers`` addresses serve, a few of them very popular, and servers are also
clients of other servers, so impact queries reach several levels.

Then ``flowlens api`` is started as a user would start it (its own processes, Redis on; cache and
session databases 12 and 13 so a developer's own API cache in 2 and 3 is left alone; rate limits
lifted), and a separate load-generator process (``flowlens_dagster.bench.api_loadgen``) drives it with 64
concurrent connections, then runs the same mix through psycopg for the baseline, then measures the
WebSocket feed with 1,000 clients.
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
from pathlib import Path

import numpy as np
import psycopg

from flowlens_dagster.api.auth import add_user
from flowlens_dagster.bench import api_traffic
from flowlens_dagster.bench.report import report
from ingest.config import FlowLensConfig, load_config
from ingest.services import require

BENCH_DATABASE = "flowlens_bench_api"
BENCH_USER, BENCH_PASSWORD = "bench", "bench-password"
CACHE_DB, SESSION_DB = 12, 13
COMPARE_DBS = (10, 11)  # the --compare-source API's cache and sessions
PORTS = np.array([443, 80, 5432, 53, 8080, 6379, 22, 3306])
PROTOCOLS = np.where(PORTS == 53, 17, 6)
OWNERS = [f"team-{i}" for i in range(20)]
ENVIRONMENTS = ["prod", "staging", "dev", "test"]
COUNTRIES = ["DE", "FR", "US", "GB", "NL", "SE", "JP", "BR", "IN", "CA"]


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="flowlens bench api", description=__doc__.split("\n")[0])
    topology_args(parser)
    parser.add_argument("--seconds", type=float, default=20.0, help="duration of each load phase")
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument(
        "--paced-rate",
        "--rate",
        dest="rate",
        type=float,
        default=2000.0,
        help="requests/s offered in the latency phase (default the target; 80%% of requests_per_s when that is less)",
    )
    parser.add_argument("--ws", type=int, default=1000, help="WebSocket clients (0: skip that phase)")
    parser.add_argument(
        "--compare-source",
        help="another checkout of FlowLens (e.g. `git worktree add --detach ../flowlens-main main`): its API "
        "is started from there and driven the same way right after this one's (HTTP phases), figures in config.compare",
    )
    return parser.parse_args(argv)


def topology_args(parser: argparse.ArgumentParser) -> None:
    """Options of the bench database and the API over it (``flowlens bench api`` and ``bench console``)."""
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--assets", type=int, default=100_000)
    parser.add_argument("--dependencies", type=int, default=1_000_000)
    parser.add_argument("--servers", type=int, default=5_000)
    parser.add_argument("--workers", type=int, help="API worker processes (default api.workers)")
    parser.add_argument("--rebuild", action="store_true", help="rebuild the bench database")


def addresses(ids: np.ndarray) -> list[str]:
    return [f"10.{1 + i // 65536}.{i // 256 % 256}.{i % 256}" for i in ids.tolist()]


def dependency_edges(assets: int, servers: int, count: int, seed: int = 3) -> np.ndarray:
    """(client, server) index pairs, unique, no self-edges: every asset a client, servers Zipf-like."""
    rng = np.random.default_rng(seed)
    n = int(count * 1.15) + 1000
    clients = rng.integers(0, assets, n)
    servers_ = (servers * rng.random(n) ** 3).astype(np.int64)  # cubic skew: low indices are popular
    keys = np.unique(clients * assets + servers_)
    keys = keys[(keys // assets) != (keys % assets)]
    keys = rng.permutation(keys)[:count]
    keys.sort()
    return np.stack([keys // assets, keys % assets], axis=1)


def build(cfg: FlowLensConfig, args: argparse.Namespace) -> None:
    """Fill the bench database with COPY (not timed)."""
    ids = np.arange(args.assets)
    addrs = addresses(ids)
    edges = dependency_edges(args.assets, args.servers, args.dependencies)
    with psycopg.connect(cfg.postgres.dsn()) as conn:
        conn.execute("TRUNCATE flowlens.assets, flowlens.dependencies, flowlens.changes, flowlens.api_users CASCADE")
        with conn.cursor().copy(
            "COPY flowlens.assets (addr, name, hostname, owner, environment, tags, known, asn, country,"
            " first_seen, last_seen) FROM STDIN"
        ) as copy:
            for i, addr in zip(ids.tolist(), addrs, strict=True):
                role = "srv" if i < args.servers else "host"
                copy.write_row((addr, f"{role}-{i}", f"host-{i}.{ENVIRONMENTS[i % 4]}.example.com", OWNERS[i % 20],
                                ENVIRONMENTS[i % 4], [role, f"rack-{i % 40}"], True, 64512 + i % 50,
                                COUNTRIES[i % 10], "2026-11-01T00:00:00Z", "2026-11-26T00:00:00Z"))  # fmt: skip
        ports, protos = PORTS[edges[:, 1] % len(PORTS)], PROTOCOLS[edges[:, 1] % len(PORTS)]
        with conn.cursor().copy(
            "COPY flowlens.dependencies (client_addr, server_addr, server_port, protocol, first_seen, last_seen)"
            " FROM STDIN"
        ) as copy:
            for c, s, p, pr in zip(
                edges[:, 0].tolist(), edges[:, 1].tolist(), ports.tolist(), protos.tolist(), strict=True
            ):
                copy.write_row((addrs[c], addrs[s], p, pr, "2026-11-01T00:00:00Z", "2026-11-26T00:00:00Z"))
    with psycopg.connect(cfg.postgres.dsn(), autocommit=True) as conn:
        conn.execute("VACUUM ANALYZE flowlens.assets")
        conn.execute("VACUUM ANALYZE flowlens.dependencies")


def counts(cfg: FlowLensConfig) -> tuple[int, int]:
    with psycopg.connect(cfg.postgres.dsn()) as conn:
        return (
            conn.execute("SELECT count(*) FROM flowlens.assets").fetchone()[0],
            conn.execute("SELECT count(*) FROM flowlens.dependencies").fetchone()[0],
        )


def start_api(cfg: FlowLensConfig, workers: int | None, source: Path | None = None) -> subprocess.Popen:
    """``flowlens api`` on the bench database; with ``source``, the API of that source tree (another
    checkout: ``--compare-source``) on the next port, with Redis databases of its own."""
    unlimited = "1000000000"
    cache_db, session_db = COMPARE_DBS if source else (CACHE_DB, SESSION_DB)
    env = {
        **os.environ,
        "FLOWLENS_POSTGRES__DATABASE": BENCH_DATABASE,
        "FLOWLENS_MODE": "full",
        "FLOWLENS_API__CACHE_DB": str(cache_db),
        "FLOWLENS_API__SESSION_DB": str(session_db),
        "FLOWLENS_API__RATE_LIMIT_PER_USER": unlimited,
        "FLOWLENS_API__RATE_LIMIT_PER_ADDRESS": unlimited,
        "FLOWLENS_API__PORT": str(api_port(cfg, source)),
    }
    if source:
        env["PYTHONPATH"] = str(source)  # its packages before this checkout's (installed editable)
    argv = [str(Path(sys.executable).with_name("flowlens")), "api"] + (["--workers", str(workers)] if workers else [])
    log = cfg.state_dir / "logs" / ("bench-api-compare.log" if source else "bench-api.log")
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "ab") as out:
        proc = subprocess.Popen(argv, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://{cfg.api.host}:{api_port(cfg, source)}/api/v1/health"
    for _ in range(600):
        try:
            with urllib.request.urlopen(url, timeout=2):
                return proc
        except OSError:
            if proc.poll() is not None:
                raise RuntimeError(f"flowlens api exited; see {log}") from None
            time.sleep(0.1)
    raise RuntimeError(f"flowlens api did not answer on {url}; see {log}")


def api_port(cfg: FlowLensConfig, source: Path | None) -> int:
    return cfg.api.port + (1 if source else 0)


def login(cfg: FlowLensConfig, source: Path | None = None) -> str:
    request = urllib.request.Request(
        f"http://{cfg.api.host}:{api_port(cfg, source)}/api/v1/login",
        data=json.dumps({"username": BENCH_USER, "password": BENCH_PASSWORD}).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=30) as reply:
        return json.load(reply)["token"]


def prepare(base: FlowLensConfig, args: argparse.Namespace, command: str) -> FlowLensConfig:
    """The bench database (built when missing, of another size or with --rebuild), its user, and
    empty API Redis databases; returns the config that points at them (not timed)."""
    from flowlens_dagster.migrate import migrate
    from flowlens_dagster.stack import postgres as pg_stack

    cfg = base.model_copy(
        update={"mode": "full", "postgres": base.postgres.model_copy(update={"database": BENCH_DATABASE})}
    )
    require(base, ["postgres", "redis"], command)
    pg_stack.ensure_database(base, BENCH_DATABASE)
    migrate(cfg, log=lambda _message: None)
    rebuilt = args.rebuild or counts(cfg) != (args.assets, args.dependencies)
    if rebuilt:
        print(f"building {args.assets:,} assets and {args.dependencies:,} dependencies (COPY)", file=sys.stderr)
        build(cfg, args)
    if rebuilt or not api_traffic.has_traffic(cfg):
        print("writing the dependencies' traffic (flow_stats, hourly and daily rollups)", file=sys.stderr)
        api_traffic.fill(cfg)
    with psycopg.connect(cfg.postgres.dsn()) as conn:
        conn.execute("DELETE FROM flowlens.api_users WHERE username = %s", (BENCH_USER,))
    add_user(cfg.postgres.dsn(), BENCH_USER, BENCH_PASSWORD, "viewer")
    import redis

    for db in (CACHE_DB, SESSION_DB, *COMPARE_DBS):
        redis.Redis.from_url(cfg.redis.url(db)).flushdb()
    return cfg


def drive(cfg: FlowLensConfig, args: argparse.Namespace, source: Path | None) -> dict:
    """Start the API (this checkout's, or ``source``'s), run the load generator on it, stop it."""
    api = start_api(cfg, args.workers, source)
    try:
        loadgen = [sys.executable, "-m", "flowlens_dagster.bench.api_loadgen",
                   "--url", f"http://{cfg.api.host}:{api_port(cfg, source)}",
                   "--token", login(cfg, source), "--dsn", cfg.postgres.dsn(), "--redis-url", cfg.redis.url(0),
                   "--assets", str(args.assets), "--servers", str(args.servers), "--seconds", str(args.seconds),
                   "--connections", str(args.connections), "--paced-rate", str(args.rate),
                   "--ws", str(0 if source else args.ws),
                   "--pg-connections", str((args.workers or cfg.api.workers) * cfg.api.pg_pool_size)]  # fmt: skip
        if source:
            loadgen.append("--no-direct")
        print(f"load{' on ' + str(source) if source else ''}: {args.connections} connections: warm-up, "
              f"{args.seconds:g} s back to back, {args.seconds:g} s at {args.rate:g}/s"
              + ("" if source else f"; then psycopg; then {args.ws} WebSockets"), file=sys.stderr)  # fmt: skip
        return json.loads(subprocess.run(loadgen, check=True, capture_output=True, text=True).stdout)
    finally:
        os.killpg(api.pid, signal.SIGTERM)
        api.wait(timeout=60)


def comparison(measured: dict, compared: dict, source: str) -> dict:
    """The other checkout's figures under the same load generator, and ours / theirs: requests/s, the
    back-to-back p99s, and the paced p99s when both were offered the same rate (when one was paced at
    a share of its own capacity instead, its paced p99s are not comparable and their ratio is left out)."""
    rate = round(compared["requests"] / compared["seconds"], 1)
    ours = round(measured["requests"] / measured["seconds"], 1)
    saturated = {**compared["saturated"], "mixed": compared["saturated_mixed_p99_ms"]}
    mine = {**measured["saturated"], "mixed": measured["saturated_mixed_p99_ms"]}
    return {
        "source": source,
        "requests_per_s": rate,
        "saturated_p99_ms": saturated,
        "p99_ms": paced(compared),
        "latency_rate_per_s": compared["paced_rate"],
        "paced_offered_per_s": compared["paced_offered_per_s"],
        "paced_achieved_per_s": compared["paced_achieved_per_s"],
        "paced_at": compared["paced_at"],
        "errors": compared["errors"],
        "error_kinds": compared["error_kinds"],
        "ratio": {
            "requests_per_s": round(ours / rate, 3) if rate else None,
            **{f"saturated_{k}": v for k, v in _ratios(mine, saturated).items()},
            **(_ratios(paced(measured), paced(compared)) if measured["paced_rate"] == compared["paced_rate"] else {}),
        },
    }


def paced(measured: dict) -> dict:
    return {**measured["api"], "mixed": measured["api_mixed_p99_ms"]}


def _ratios(mine: dict, theirs: dict) -> dict:
    return {f"{k}_p99_ms": round(mine[k] / v, 3) if v and mine[k] else None for k, v in theirs.items()}


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    setup = time.perf_counter()
    cfg = prepare(load_config(), args, "flowlens bench api")
    setup_seconds = round(time.perf_counter() - setup, 1)
    load_start = round(os.getloadavg()[0], 2)  # the machine may be shared: say how busy it was
    measured = drive(cfg, args, None)
    compared = drive(cfg, args, Path(args.compare_source).resolve()) if args.compare_source else None
    assets, dependencies = counts(cfg)
    figures = {
        "assets": assets,
        "dependencies": dependencies,
        "search_p99_ms": measured["api"]["search"],
        "impact_p99_ms": measured["api"]["impact"],
        "topology_filtered_p99_ms": measured["api"]["topology_filtered"],
        "topology_full_p99_ms": measured["api"]["topology_full"],
        "asset_p99_ms": measured["api"]["asset"],
        "mixed_p99_ms": measured["api_mixed_p99_ms"],
        "requests_per_s": round(measured["requests"] / measured["seconds"], 1),
        "paced_offered_per_s": measured["paced_offered_per_s"],
        "paced_achieved_per_s": measured["paced_achieved_per_s"],
        "paced_at": measured["paced_at"],
        "ws_delivery_p99_ms": measured["ws_delivery_p99_ms"],
        "error_ratio": round((measured["errors"] + measured["ws_lost"]) / max(measured["requests"], 1), 6),
    }
    direct = measured["direct"]
    baseline = {
        "search_p99_ms": direct["search"],
        "impact_p99_ms": direct["impact"],
        "topology_filtered_p99_ms": direct["topology_filtered"],
        "topology_full_p99_ms": direct["topology_full"],
        "asset_p99_ms": direct["asset"],
        "mixed_p99_ms": measured["direct_mixed_p99_ms"],
        "postgres_direct_p99_ms": measured["direct_mixed_p99_ms"],
        "requests_per_s": round(measured["direct_requests"] / args.seconds, 1),
    }
    config = {
        "baseline": "the same query mix through the API's query functions on psycopg (no HTTP, no cache), same run",
        "method": "HTTP: every distinct request once (untimed warm-up), then back to back for requests_per_s, "
        "then open loop at paced_offered_per_s for the *_p99_ms figures (request i due at i / rate, sent on "
        "the next idle connection, latency from when it was due): --paced-rate (default 2,000, the target), "
        "or 80% of requests_per_s when that is less (paced_at says which); "
        "saturated_p99_ms: the back-to-back phase's",
        "database": BENCH_DATABASE,
        "workers": args.workers or cfg.api.workers,
        "connections": args.connections,
        "seconds_per_phase": args.seconds,
        "latency_rate_per_s": measured["paced_rate"],
        "latency_rate_asked_per_s": args.rate,
        "latency_phase_requests": measured["paced_requests"],
        "saturated_p99_ms": {**measured["saturated"], "mixed": measured["saturated_mixed_p99_ms"]},
        "websocket_clients": args.ws,
        "ws_deliveries": measured["ws_deliveries"],
        "ws_lost": measured["ws_lost"],
        "http_errors": measured["errors"],
        "http_error_kinds": measured["error_kinds"],
        "mix": "search 30%, impact depth 3 20%, filtered topology 30%, full topology 10%, asset detail 10%",
        "setup_seconds_untimed": setup_seconds,
        "load_average_1m": {"start": load_start, "end": round(os.getloadavg()[0], 2)},
        **({"compare": comparison(measured, compared, args.compare_source)} if compared else {}),
        "targets": "search/impact p99 <= 25 ms, filtered topology <= 50 ms, full topology <= 100 ms, "
        ">= 2000 requests/s, ws delivery p99 <= 250 ms, error ratio 0 (2 cores, load generator included)",
    }
    report("api", figures, baseline, config, args.json)
    return 0
