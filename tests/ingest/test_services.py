"""``ingest.services``: a stopped service is one line naming it and the command that starts it."""

from __future__ import annotations

import socket
import subprocess
import sys

import pytest

from ingest.config import FlowLensConfig
from ingest.services import ServiceUnavailable, needed, probe, require


def closed_port() -> int:
    """A port nothing listens on (bound once by us, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def config(pg: int, kafka: int, redis: int, mode: str = "full") -> FlowLensConfig:
    cfg = FlowLensConfig(mode=mode)
    return cfg.model_copy(
        update={
            "postgres": cfg.postgres.model_copy(update={"port": pg}),
            "kafka": cfg.kafka.model_copy(update={"bootstrap_servers": f"127.0.0.1:{kafka},127.0.0.1:1"}),
            "redis": cfg.redis.model_copy(update={"port": redis}),
        }
    )


def test_a_listening_service_passes_and_a_closed_one_is_named_with_the_start_command():
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        up = listener.getsockname()[1]
        cfg = config(pg=up, kafka=closed_port(), redis=up)
        assert probe(cfg, "postgres") is None and probe(cfg, "redis") is None
        require(cfg, ["postgres", "redis"], "flowlens x")  # both answer: nothing raised
        with pytest.raises(ServiceUnavailable) as err:
            require(cfg, needed(cfg), "flowlens bench pipeline")
    message = str(err.value)
    assert "\n" not in message and message.startswith("flowlens bench pipeline: Kafka at 127.0.0.1:")
    assert "PostgreSQL" not in message and message.endswith("start it with `flowlens stack up --mode full`")


def test_a_kafka_cluster_answers_while_one_broker_is_down_and_a_dead_one_names_every_broker():
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        up, down = listener.getsockname()[1], closed_port()
        cfg = config(pg=up, kafka=down, redis=up)  # brokers: a closed port, then 127.0.0.1:1
        servers = f"127.0.0.1:{down},127.0.0.1:{up}"
        alive = cfg.model_copy(update={"kafka": cfg.kafka.model_copy(update={"bootstrap_servers": servers})})
        assert probe(alive, "kafka") is None
        with pytest.raises(ServiceUnavailable, match=rf"Kafka at 127.0.0.1:{down},127.0.0.1:1 \("):
            require(cfg, ["kafka"], "flowlens x")


def test_minimal_mode_needs_postgres_only_and_says_the_minimal_command():
    cfg = config(pg=closed_port(), kafka=closed_port(), redis=closed_port(), mode="minimal")
    assert needed(cfg) == ["postgres"]
    with pytest.raises(
        ServiceUnavailable, match=r"PostgreSQL at .* does not answer; start it with `flowlens stack up`$"
    ):
        require(cfg, needed(cfg), "flowlens dagster")


def test_cli_with_the_stack_down_prints_one_line_and_no_traceback(tmp_path):
    env = {
        "PATH": "/usr/bin:/bin", "FLOWLENS_MODE": "standard", "FLOWLENS_STATE_DIR": str(tmp_path),
        "FLOWLENS_POSTGRES__PORT": str(closed_port()), "FLOWLENS_REDIS__PORT": str(closed_port()),
        "FLOWLENS_KAFKA__BOOTSTRAP_SERVERS": f"127.0.0.1:{closed_port()}",
    }  # fmt: skip
    for argv in (["bench", "pipeline", "--flows", "1000"], ["bench", "ingest", "--backends", "kafka"], ["dagster"]):
        proc = subprocess.run(
            [sys.executable, "-m", "flowlens_dagster.cli", *argv], env=env, capture_output=True, text=True, timeout=60
        )
        assert proc.returncode == 1, (argv, proc.stderr[-2000:])
        lines = proc.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].endswith("answer; start it with `flowlens stack up --mode full`"), argv
        assert "Traceback" not in proc.stderr
