"""``flowlens plan``: the scaling model's capacity plan for a flow rate, a burst and an API load.

Given a steady flow rate, a burst (peak rate, duration), a retention, concurrent API users and an
API p99 latency SLA, :func:`make_plan` returns the mode and, per component, instances, cores and
memory; Kafka brokers, partitions and disk per topic; PostgreSQL table sizes per day; Redis
memory; and the burst's backlog and predicted drain time (the model's continuous §6.2 figure, and
the windowed one of :mod:`ingest.scaling.drain`, as the 5-minute pipeline drains). Figures come from the scaling model
(§2 record sizes, §3 PostgreSQL, §4 Kafka, §5 Redis, §6 scenarios, §7 thresholds, §10 rules of
thumb) and, where this machine has them, from its own measurements: the JSON files that
``flowlens bench`` saves under ``<state_dir>/bench/`` (see :mod:`ingest.scaling.figures`). Every
figure used is listed with its source, and rules of thumb more than a factor of two away from
what this project measured are flagged.

Pure computation: ``make_plan(PlanInput, thresholds..., bench results)``; the command only reads
the config and the bench files, and prints a table or ``--json``.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ingest.config import ConfigError, FlowLensConfig, load_config
from ingest.scaling.drain import burst_shape, pipeline_from, predict_drain, run_overhead_from
from ingest.scaling.figures import bench_dir, load_results
from ingest.schema import FLOW_SCHEMA, ROUTING_COLUMNS

WINDOW_SECONDS = 300
DAY = 86_400
GB = 1024**3
MB = 1024**2

# Scaling model figures (section in the comment): used when this machine has no measurement.
MODEL_INGEST_PER_INSTANCE = 25_000  # §10.1: 1 ingestion instance = 25k flows/s (2 cores, 2 GB: §6.1)
MODEL_PG_WRITES = 50_000  # §10.1 / §3.1: batched inserts per second
MODEL_UPSERTS = 35_000  # §3.1: flow_stats UPSERTs per second (10k unique pairs/s)
MODEL_BROKER = 200_000  # §10.1: 1 Kafka broker = 200k flows/s
MODEL_PIPELINE_PER_WORKER = 12_500  # §6.1: 4 enrichment + 4 resolution instances for 50k flows/s
MODEL_FLOW_BYTES = 150  # §2.1 normalized record
# flow_raw_batches (minimal mode): every landed batch again, as the lz4 Arrow IPC stream the
# pipeline reads (README "Reading a window from PostgreSQL"); measured, not a model figure:
# pg_total_relation_size per flow of the 15M-flow window of `flowlens bench pipeline --keep`
# (34.6 bytes, flow_raw itself 141: generated flows; real traffic was not measured).
BATCH_FLOW_BYTES = 35
MODEL_ENRICHED_BYTES = 400  # §2.1
MODEL_SUMMARY_BYTES = 200  # §2.1 aggregated connection summary (a flow_stats row)
MODEL_PAIRS_PER_FLOW_RATE = 5  # §3.2: 10k flows/s <-> 50k unique pairs per 5-minute window
KAFKA_RF = 2  # §4.2
RAW_RETENTION_DAYS, ENRICHED_RETENTION_DAYS = 7, 1  # §4.2
IPC_COMPRESSION_RATIO = 2.4  # ingest.land.kafka: LZ4 Arrow IPC messages are 2.4x smaller than raw
UTILIZATION_TARGET = 0.5  # §3.2: 50% utilization leaves headroom for queries, maintenance, bursts
FAR = 2.0  # a rule of thumb this many times off the measurement is flagged


class PlanError(ValueError):
    """Inputs no plan can satisfy; the message says which and why."""


@dataclass(frozen=True)
class PlanInput:
    flows_per_sec: float
    burst_peak_flows_per_sec: float = 0.0  # 0: no burst
    burst_seconds: float = 0.0
    retention_days: int = 30
    api_users: int = 0
    api_p99_ms: float = 500.0
    websocket: bool = False
    pairs_per_window: int | None = None  # unique (client, server, port, protocol) per window; None: §3.2

    def check(self) -> None:
        """Raise :class:`PlanError` for figures that cannot describe a real deployment."""
        numbers = {
            "--rate": self.flows_per_sec,
            "--burst-peak": self.burst_peak_flows_per_sec,
            "--burst-seconds": self.burst_seconds,
            "--api-p99-ms": self.api_p99_ms,
        }
        for name, value in numbers.items():
            if not math.isfinite(value) or value < 0:
                raise PlanError(f"{name} {value} must be a finite number >= 0")
        if self.burst_peak_flows_per_sec and self.burst_peak_flows_per_sec < self.flows_per_sec:
            raise PlanError(
                f"--burst-peak {self.burst_peak_flows_per_sec:,.0f} is below the steady --rate "
                f"{self.flows_per_sec:,.0f}: a burst is a peak above the steady rate"
            )
        if bool(self.burst_peak_flows_per_sec) != bool(self.burst_seconds):
            raise PlanError("a burst needs both --burst-peak (flows/s) and --burst-seconds")
        if self.burst_seconds > RAW_RETENTION_DAYS * DAY:
            raise PlanError(
                f"--burst-seconds {self.burst_seconds:,.0f} exceeds flows.raw's {RAW_RETENTION_DAYS}-day retention: "
                "that is a new steady rate, plan for it with --rate"
            )
        if self.retention_days < 1:
            raise PlanError(f"--retention-days {self.retention_days} must be >= 1")
        if self.api_users < 0:
            raise PlanError(f"--users {self.api_users} must be >= 0")
        if self.api_p99_ms < 1:
            raise PlanError(
                f"--api-p99-ms {self.api_p99_ms} is below 1 ms: no PostgreSQL or Redis round trip is that fast"
            )
        if self.pairs_per_window is not None and self.pairs_per_window < 0:
            raise PlanError(f"--pairs-per-window {self.pairs_per_window} must be >= 0")

    @property
    def peak(self) -> float:
        return max(self.flows_per_sec, self.burst_peak_flows_per_sec)

    @property
    def pairs(self) -> int:
        if self.pairs_per_window is not None:
            return self.pairs_per_window
        return int(self.flows_per_sec * MODEL_PAIRS_PER_FLOW_RATE)


@dataclass
class Figure:
    value: float
    source: str  # "measured: <file> figures.<name>" or "scaling model §N"


@dataclass
class Plan:
    mode: str
    reasons: list[str]
    inputs: dict[str, Any]
    components: dict[str, dict[str, Any]]
    kafka: dict[str, Any]
    postgres: dict[str, Any]
    redis: dict[str, Any]
    burst: dict[str, Any]
    totals: dict[str, Any]
    figures: dict[str, dict[str, Any]]
    flags: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def flow_record_bytes() -> int:
    """Bytes of one flow in Arrow (fixed-width columns plus a validity bit per nullable column). The
    sFlow routing columns (next hop, AS path, communities) are left out: null for NetFlow/IPFIX."""
    fields = [f for f in FLOW_SCHEMA if f.name not in ROUTING_COLUMNS]
    width = sum(f.type.byte_width for f in fields)
    nullable = sum(f.nullable for f in fields)
    return width + math.ceil(nullable / 8)


def machine_figures(results: dict[str, dict[str, Any]]) -> dict[str, Figure]:
    """The figures the plan sizes with: this machine's bench results where present, else the model's."""

    def measured(bench: str, name: str) -> tuple[float, str] | None:
        data = results.get(bench)
        value = (data or {}).get("figures", {}).get(name)
        if isinstance(value, int | float) and value > 0:
            return float(value), f"measured: {data.get('_path', bench + '.json')} figures.{name}"
        return None

    def pick(bench: str, name: str, model: float, section: str) -> Figure:
        found = measured(bench, name)
        return Figure(*found) if found else Figure(float(model), f"scaling model {section} (no bench {bench} file)")

    figs = {
        "ingest_flows_per_s_per_instance": pick("ingest", "kafka_flows_per_s", MODEL_INGEST_PER_INSTANCE, "§10.1"),
        "postgres_landing_flows_per_s": pick("ingest", "postgres_flows_per_s", MODEL_PG_WRITES, "§3.1"),
        "upserts_per_s": pick("pipeline", "upsert_rows_per_s", MODEL_UPSERTS, "§3.1"),
        "kafka_broker_flows_per_s": Figure(
            float(MODEL_BROKER), "scaling model §10.1 (the ingest bench bounds it below)"
        ),
        "kafka_bytes_per_flow": Figure(
            round(flow_record_bytes() / IPC_COMPRESSION_RATIO, 1),
            "this project: FLOW_SCHEMA width / 2.4 (LZ4 Arrow IPC, ingest.land.kafka)",
        ),
    }
    pipe = results.get("pipeline", {}).get("figures", {})
    if pipe.get("flows") and pipe.get("window_seconds"):
        # a window run includes its asset checks: they count against the processing rate
        seconds = float(pipe["window_seconds"]) + float(pipe.get("check_seconds") or 0)
        figs["pipeline_flows_per_s_per_worker"] = Figure(
            round(float(pipe["flows"]) / seconds),
            f"measured: {results['pipeline'].get('_path')} figures.flows / (window_seconds + check_seconds)",
        )
    else:
        figs["pipeline_flows_per_s_per_worker"] = Figure(
            float(MODEL_PIPELINE_PER_WORKER),
            "scaling model §6.1 (50k flows/s on 4+4 instances; no bench pipeline file)",
        )
    figs["pipeline_run_overhead_seconds"] = Figure(*run_overhead_from(results))
    rss = pipe.get("rss_mb_per_million_flows")
    figs["pipeline_mb_per_million_flows"] = (
        Figure(float(rss), f"measured: {results['pipeline'].get('_path')} figures.rss_mb_per_million_flows")
        if isinstance(rss, int | float) and rss > 0
        else Figure(4096 / (MODEL_PIPELINE_PER_WORKER * WINDOW_SECONDS / 1e6), "scaling model §6.1 (4 GB per instance)")
    )
    ingest_cfg = results.get("ingest", {}).get("config", {})
    cores = ingest_cfg.get("receiving_processes") if "ingest" in results else None
    figs["ingest_cores_per_instance"] = (
        Figure(float(cores), f"measured: {results['ingest'].get('_path')} config.receiving_processes")
        if isinstance(cores, int) and cores > 0
        else Figure(2.0, "scaling model §6.1")
    )
    return figs


def choose_mode(inp: PlanInput, cfg: FlowLensConfig) -> tuple[str, list[str], bool, bool]:
    """The mode (§1, §4.1, §5.1, §7.1 with the config's thresholds), why, and whether Kafka/Redis are needed."""
    k, r = cfg.thresholds.kafka, cfg.thresholds.redis
    reasons: list[str] = []
    steady_kafka = inp.flows_per_sec >= k.enable_at_flows_per_sec
    burst_kafka = (
        inp.burst_peak_flows_per_sec >= k.burst_threshold_flows_per_sec
        and inp.burst_seconds > k.burst_duration_trigger_seconds
    )
    if steady_kafka:
        reasons.append(f"rate {inp.flows_per_sec:,.0f}/s >= Kafka enable_at {k.enable_at_flows_per_sec:,}/s")
    if burst_kafka:
        reasons.append(
            f"burst {inp.burst_peak_flows_per_sec:,.0f}/s for {inp.burst_seconds:,.0f}s >= "
            f"{k.burst_threshold_flows_per_sec:,}/s for > {k.burst_duration_trigger_seconds}s: Kafka buffers it"
        )
    redis_why = []
    if inp.flows_per_sec >= r.enable_at_flows_per_sec:
        redis_why.append(f"rate >= {r.enable_at_flows_per_sec:,}/s")
    if inp.api_users >= r.enable_at_concurrent_users:
        redis_why.append(f"{inp.api_users} users >= {r.enable_at_concurrent_users}")
    if inp.api_p99_ms <= r.enable_at_api_p99_ms:
        redis_why.append(f"API p99 SLA {inp.api_p99_ms:g} ms <= {r.enable_at_api_p99_ms} ms")
    if inp.websocket and r.enable_for_websocket:
        redis_why.append("WebSocket enabled")
    if redis_why:
        reasons.append("Redis: " + ", ".join(redis_why))
    if steady_kafka:
        mode = "full" if inp.flows_per_sec >= 50_000 else "standard"  # §1 / §7.1 bands
    elif burst_kafka:
        mode = "auto"
        reasons.append("steady rate below the enable threshold: PostgreSQL landing, Kafka only while bursting")
    elif redis_why:
        mode = "standard"
        reasons.append("the smallest mode with Redis is standard")
    else:
        mode = "minimal"
        reasons.append(f"rate below {k.enable_at_flows_per_sec:,}/s and no Redis trigger: PostgreSQL only")
    if inp.peak > 200_000:
        reasons.append(
            "above 200k flows/s the model's answer is a distributed deployment (§1): clustered Redis and PostgreSQL"
        )
    return mode, reasons, steady_kafka or burst_kafka, bool(redis_why)


def _ceil(x: float) -> int:
    return max(0, math.ceil(round(x, 9)))


def make_plan(inp: PlanInput, cfg: FlowLensConfig, results: dict[str, dict[str, Any]] | None = None) -> Plan:
    """The capacity plan; raises :class:`PlanError` on impossible inputs."""
    inp.check()
    figs = machine_figures(results or {})
    f = {name: fig.value for name, fig in figs.items()}
    mode, reasons, kafka_needed, redis_needed = choose_mode(inp, cfg)
    rate, peak, pairs = inp.flows_per_sec, inp.peak, inp.pairs
    scale = cfg.autoscaling

    # Ingest sized for the peak (§6.2: instances scale up during the burst).
    ingest_n = max(1, _ceil(peak / f["ingest_flows_per_s_per_instance"]))
    if mode != "minimal":
        ingest_n = max(ingest_n, scale.ingestion.min_instances)
    ingest = {
        "instances": ingest_n,
        "cores": _ceil(ingest_n * f["ingest_cores_per_instance"]),
        "memory_gb": 2 * ingest_n,
    }

    # Pipeline sized for the steady rate at 50% utilization (§3.2), so a burst's backlog drains.
    workers = max(1, _ceil(rate / (f["pipeline_flows_per_s_per_worker"] * UTILIZATION_TARGET)))
    window_flows_per_worker = rate * WINDOW_SECONDS / workers
    worker_mb = 512 + f["pipeline_mb_per_million_flows"] * window_flows_per_worker / 1e6
    pipeline = {"instances": workers, "cores": 2 * workers, "memory_gb": round(workers * worker_mb / 1024, 1)}

    api_n = 1 if inp.api_users < 20 else (2 if inp.api_users <= 100 else _ceil(inp.api_users / 100) + 1)  # §7.1
    api = {"instances": api_n, "cores": 4 * api_n, "memory_gb": 4 * api_n}

    kafka = _kafka(inp, f, kafka_needed, workers, cfg)
    postgres = _postgres(inp, f, mode, pairs)
    redis = _redis(inp, pairs, redis_needed)
    burst = _burst(inp, f, workers, ingest_n, kafka_needed, cfg)
    components = {"ingest": ingest, "pipeline": pipeline, "api": api}
    components["postgresql"] = {k: postgres[k] for k in ("instances", "cores", "memory_gb")}
    if kafka_needed:
        components["kafka"] = {
            "instances": kafka["brokers"],
            "cores": 4 * kafka["brokers"],
            "memory_gb": kafka["memory_gb_per_broker"] * kafka["brokers"],
        }
    if redis_needed:
        components["redis"] = {"instances": 1, "cores": 2, "memory_gb": redis["recommended_maxmemory_gb"]}
    totals = {
        "cores": sum(c["cores"] for c in components.values()),
        "memory_gb": round(sum(c["memory_gb"] for c in components.values()), 1),
        "disk_gb": round(postgres["retained_gb"] + (kafka.get("disk_gb_total", 0) if kafka_needed else 0), 1),
    }
    plan = Plan(
        mode=mode,
        reasons=reasons,
        inputs=asdict(inp) | {"pairs_per_window_used": pairs},
        components=components,
        kafka=kafka,
        postgres=postgres,
        redis=redis,
        burst=burst,
        totals=totals,
        figures={name: asdict(fig) for name, fig in figs.items()},
    )
    plan.flags = _flags(plan, inp, f, results or {}, scale.ingestion.max_instances)
    return plan


def _kafka(inp: PlanInput, f: dict[str, float], needed: bool, workers: int, cfg: FlowLensConfig) -> dict[str, Any]:
    if not needed:
        return {"needed": False}
    peak, rate = inp.peak, inp.flows_per_sec
    brokers = max(3, _ceil(peak / f["kafka_broker_flows_per_s"]))  # §4.3: 3 brokers minimum in production
    partitions = max(cfg.kafka.raw_partitions, 6 * _ceil(peak / 100_000), workers)  # §4.2, §6.2: 12 at 200k
    per_flow = f["kafka_bytes_per_flow"]
    burst_extra = max(0.0, inp.burst_peak_flows_per_sec - rate) * inp.burst_seconds
    rf = max(KAFKA_RF, cfg.kafka.replication)  # the configured cluster's (3 from 3 brokers), at least the model's
    topics = {
        cfg.kafka.raw_topic: (rate * RAW_RETENTION_DAYS * DAY + burst_extra) * per_flow * rf,
        cfg.kafka.changes_topic: inp.pairs * 300 * rf,  # compacted: one record per dependency
    }
    if cfg.pipeline.produce_enriched:
        topics[cfg.kafka.enriched_topic] = rate * ENRICHED_RETENTION_DAYS * DAY * MODEL_ENRICHED_BYTES * rf
    total = sum(topics.values())
    return {
        "needed": True,
        "brokers": brokers,
        "partitions": {
            cfg.kafka.raw_topic: partitions,
            cfg.kafka.enriched_topic: partitions,
            cfg.kafka.changes_topic: 3,
        },
        "replication_factor": rf,
        "disk_gb_per_topic": {t: round(b / GB, 1) for t, b in topics.items()},
        "disk_gb_total": round(total / GB, 1),
        "disk_gb_per_broker": round(total / GB / brokers, 1),
        "memory_gb_per_broker": 16 if peak <= 100_000 else 32,  # §6.1 / §4.3
        "peak_mb_per_s": round(peak * per_flow / MB, 1),
    }


def _postgres(inp: PlanInput, f: dict[str, float], mode: str, pairs: int) -> dict[str, Any]:
    rate = inp.flows_per_sec
    raw_rate = rate if mode in ("minimal", "auto") else 0.0  # the Kafka modes land raw flows in Kafka
    per_day = {
        "flow_raw": raw_rate * DAY * MODEL_FLOW_BYTES,
        "flow_raw_batches": raw_rate * DAY * BATCH_FLOW_BYTES,
        "flow_stats": pairs * (DAY / WINDOW_SECONDS) * MODEL_SUMMARY_BYTES,
        "flow_stats_hourly": pairs * 24 * MODEL_SUMMARY_BYTES,
        "flow_stats_daily": pairs * MODEL_SUMMARY_BYTES,
    }
    days = ("flow_raw", "flow_raw_batches", "flow_stats", "flow_stats_hourly")  # dropped by retention
    retained = sum(per_day[t] for t in days) * inp.retention_days
    retained += per_day["flow_stats_daily"] * 365  # kept past retention
    load = raw_rate / f["postgres_landing_flows_per_s"] + pairs / WINDOW_SECONDS / f["upserts_per_s"]
    cores = min(32, max(2, _ceil(8 * max(load, rate / 50_000))))  # §6.1: 8 cores / 32 GB at 50k flows/s
    return {
        "instances": 2 if inp.api_p99_ms < 100 else 1,  # §7.1: p99 < 100 ms -> read replica
        "cores": cores,
        "memory_gb": 4 * cores,
        "write_utilization": round(load, 3),
        "raw_inserts_per_s": raw_rate,
        "upsert_seconds_per_window": round(pairs / f["upserts_per_s"], 1),
        "table_gb_per_day": {t: round(b / GB, 2) for t, b in per_day.items()},
        "retained_gb": round(retained / GB, 1),
    }


def _redis(inp: PlanInput, pairs: int, needed: bool) -> dict[str, Any]:
    addresses = pairs // 2  # each pair has two ends, most shared with other pairs
    items = {  # §5.3 sizes per item
        "dns": addresses * 200,
        "geoip": addresses * 150,
        "assets": addresses * 500,
        "aggregation_buffers": pairs * 200,
        "topology": addresses * 500,
        "sessions": inp.api_users * 500,
        "rate_limits": inp.api_users * 50,
    }
    used = sum(items.values())
    return {
        "needed": needed,
        "memory_mb": {k: round(v / MB, 1) for k, v in items.items()},
        "estimated_mb": round(used / MB, 1),
        "recommended_maxmemory_gb": max(4, _ceil(2 * used / GB)) if needed else 0,  # §5.3: 4 GB minimum
    }


def _burst(inp, f, workers: int, ingest_n: int, kafka: bool, cfg: FlowLensConfig) -> dict[str, Any]:
    """§6.2 absorb -> process -> drain: backlog = (peak - capacity) x duration, drained by the surplus
    (``predicted_drain_seconds``, the model's continuous figure); ``windowed_drain_seconds`` steps
    through the sensor loop instead (:mod:`ingest.scaling.drain`): what a 5-minute pipeline takes."""
    if not inp.burst_peak_flows_per_sec:
        return {"given": False}
    capacity = workers * f["pipeline_flows_per_s_per_worker"]
    backlog = max(0.0, inp.burst_peak_flows_per_sec - capacity) * inp.burst_seconds
    surplus = capacity - inp.flows_per_sec
    drain = backlog / surplus if surplus > 0 else math.inf
    ingest_capacity = ingest_n * f["ingest_flows_per_s_per_instance"]
    # As the pipeline really drains: windows close, each run pays a fixed cost, catch-up batches windows.
    shape = burst_shape(inp.flows_per_sec, inp.burst_peak_flows_per_sec, inp.burst_seconds)
    windowed = predict_drain(shape, pipeline_from(cfg, capacity, f["pipeline_run_overhead_seconds"]))
    return {
        "given": True,
        "processing_flows_per_s": round(capacity),
        "backlog_flows": round(backlog),
        "predicted_drain_seconds": round(drain, 1) if math.isfinite(drain) else None,
        "windowed_drain_seconds": windowed.as_dict()["drain_seconds"],
        "windowed": windowed.as_dict(),
        "absorbed_by": "kafka flows.raw" if kafka else "postgresql flow_raw",
        "sampling_expected": inp.burst_peak_flows_per_sec > ingest_capacity,
        "lag_alert_expected": math.isfinite(drain)
        and drain + WINDOW_SECONDS > cfg.backpressure.kafka.alert_at_lag_seconds,
    }


def _flags(plan: Plan, inp: PlanInput, f: dict[str, float], results: dict, max_ingest: int) -> list[str]:
    flags: list[str] = []
    checks = [
        ("ingest_flows_per_s_per_instance", MODEL_INGEST_PER_INSTANCE, "1 ingestion instance = 25k flows/s"),
        ("postgres_landing_flows_per_s", MODEL_PG_WRITES, "1 PostgreSQL = 50k writes/s (raw flow inserts)"),
        ("upserts_per_s", MODEL_PG_WRITES, "1 PostgreSQL = 50k aggregated writes/s"),
    ]
    for name, model, rule in checks:
        fig = plan.figures[name]
        if fig["source"].startswith("measured") and not (1 / FAR <= f[name] / model <= FAR):
            flags.append(
                f"rule of thumb '{rule}' is far off: this machine measured {f[name]:,.0f}/s, "
                f"{f[name] / model:.1f}x the rule ({fig['source']})"
            )
    lower = results.get("ingest", {}).get("figures", {}).get("kafka_flows_per_s")
    if isinstance(lower, int | float) and lower > FAR * MODEL_BROKER:
        flags.append(
            f"one local broker took {lower:,.0f} flows/s from one daemon: '1 broker = 200k/s' is conservative here"
        )
    if plan.burst.get("given") and plan.burst["predicted_drain_seconds"] is None:
        flags.append("the pipeline cannot drain a burst: its capacity does not exceed the steady rate")
    if plan.burst.get("sampling_expected"):
        flags.append("the burst exceeds the ingest instances' capacity: backpressure sampling expected")
    if plan.components["ingest"]["instances"] > max_ingest:
        flags.append(f"ingest needs more instances than autoscaling.ingestion.max_instances ({max_ingest})")
    if plan.postgres["write_utilization"] > UTILIZATION_TARGET:
        flags.append(
            f"PostgreSQL write utilization {plan.postgres['write_utilization']:.0%} is above the model's 50% target"
        )
    if not any(fig["source"].startswith("measured") for fig in plan.figures.values()):
        flags.append("no bench results on this machine: every figure is the scaling model's (run flowlens bench ...)")
    return flags


# --- command line --------------------------------------------------------------------------------
def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="flowlens plan", description=__doc__.split("\n\n")[0])
    p.add_argument("--rate", type=float, required=True, help="steady flow rate, flows/s")
    p.add_argument("--burst-peak", type=float, default=0.0, help="burst peak rate, flows/s (0: no burst)")
    p.add_argument("--burst-seconds", type=float, default=0.0, help="burst duration, seconds")
    p.add_argument("--retention-days", type=int, help="PostgreSQL retention (default pipeline.retention_days)")
    p.add_argument("--users", type=int, default=0, help="concurrent API users")
    p.add_argument("--api-p99-ms", type=float, default=500.0, help="API p99 latency SLA, ms")
    p.add_argument("--websocket", action="store_true", help="the live change feed (WebSocket) is used")
    p.add_argument(
        "--pairs-per-window", type=int, help="unique connections per 5-minute window (default: rate x 5, §3.2)"
    )
    p.add_argument("--bench-dir", help="directory of bench JSON files (default <state_dir>/bench)")
    p.add_argument("--json", action="store_true", help="one JSON object instead of a table")
    p.add_argument("--config", help="FlowLens YAML config")
    return p.parse_args(argv)


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    try:
        cfg = load_config(args.config)
        directory = bench_dir(cfg.state_dir) if args.bench_dir is None else Path(args.bench_dir)
        inp = PlanInput(
            flows_per_sec=args.rate,
            burst_peak_flows_per_sec=args.burst_peak,
            burst_seconds=args.burst_seconds,
            retention_days=args.retention_days or cfg.pipeline.retention_days,
            api_users=args.users,
            api_p99_ms=args.api_p99_ms,
            websocket=args.websocket,
            pairs_per_window=args.pairs_per_window,
        )
        plan = make_plan(inp, cfg, load_results(directory))
    except (PlanError, ConfigError) as exc:
        print(f"flowlens plan: {exc}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(plan.as_dict(), default=str))
    else:
        print(render(plan))
    return 0


def render(plan: Plan) -> str:
    """The plan as a table for people."""
    inp = plan.inputs
    lines = [
        f"flowlens plan: {inp['flows_per_sec']:,.0f} flows/s steady"
        + (
            f", burst {inp['burst_peak_flows_per_sec']:,.0f}/s for {inp['burst_seconds']:,.0f}s"
            if plan.burst.get("given")
            else ""
        )
        + f", {inp['api_users']} API users, p99 SLA {inp['api_p99_ms']:g} ms, retention {inp['retention_days']} d",
        f"mode: {plan.mode}",
        *[f"  - {r}" for r in plan.reasons],
        "",
        f"  {'component':<12} {'instances':>9} {'cores':>6} {'memory GB':>10}",
    ]
    for name, c in plan.components.items():
        lines.append(f"  {name:<12} {c['instances']:>9} {c['cores']:>6} {c['memory_gb']:>10}")
    t = plan.totals
    lines.append(f"  {'total':<12} {'':>9} {t['cores']:>6} {t['memory_gb']:>10}   disk {t['disk_gb']:,} GB")
    if plan.kafka.get("needed"):
        k = plan.kafka
        lines += ["", f"kafka: {k['brokers']} brokers, RF {k['replication_factor']}, {k['peak_mb_per_s']} MB/s at peak"]
        for topic, gb in k["disk_gb_per_topic"].items():
            lines.append(f"  {topic:<20} partitions {k['partitions'].get(topic, '-'):>3}   disk {gb:>10,} GB")
    pg = plan.postgres
    lines += [
        "",
        f"postgresql: {pg['instances']} instance(s), write utilization {pg['write_utilization']:.0%}, "
        f"flow_stats upsert {pg['upsert_seconds_per_window']} s per window, retained {pg['retained_gb']:,} GB",
    ]
    for table, gb in pg["table_gb_per_day"].items():
        lines.append(f"  {table:<20} {gb:>10,} GB/day")
    r = plan.redis
    lines += [
        "",
        f"redis: {'needed' if r['needed'] else 'not needed'}, ~{r['estimated_mb']:,} MB of keys"
        + (f", maxmemory {r['recommended_maxmemory_gb']} GB" if r["needed"] else ""),
    ]
    if plan.burst.get("given"):
        b = plan.burst
        drain = (
            "never (capacity <= steady rate)"
            if b["predicted_drain_seconds"] is None
            else f"{b['predicted_drain_seconds']:,} s"
        )
        windowed = b["windowed_drain_seconds"]
        lines += [
            "",
            f"burst: processing {b['processing_flows_per_s']:,} flows/s, backlog {b['backlog_flows']:,} flows "
            f"absorbed by {b['absorbed_by']}, predicted drain {drain} (model §6.2, continuous)",
            f"  windowed drain (5-minute windows, {b['windowed']['runs']} runs, per-run cost, catch-up): "
            + ("not within the horizon" if windowed is None else f"{windowed:,} s"),
        ]
    lines += ["", "figures used:"]
    for name, fig in plan.figures.items():
        lines.append(f"  {name:<34} {fig['value']:>12,.1f}  {fig['source']}")
    if plan.flags:
        lines += ["", "flags:", *[f"  ! {flag}" for flag in plan.flags]]
    return "\n".join(lines)
