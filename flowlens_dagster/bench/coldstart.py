"""The cold-start scenario of ``flowlens bench ingest``: a fresh daemon meets 300k flows/s at once.

Each repeat starts ``flowlens ingest`` (Kafka landing, the configured backpressure levels, no
warm-up of any kind), waits until its processes are ready, then runs ``flowlens generate`` (the
on-the-fly generator, a separate process: 8 exporters, v9 and IPFIX) at ``--cold-start-rate`` for
``--cold-start-seconds`` and counts what the daemon sampled, dropped and landed once everything
settled. ``cold_start_sampled_flows`` is the sum over the repeats (the target is 0: a daemon below
its capacity must not sample). The same repeats with the model's fixed counts alone
(``*_at_queue_seconds: 0``) are the baseline, measured in the same run.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from flowlens_dagster.bench.ingest import DaemonRun, daemon_env, free_udp_port
from ingest.config import PROJECT_ROOT, FlowLensConfig
from ingest.metrics import udp_socket_stats

SETTLE_SECONDS = 60.0  # longest wait for the daemon to land what it received


def run_repeat(cfg: FlowLensConfig, workdir: Path, processes: int, rate: float, seconds: float) -> dict[str, Any]:
    """One cold start: a fresh daemon, the generator at ``rate`` for ``seconds``, the daemon's counts."""
    port = free_udp_port()
    daemon = DaemonRun(daemon_env(cfg, workdir, port, {"processes": processes}), workdir)
    try:
        daemon.wait_ready(processes)
        argv = [sys.executable, "-m", "flowlens_dagster.cli", "generate", "--target", f"127.0.0.1:{port}",
                "--rate", str(rate), "--duration", str(seconds), "--versions", "9,10", "--exporters", "8"]  # fmt: skip
        gen = subprocess.run(argv, cwd=PROJECT_ROOT, capture_output=True, text=True, check=True, timeout=300)
        sent = json.loads(gen.stdout.strip().splitlines()[-1])
        settled = _settle(daemon, port)
        final = daemon.terminate()
    finally:
        daemon.kill()
    received = sum(final.get("received", {}).values())
    return {
        "sent": sent["flows"], "sent_per_s": sent["flows_per_s"], "received": received,
        "sampled": final["sampled"], "dropped": sum(final["flows_dropped"].values()),
        "landed": final["flows_landed"], "kernel_drops": settled["kernel_drops"],
    }  # fmt: skip


def _settle(daemon: DaemonRun, port: int) -> dict[str, Any]:
    """Wait until the socket is empty, the queue landed and the counters stopped moving."""
    deadline = time.monotonic() + SETTLE_SECONDS
    last: dict[str, Any] = {}
    while time.monotonic() < deadline:
        time.sleep(1.1)  # the stats file is rewritten every second
        now = daemon.stats()
        queued = udp_socket_stats([port])[port]["rx_queue"]
        if now.get("queue_depth", 1) == 0 and not queued and now.get("flows_landed") == last.get("flows_landed"):
            break
        last = now
    return {"kernel_drops": udp_socket_stats([port])[port]["drops"]}


def cold_start(cfg: FlowLensConfig, workdir: Path, processes: int, repeats: int, rate: float, seconds: float,
               log: Callable[[str], None], label: str) -> list[dict[str, Any]]:  # fmt: skip
    runs = []
    for i in range(repeats):
        result = run_repeat(cfg, workdir / f"{label}-{i}", processes, rate, seconds)
        log(f"cold start ({label}) {i + 1}/{repeats}: sent {result['sent']:,} at {result['sent_per_s']:,}/s, "
            f"sampled {result['sampled']:,}, dropped {result['dropped']:,}, landed {result['landed']:,}, "
            f"kernel drops {result['kernel_drops']:,}")  # fmt: skip
        runs.append(result)
    return runs


def seed_levels(cfg: FlowLensConfig) -> FlowLensConfig:
    """``cfg`` with the model's fixed counts alone (the rate-following levels off)."""
    ingestion = cfg.backpressure.ingestion.model_copy(update={"sample_at_queue_seconds": 0, "drop_at_queue_seconds": 0})
    return cfg.model_copy(update={"backpressure": cfg.backpressure.model_copy(update={"ingestion": ingestion})})


def figures(kafka_cfg: FlowLensConfig, workdir: Path, processes: int, repeats: int, rate: float, seconds: float,
            log: Callable[[str], None]) -> tuple[dict, dict, dict]:  # fmt: skip
    """(figures, baseline, config) of the scenario: the configured levels, then the model's counts alone."""
    ours = cold_start(kafka_cfg, workdir, processes, repeats, rate, seconds, log, "configured")
    seed = cold_start(seed_levels(kafka_cfg), workdir, processes, repeats, rate, seconds, log, "seed-counts")
    ing = kafka_cfg.backpressure.ingestion
    config = {
        "cold_start": {"repeats": repeats, "rate": rate, "seconds": seconds, "landing": "kafka",
                       "sender": "flowlens generate (on the fly), 8 exporters, v9+IPFIX",
                       "levels": f"max({ing.sample_at_queue_depth} flows, {ing.sample_at_queue_seconds} s) / "
                                 f"max({ing.drop_at_queue_depth} flows, {ing.drop_at_queue_seconds} s)",
                       "baseline": "the same repeats with the model's fixed counts alone", "runs": ours,
                       "baseline_runs": seed},
    }  # fmt: skip
    return (
        {"cold_start_sampled_flows": sum(r["sampled"] for r in ours),
         "cold_start_dropped_flows": sum(r["dropped"] for r in ours)},
        {"cold_start_sampled_flows": sum(r["sampled"] for r in seed),
         "cold_start_dropped_flows": sum(r["dropped"] for r in seed)},
        config,
    )  # fmt: skip
