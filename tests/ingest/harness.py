"""Test harness: ``flowlens ingest`` as a real subprocess (the bench's runner) with test settings."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from flowlens_dagster.bench.ingest import DaemonRun as Daemon
from flowlens_dagster.bench.ingest import daemon_env as bench_env
from flowlens_dagster.bench.ingest import free_udp_port
from ingest.config import FlowLensConfig

__all__ = ["Daemon", "daemon_env", "free_udp_port", "received_total"]


def daemon_env(
    cfg: FlowLensConfig,
    state_dir: Path,
    port: int,
    queue: tuple[int, int] = (1_000_000, 2_000_000),
    queue_seconds: tuple[float, float] = (0.0, 0.0),
    **ingest: Any,
) -> dict[str, str]:
    """Environment for a daemon subprocess: the test config plus ingest overrides (FLOWLENS_ vars).

    ``queue`` is (sample_at, drop_at) of the backpressure: large by default, because the machine
    is shared and a test about exact landing must not see sampling when another job hogs the CPU.
    ``queue_seconds`` are the rate-following levels, off by default so the counts alone decide;
    the disk spool is off too unless ``spool_max_bytes`` is given (the tests of the rules without it).
    """
    ingestion = cfg.backpressure.ingestion.model_copy(
        update={"sample_at_queue_depth": queue[0], "drop_at_queue_depth": queue[1], "max_queue_depth": queue[1],
                "sample_at_queue_seconds": queue_seconds[0], "drop_at_queue_seconds": queue_seconds[1]}
    )  # fmt: skip
    cfg = cfg.model_copy(update={"backpressure": cfg.backpressure.model_copy(update={"ingestion": ingestion})})
    settings = {"processes": 2, "heartbeat_seconds": 0.5, "batch_max_seconds": 0.2,
                "socket_receive_buffer_bytes": 16 << 20, "spool_max_bytes": 0, **ingest}  # fmt: skip
    return bench_env(cfg, state_dir, port, settings)


def received_total(stats: dict[str, Any]) -> int:
    return sum(stats.get("received", {}).values())
