"""Test harness: run ``flowlens ingest`` as a real subprocess and read its stats file."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from ingest.config import FlowLensConfig

ROOT = Path(__file__).resolve().parents[2]


def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def daemon_env(
    cfg: FlowLensConfig, state_dir: Path, port: int, queue: tuple[int, int] = (1_000_000, 2_000_000), **ingest: Any
) -> dict[str, str]:
    """Environment for a daemon subprocess: the test config plus ingest overrides (FLOWLENS_ vars).

    ``queue`` is (sample_at, drop_at) of the backpressure: large by default, because the machine
    is shared and a test about exact landing must not see sampling when another job hogs the CPU.
    """
    env = {k: v for k, v in os.environ.items() if not k.startswith("FLOWLENS_")}
    pool_timeout = cfg.backpressure.postgresql.pool_timeout_seconds
    settings = {
        "processes": 2,
        "metrics_port": 0,
        "heartbeat_seconds": 0.5,
        "batch_max_seconds": 0.2,
        "listen": [{"host": "127.0.0.1", "port": port}],
        "socket_receive_buffer_bytes": 16 << 20,
        **ingest,
    }
    env.update(
        {
            "FLOWLENS_MODE": cfg.mode,
            "FLOWLENS_STATE_DIR": str(state_dir),
            "FLOWLENS_POSTGRES__HOST": cfg.postgres.host,
            "FLOWLENS_POSTGRES__PORT": str(cfg.postgres.port),
            "FLOWLENS_POSTGRES__DATABASE": cfg.postgres.database,
            "FLOWLENS_POSTGRES__USER": cfg.postgres.user,
            "FLOWLENS_POSTGRES__PASSWORD": cfg.postgres.password,
            "FLOWLENS_KAFKA__BOOTSTRAP_SERVERS": cfg.kafka.bootstrap_servers,
            "FLOWLENS_KAFKA__RAW_TOPIC": cfg.kafka.raw_topic,
            "FLOWLENS_BACKPRESSURE__POSTGRESQL__POOL_TIMEOUT_SECONDS": str(pool_timeout),
            "FLOWLENS_BACKPRESSURE__INGESTION__SAMPLE_AT_QUEUE_DEPTH": str(queue[0]),
            "FLOWLENS_BACKPRESSURE__INGESTION__DROP_AT_QUEUE_DEPTH": str(queue[1]),
            "FLOWLENS_BACKPRESSURE__INGESTION__MAX_QUEUE_DEPTH": str(queue[1]),
        }
    )
    for key, value in settings.items():
        env[f"FLOWLENS_INGEST__{key.upper()}"] = json.dumps(value) if not isinstance(value, str) else value
    return env


class Daemon:
    """``flowlens ingest`` in a subprocess; ``stats()`` reads its --stats-file."""

    def __init__(self, env: dict[str, str], state_dir: Path, extra_args: list[str] | None = None):
        self.stats_file = state_dir / f"stats-{time.monotonic_ns()}.json"
        self.log_file = state_dir / f"daemon-{time.monotonic_ns()}.log"
        state_dir.mkdir(parents=True, exist_ok=True)
        self._log = self.log_file.open("w")
        argv = [sys.executable, "-m", "flowlens_dagster.cli", "ingest", "--stats-file", str(self.stats_file)]
        self.proc = subprocess.Popen([*argv, *(extra_args or [])], env=env, cwd=ROOT, stdout=self._log,
                                     stderr=subprocess.STDOUT)  # fmt: skip

    def stats(self) -> dict[str, Any]:
        try:
            return json.loads(self.stats_file.read_text())
        except (OSError, ValueError):
            return {}

    def wait_ready(self, processes: int, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.stats().get("workers_ready") == processes:
                return
            if self.proc.poll() is not None:
                break
            time.sleep(0.1)
        raise AssertionError(f"daemon not ready after {timeout}s:\n{self.log()}")

    def wait_for(self, predicate, timeout: float = 60, what: str = "condition") -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            stats = self.stats()
            if stats and predicate(stats):
                return stats
            time.sleep(0.2)
        raise AssertionError(f"{what} not reached after {timeout}s; stats {self.stats()}\n{self.log()}")

    def terminate(self, timeout: float = 90) -> dict[str, Any]:
        """SIGTERM, wait for the drain, return the final stats."""
        self.proc.send_signal(signal.SIGTERM)
        try:
            code = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            raise AssertionError(f"daemon did not exit within {timeout}s of SIGTERM:\n{self.log()}") from None
        assert code == 0, f"daemon exited {code}:\n{self.log()}"
        return self.stats()

    def log(self) -> str:
        self._log.flush()
        return self.log_file.read_text()[-6000:]

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        self._log.close()


def received_total(stats: dict[str, Any]) -> int:
    return sum(stats.get("received", {}).values())
