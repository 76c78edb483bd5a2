"""AutoLanding against the real services: a switch to a Kafka that is down is refused and costs no
flow; a switch to a Kafka that is up splits the flows, and reading the window gives them all back."""

from __future__ import annotations

import json
import logging
import socket

import psycopg
import pytest
import redis

from ingest.land.auto import AutoLanding
from ingest.metrics import WorkerStats
from ingest.scaling.alerts import ALERTS_CHANNEL
from ingest.window import WINDOW
from tests.assets import scenario

pytestmark = pytest.mark.integration


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def auto_config(cfg, bootstrap: str, topic: str):
    thresholds = cfg.thresholds.kafka.model_copy(
        update={"enable_at_flows_per_sec": 40, "disable_at_flows_per_sec": 20, "burst_threshold_flows_per_sec": 1000,
                "rate_window_seconds": 2, "min_dwell_seconds": 0, "burst_duration_trigger_seconds": 1}
    )  # fmt: skip
    return cfg.model_copy(
        update={
            "mode": "auto",
            "kafka": cfg.kafka.model_copy(update={"bootstrap_servers": bootstrap, "raw_topic": topic}),
            "thresholds": cfg.thresholds.model_copy(update={"kafka": thresholds}),
            "ingest": cfg.ingest.model_copy(update={"instance_id": "auto-test"}),
        }
    )


def write_for(landing: AutoLanding, clock: Clock, rows: list[dict], seconds: float, wait=None) -> int:
    """One batch every 0.5 s of the fake clock (rate = 2 x len(rows) flows/s); returns flows written."""
    written = 0
    while seconds > 0 or (wait is not None and not wait()):
        landing.write(scenario.batch(rows))
        written += len(rows)
        clock.now += 0.5
        seconds -= 0.5
    return written


def flow_raw_rows(dsn: str) -> int:
    with psycopg.connect(dsn) as conn:
        return conn.execute("SELECT count(*) FROM flowlens.flow_raw").fetchone()[0]


def test_a_switch_to_a_kafka_that_is_down_is_refused_and_loses_nothing(flowlens_config, clean_pg, caplog):
    with socket.socket() as sock:  # a port where no broker listens
        sock.bind(("127.0.0.1", 0))
        dead = f"127.0.0.1:{sock.getsockname()[1]}"
    cfg = auto_config(flowlens_config, dead, "flows.raw.nowhere")
    rows = scenario.flow_rows(scenario.base_window())[0]
    clock = Clock()
    landing = AutoLanding(cfg, stats=WorkerStats(), clock=clock, processes=1)
    try:
        with caplog.at_level(logging.WARNING, logger="ingest.land.auto"):
            written = write_for(landing, clock, rows, 4, wait=lambda: "unreachable" in caplog.text)
            written += write_for(landing, clock, rows, 2)
        assert landing.active == "postgres" and landing.switches == []
        assert "staying on postgres" in caplog.text
    finally:
        landing.close()
    assert flow_raw_rows(clean_pg) == written


def test_a_switch_splits_the_window_and_reading_it_returns_every_flow(
    flowlens_config, clean_pg, kafka_topic, redis_url
):
    cfg = auto_config(flowlens_config, flowlens_config.kafka.bootstrap_servers, kafka_topic("flows.raw.autotest"))
    base = scenario.base_window()
    rows = scenario.flow_rows(base)[0]
    subscriber = redis.Redis.from_url(redis_url).pubsub()
    subscriber.subscribe(ALERTS_CHANNEL)
    clock, stats = Clock(), WorkerStats()
    landing = AutoLanding(cfg, stats=stats, clock=clock, processes=1)
    try:
        landing.heartbeat("auto-test/w0", base, 0)  # as the daemon does first: names the instance
        written = write_for(landing, clock, rows, 2)  # 2 x rows flows/s: above enable (40/s)
        written += write_for(landing, clock, rows, 1, wait=lambda: landing.active == "kafka")
        written += write_for(landing, clock, rows, 2)
        landing.heartbeat("auto-test/w0", base + WINDOW, written)
        read = landing.read_window(base, base + WINDOW)
    finally:
        landing.close()
    assert stats.mode_switches == {"postgres>kafka": 1}
    assert read.flows.num_rows == written
    assert read.position["rows"]["postgres"] > 0 and read.position["rows"]["kafka"] > 0
    assert read.source.startswith("auto:")
    [switch] = read.position["switches"]
    assert (switch["from"], switch["to"], switch["instance"]) == ("postgres", "kafka", "auto-test/w0")
    messages = []
    for _ in range(50):
        message = subscriber.get_message(timeout=0.1)
        if message and message["type"] == "message":
            messages.append(json.loads(message["data"]))
    subscriber.close()
    assert [(m["kind"], m["from"], m["to"]) for m in messages] == [("mode_switch", "postgres", "kafka")]
