"""``flowlens bench pipeline [--json]``: one 5-minute window from the landing to PostgreSQL, timed by stage.

Setup (not timed): a throwaway database ``flowlens_pipeline_bench_<pid>`` (migrated, dropped at the
end, so concurrent benches never share one) and, for ``--landing kafka``, a fresh topic; ``--flows``
synthetic flows (default 15 million = 50,000 flows/s for 300 s) landed in one window through the
real landing API. A realistic mix: ``--pairs`` client/server/port pairs, half of the flows are the
server's replies (so direction matters), tens of thousands of addresses. The flows are generated
and landed one batch of a million at a time, in a child process: the bench process itself never
holds them, so its peak RSS is the window's.

Memory: ``peak_rss_mb`` is ``ru_maxrss`` of the bench process right after the pipeline stages (the
setup ran in its child, which ``RUSAGE_SELF`` does not count), ``rss_mb_per_million_flows`` that
divided by the window's millions of flows; ``peak_rss_with_checks_mb`` the same after the checks.
``--chunk-flows`` and ``--shards`` override ``pipeline.chunk_flows`` and ``pipeline.shards``.
``--shard-steps N`` then runs ``flow_stats`` twice more on the same lake, each from an empty table:
in one step (``flow_stats_in_step_seconds``, wall time) and as a real Dagster run of one step per
shard and a commit step under the multiprocess executor (N steps at once;
``flowlens_dagster.bench.shard_steps``): ``shard_steps_seconds`` (the run's wall time, process
start-ups included) and ``shard_steps_critical_path_seconds`` (the plan, slowest shard and commit
steps' own durations) against the in-step run, and ``window_seconds_shard_steps`` (the window with
the shard-steps run in place of the first in-step ``flow_stats``) against ``window_seconds``.

Timed, on the same code the Dagster assets run: read the window from the landing, enrich (no
reverse DNS: the network is not what is measured), write the lake, aggregate ``flow_stats`` and
replace the window in PostgreSQL (the upsert rate), merge network assets and dependencies, detect
changes, then every asset check registered for these assets (``check_seconds``).

Baseline: the scaling model's PostgreSQL write capacity, 35,000 upserts/s (labelled ``seed``).
Targets on 2 cores: 15M flows: ``window_seconds`` <= 40, ``peak_rss_mb`` <= 2,000 with either landing;
60M flows: ``window_seconds`` <= 240, ``peak_rss_mb`` <= 3,000; ``upsert_rows_per_s`` >= 500,000.
"""

import argparse
import contextlib
import multiprocessing
import os
import resource
import sys
import time
import uuid
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime, timedelta

import numpy as np
import pyarrow as pa

from assets import changes, enriched_flows, flow_stats, topology
from flowlens_dagster.bench.report import report
from ingest.addresses import V4_PREFIX_BYTES
from ingest.config import load_config
from ingest.schema import FLOW_SCHEMA
from ingest.services import require

SEED_UPSERTS_PER_S = 35_000
BENCH_DATABASE = f"flowlens_pipeline_bench_{os.getpid()}"
BATCH_ROWS = 1_000_000


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="flowlens bench pipeline", description=__doc__.split("\n\n")[0])
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--flows", type=int, default=15_000_000, help="flows in the window (default 15M)")
    parser.add_argument("--pairs", type=int, default=1_000_000, help="distinct client/server/port pairs")
    parser.add_argument("--landing", choices=["postgres", "kafka"], default=None, help="default: the mode's")
    parser.add_argument("--no-checks", action="store_true", help="skip the asset checks (check_seconds null)")
    parser.add_argument("--keep", action="store_true", help="keep the bench database/topic contents")
    parser.add_argument("--chunk-flows", type=int, default=None, help="override pipeline.chunk_flows")
    parser.add_argument("--shards", type=int, default=None, help="override pipeline.shards")
    parser.add_argument(
        "--shard-steps",
        type=int,
        default=0,
        metavar="N",
        help="then run flow_stats again as a Dagster run of one step per shard, N steps at once (0: skip)",
    )
    return parser.parse_args(argv)


def _fixed16(raw: np.ndarray) -> pa.Array:
    """An (n, 16) uint8 array as a 16-byte fixed-size binary Arrow array."""
    return pa.FixedSizeBinaryArray.from_buffers(pa.binary(16), len(raw), [None, pa.py_buffer(raw.tobytes())])


def _addresses(ids: np.ndarray, net: int) -> np.ndarray:
    """IPv4-mapped addresses 10.<net>.x.y from integer ids, as (n, 16) bytes."""
    raw = np.zeros((len(ids), 16), np.uint8)
    raw[:, :12] = V4_PREFIX_BYTES
    raw[:, 12] = 10
    raw[:, 13] = net
    raw[:, 14] = (ids >> 8) & 0xFF
    raw[:, 15] = ids & 0xFF
    return raw


def _ts(micros: np.ndarray) -> pa.Array:
    return pa.array(micros, pa.int64()).cast(FLOW_SCHEMA.field("receive_time").type)


def synthetic_window(window: datetime, n: int, pairs: int, seed: int = 5) -> Iterator[pa.RecordBatch]:
    """``n`` flows received in ``window``: client -> server:port conversations and their replies.

    Generated lazily, ``BATCH_ROWS`` at a time, so landing them holds one batch in memory."""
    rng = np.random.default_rng(seed)
    services = np.array([443, 80, 53, 22, 3306, 5432, 6379, 8080, 9092, 123], np.uint16)
    protocols = np.where(np.isin(services, [53, 123]), 17, 6).astype(np.uint8)
    pair_client = rng.integers(0, 60_000, pairs)
    pair_server = rng.integers(0, 4_000, pairs)
    pair_service = rng.integers(0, len(services), pairs)
    start_us = int(window.timestamp() * 1e6)
    for offset in range(0, n, BATCH_ROWS):
        m = min(BATCH_ROWS, n - offset)
        pair = rng.integers(0, pairs, m)
        reply = (rng.random(m) < 0.5)[:, None]
        client, server = _addresses(pair_client[pair], 1), _addresses(pair_server[pair], 2)
        service = services[pair_service[pair]]
        proto = protocols[pair_service[pair]]
        ephemeral = rng.integers(32768, 61000, m).astype(np.uint16)
        lo, hi = offset * 300_000_000 // n, (offset + m) * 300_000_000 // n
        receive = start_us + np.sort(rng.integers(lo, max(hi, lo + 1), m))
        packets = rng.integers(1, 200, m).astype(np.uint64)
        cols = {
            "receive_time": _ts(receive),
            "exporter": _fixed16(_addresses(np.zeros(m, np.int64), 0)),
            "observation_domain": pa.array(np.zeros(m, np.uint32)),
            "flow_version": pa.array(np.full(m, 10, np.uint8)),
            "flow_start": _ts(receive - 20_000_000),
            "flow_end": _ts(receive - 1_000_000),
            "src_addr": _fixed16(np.where(reply, server, client)),
            "dst_addr": _fixed16(np.where(reply, client, server)),
            "src_port": pa.array(np.where(reply[:, 0], service, ephemeral)),
            "dst_port": pa.array(np.where(reply[:, 0], ephemeral, service)),
            "protocol": pa.array(proto),
            "tcp_flags": pa.array(np.where(proto == 6, 0x1B, 0).astype(np.uint16)),
            "bytes": pa.array(packets * rng.integers(60, 1400, m).astype(np.uint64)),
            "packets": pa.array(packets),
            "sampling_rate": pa.array(np.ones(m, np.uint32)),
        }
        arrays = [cols.get(f.name, pa.nulls(m, f.type)) for f in FLOW_SCHEMA]
        yield pa.RecordBatch.from_arrays(arrays, schema=FLOW_SCHEMA)


def peak_rss_mb() -> float:
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


def bench_config(args: argparse.Namespace):
    """The config with the bench's own database, topic and lake; no reverse DNS."""
    cfg = load_config()
    landing = args.landing or ("kafka" if cfg.uses_kafka else "postgres")
    pipeline = {"lake_dir": cfg.state_dir / "bench" / BENCH_DATABASE}
    if args.chunk_flows:
        pipeline["chunk_flows"] = args.chunk_flows
    if args.shards:
        pipeline["shards"] = args.shards
    return cfg.model_copy(
        update={
            "mode": "standard" if landing == "kafka" else "minimal",
            "postgres": cfg.postgres.model_copy(update={"database": BENCH_DATABASE}),
            "kafka": cfg.kafka.model_copy(update={"raw_topic": f"flows.raw.bench.{uuid.uuid4().hex[:8]}"}),
            "dns": cfg.dns.model_copy(update={"enabled": False}),
            "pipeline": cfg.pipeline.model_copy(update=pipeline),
        }
    )


def prepare_in_child(cfg, window: datetime, flows: int, pairs: int) -> None:
    """:func:`prepare` with the synthetic flows, in a child process (its memory is not the bench's peak)."""
    context = multiprocessing.get_context("spawn")  # a fresh interpreter: nothing of ours is copied
    child = context.Process(target=_prepare_synthetic, args=(cfg, window, flows, pairs), name="bench-setup")
    child.start()
    child.join()
    if child.exitcode != 0:
        raise RuntimeError(f"bench setup failed (exit code {child.exitcode}); its error is printed above")


def _prepare_synthetic(cfg, window: datetime, flows: int, pairs: int) -> None:
    prepare(cfg, synthetic_window(window, flows, pairs), window)


def prepare(cfg, batches: Iterable[pa.RecordBatch], window: datetime) -> None:
    """Migrate and empty the bench database, create the bench topic, land the window (not timed)."""
    import psycopg

    from flowlens_dagster.migrate import migrate
    from flowlens_dagster.stack import postgres as pg_stack
    from ingest.land import open_landing

    pg_stack.ensure_database(cfg, cfg.postgres.database)  # BENCH_DATABASE is per pid: not here
    migrate(cfg, log=lambda _message: None)
    with psycopg.connect(cfg.postgres.dsn(), autocommit=True) as conn:
        conn.execute("SET lock_timeout = '30s'")  # a stuck earlier run must fail this one clearly, not hang it
        conn.execute(f"TRUNCATE {', '.join('flowlens.' + t for t in BENCH_TABLES)}")
    if cfg.uses_kafka:
        _create_topic(cfg)
    landing = open_landing(cfg)
    landed = 0
    try:
        for batch in batches:
            landing.write(batch)
            landed += batch.num_rows
        landing.heartbeat("bench", window + timedelta(minutes=5), landed)
    finally:
        landing.close()


BENCH_TABLES = ("flow_raw", "flow_stats", "assets", "dependencies", "changes", "window_loads")


def _create_topic(cfg) -> None:
    from confluent_kafka.admin import NewTopic

    from flowlens_dagster.stack import kafka as kafka_stack

    admin = kafka_stack.admin(cfg)
    admin.create_topics([NewTopic(cfg.kafka.raw_topic, cfg.kafka.raw_partitions, 1)])[cfg.kafka.raw_topic].result(30)


def cleanup(cfg) -> None:
    """Drop the bench database (our own connections closed first), lake and topic."""
    import shutil

    from flowlens_dagster.checks.gx_runner import RUNNER
    from flowlens_dagster.stack.postgres import drop_database

    RUNNER.close_connections()
    drop_database(cfg, BENCH_DATABASE)
    shutil.rmtree(cfg.lake_dir, ignore_errors=True)
    if cfg.uses_kafka:
        _drop_topic(cfg)


def cleanup_reporting(cfg) -> None:
    """``cleanup`` that never hides the figures already measured: a failure is one line on stderr."""
    try:
        cleanup(cfg)
    except Exception as exc:  # any failure here must leave the report intact
        print(
            f"bench cleanup failed ({type(exc).__name__}: {exc}); the next bench run empties database"
            f" {BENCH_DATABASE} again, or drop it: FLOWLENS_POSTGRES__DATABASE=postgres flowlens sql"
            f" 'DROP DATABASE {BENCH_DATABASE}'",
            file=sys.stderr,
        )


def _drop_topic(cfg) -> None:
    from flowlens_dagster.stack import kafka as kafka_stack

    admin = kafka_stack.admin(cfg)
    for topic in (cfg.kafka.raw_topic, f"{cfg.kafka.raw_topic}.watermarks", f"{cfg.kafka.raw_topic}.landed"):
        with contextlib.suppress(Exception):  # the watermark topic may not exist: nothing to clean then
            admin.delete_topics([topic])[topic].result(30)


def run_checks(cfg, window: datetime) -> dict:
    """Every 5-minute asset check of the window (``flowlens_dagster.checks.run_window_checks``)."""
    from assets.resources import build_resources
    from flowlens_dagster.checks import run_window_checks

    return run_window_checks(window, build_resources(cfg, use_env=False))


def run_window(cfg, window: datetime) -> dict[str, float]:
    """Every pipeline stage for the window, on the assets' own code; per-stage seconds and counts."""
    from assets.resources import build_resources
    from ingest.land import open_landing

    res = build_resources(cfg, use_env=False)
    lake, postgres, enrichment = res["lake"], res["postgres"], res["enrichment"]
    inventory = enrichment.inventory()
    enricher = enrichment.enricher(inventory)
    landing = open_landing(cfg)
    try:
        enriched = enriched_flows.process_window(
            window, landing, lake, None, postgres, None, "bench", inventory, enricher
        )
    finally:
        landing.close()
    stats = flow_stats.process_window(window, lake, postgres, "bench")
    addresses = topology.process_assets_window(window, lake, postgres, "bench")
    deps = topology.process_dependencies_window(window, postgres, "bench")
    detected = changes.process_window(window, postgres, gone_after=cfg.pipeline.dependency_gone_after_windows)
    stages = {
        "read_seconds": enriched.seconds["read"],
        "enrich_seconds": enriched.seconds["enrich"],
        "write_lake_seconds": enriched.seconds["write_lake"],
        "aggregate_seconds": stats.seconds["aggregate"],
        "write_pg_seconds": stats.seconds["write_pg"],
        "assets_seconds": sum(addresses.seconds.values()),
        "dependencies_seconds": sum(deps.seconds.values()),
        "changes_seconds": sum(detected.seconds.values()),
    }
    return {
        "flows": enriched.rows_read,
        "flow_stats_rows": stats.rows_written,
        "assets": addresses.rows_read,
        "dependencies": deps.rows_written,
        "changes": detected.rows_written,
        **stages,
        "window_seconds": round(sum(stages.values()), 3),
        "upsert_rows_per_s": round(stats.rows_written / max(stats.seconds["write_pg"], 1e-9), 1),
    }


def empty_flow_stats(cfg) -> None:
    """TRUNCATE the bench database's flow_stats (one window): no dead rows left for the next write."""
    import psycopg

    with psycopg.connect(cfg.postgres.dsn(), autocommit=True) as conn:
        conn.execute("TRUNCATE flowlens.flow_stats")


def shard_steps_figures(cfg, window: datetime, step_processes: int, figures: dict) -> dict[str, float]:
    """Run ``flow_stats`` again on the lake the window just wrote, in one step (``flow_stats_in_step_seconds``,
    wall time) then through its shard steps (a real Dagster run, multiprocess executor), each from an
    empty table; add the figures to ``figures`` and return their baselines (the in-step run)."""
    from assets.resources import build_resources
    from flowlens_dagster.bench.shard_steps import run_shard_steps

    res = build_resources(cfg, use_env=False)
    print("running flow_stats again in one step, then as shard steps", file=sys.stderr)
    empty_flow_stats(cfg)  # both start from the empty table the window's first write met
    started = time.perf_counter()
    flow_stats.process_window(window, res["lake"], res["postgres"], "bench")
    in_step = round(time.perf_counter() - started, 3)
    empty_flow_stats(cfg)
    steps = run_shard_steps(cfg, window, step_processes)
    if steps["shard_steps_rows"] != figures["flow_stats_rows"]:
        raise RuntimeError(
            f"shard steps wrote {steps['shard_steps_rows']:,} rows, one step {figures['flow_stats_rows']:,}"
        )
    figures.update(steps)
    figures["flow_stats_in_step_seconds"] = in_step
    figures["window_seconds_shard_steps"] = round(figures["window_seconds"] - in_step + steps["shard_steps_seconds"], 3)
    return {
        "shard_steps_seconds": in_step,
        "shard_steps_critical_path_seconds": in_step,
        "window_seconds_shard_steps": figures["window_seconds"],
    }


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    cfg = bench_config(args)
    require(cfg, ["postgres", "kafka"] if cfg.uses_kafka else ["postgres"], "flowlens bench pipeline")
    baseline: dict[str, float] = {"upsert_rows_per_s": SEED_UPSERTS_PER_S}
    now = datetime.now(UTC)
    window = (now - timedelta(hours=1)).replace(minute=now.minute - now.minute % 5, second=0, microsecond=0)
    try:
        setup_started = time.perf_counter()
        prepare_in_child(cfg, window, args.flows, args.pairs)
        setup_seconds = round(time.perf_counter() - setup_started, 1)
        figures = run_window(cfg, window)
        figures["flows_per_s"] = round(figures["flows"] / figures["window_seconds"], 1)
        figures["peak_rss_mb"] = peak_rss_mb()
        figures["rss_mb_per_million_flows"] = round(figures["peak_rss_mb"] / max(figures["flows"] / 1e6, 1e-6), 1)
        print(f"pipeline stages done in {figures['window_seconds']} s; running the asset checks", file=sys.stderr)
        checks = {"check_seconds": None, "checks": 0, "passed": None, "failed": {}, "per_check_seconds": {}}
        if not args.no_checks:
            checks = run_checks(cfg, window)
        figures["check_seconds"] = checks["check_seconds"]
        # The checks' budget (README "Data quality"): under a fifth of the window's processing time.
        if checks["check_seconds"] is not None:
            figures["check_share_of_window"] = round(checks["check_seconds"] / figures["window_seconds"], 3)
        figures["peak_rss_with_checks_mb"] = peak_rss_mb()
        if args.shard_steps:
            baseline.update(shard_steps_figures(cfg, window, args.shard_steps, figures))
    finally:
        if not args.keep:
            cleanup_reporting(cfg)
    report(
        "pipeline",
        figures,
        baseline,
        {
            "baseline": "seed §3: 35,000 PostgreSQL upserts/s (the scaling model's figure, not a run); with"
            " --shard-steps, shard_steps_seconds against this run's in-step flow_stats (aggregate + write_pg)"
            " and window_seconds_shard_steps against its window_seconds",
            "shard_steps": args.shard_steps,
            "landing": cfg.kafka.raw_topic if cfg.uses_kafka else "postgres:flowlens.flow_raw",
            "database": BENCH_DATABASE,
            "pairs": args.pairs,
            "chunk_flows": cfg.pipeline.chunk_flows,
            "shards": cfg.pipeline.shards,
            "window": window.isoformat(),
            "setup_seconds_untimed": setup_seconds,
            "checks": f"{checks['checks']} checks, passed={checks['passed']}, failed={sorted(checks['failed'])}",
            "per_check_seconds": checks["per_check_seconds"],
            "landing_check_seconds": checks.get("landing_check_seconds"),
            "target": "15M: window_seconds <= 40, peak_rss_mb <= 2000; 60M: <= 240 s, <= 3000 MB;"
            " upsert_rows_per_s >= 500000 (2 cores)",
        },
        args.json,
    )
    return 0
