"""Auto mode end to end: a rate ramp 2k -> 40k -> 2k flows/s through the real daemon and the pipeline.

The daemon (one receiving process, so the daemon's switches are the process's) lands in PostgreSQL,
switches to Kafka when the ramp goes up and back when it comes down, once each (hysteresis and a
short dwell); the windows around each switch hold flows in both landings. The sensor and the
window runs then read every window from both: ``flow_stats`` equals the generator's ground truth
per connection, every window's totals equal what the two landings hold, and the checks pass.
"""

import os
import signal
import subprocess
import time
from datetime import timedelta
from pathlib import Path

import psycopg
import pyarrow.parquet as pq
import pytest

from ingest.land import open_landing
from ingest.window import WINDOW, window_of_key
from tests.assets import scenario
from tests.assets.test_window_assets import pipeline_config
from tests.flowlens_dagster.test_pipeline_e2e import (
    FLOWLENS,
    ROOT,
    assert_tables_match_truth,
    env_for,
    free_udp_port,
    tick_and_run,
)

pytestmark = pytest.mark.integration

SPEED = 20  # simulated seconds per real second: the ramp spans a few windows
RAMP = [(2_000, 15), (40_000, 20), (2_000, 20)]  # (flows/s real time, seconds)
AUTO_ENV = {  # the model's rates; shorter averaging and dwell than production so the test is short
    "FLOWLENS_THRESHOLDS__KAFKA__RATE_WINDOW_SECONDS": "4",
    "FLOWLENS_THRESHOLDS__KAFKA__MIN_DWELL_SECONDS": "6",
    "FLOWLENS_THRESHOLDS__KAFKA__BURST_DURATION_TRIGGER_SECONDS": "3",
    # exact totals: a shared machine must not push the queue into backpressure sampling
    "FLOWLENS_BACKPRESSURE__INGESTION__SAMPLE_AT_QUEUE_DEPTH": "1000000",
    "FLOWLENS_BACKPRESSURE__INGESTION__DROP_AT_QUEUE_DEPTH": "2000000",
    "FLOWLENS_BACKPRESSURE__INGESTION__MAX_QUEUE_DEPTH": "2000000",
}


def send_ramp(cfg, base, tmp_path: Path, processes: int = 1) -> dict[tuple, tuple]:
    """Run the daemon in auto mode, send the ramp (consecutive simulated spans), stop it; return the truth.
    The daemon's counters are left in ``tmp_path / "stats.json"``."""
    port = free_udp_port()
    env = {**env_for(cfg), **AUTO_ENV}
    daemon = subprocess.Popen(
        [FLOWLENS, "ingest", "--listen", f"127.0.0.1:{port}", "--processes", str(processes), "--metrics-port", "0",
         "--instance-id", "ramp", "--mode", "auto", "--stats-file", str(tmp_path / "stats.json")],
        env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True,
    )  # fmt: skip
    truths, start = [], base
    try:
        time.sleep(3)  # sockets bound
        for index, (rate, seconds) in enumerate(RAMP):
            truth = tmp_path / f"truth-{index}.parquet"
            subprocess.run(
                [FLOWLENS, "generate", "--target", f"127.0.0.1:{port}", "--start", start.isoformat(),
                 "--speed", str(SPEED), "--duration", str(seconds), "--rate", str(rate), "--versions", "9",
                 "--seed", "5", "--truth", str(truth)],
                env=env, cwd=ROOT, check=True, capture_output=True, timeout=300,
            )  # fmt: skip
            truths.append(truth)
            start += timedelta(seconds=seconds * SPEED)
        time.sleep(cfg.ingest.batch_max_seconds + cfg.ingest.heartbeat_seconds + 1)
    finally:
        os.killpg(daemon.pid, signal.SIGTERM)
        out, _ = daemon.communicate(timeout=120)
    assert daemon.returncode == 0, out.decode()[-3000:]
    time.sleep(1.5)  # past the instance timeout: the daemon is silent now
    return summed_truth(truths)


def summed_truth(paths: list[Path]) -> dict[tuple, tuple]:
    from assets.addresses import addr_text

    total: dict[tuple, list[int]] = {}
    for path in paths:
        for r in pq.read_table(path).to_pylist():
            key = (addr_text(r["src_addr"]), addr_text(r["dst_addr"]), r["dst_port"], r["protocol"])
            sums = total.setdefault(key, [0, 0, 0])
            for i, name in enumerate(("bytes", "packets", "flows")):
                sums[i] += r[name]
    return {k: tuple(v) for k, v in total.items()}


def switches(dsn: str) -> list[tuple[str, str, str]]:
    with psycopg.connect(dsn) as conn:
        rows = conn.execute(
            "SELECT from_landing, to_landing, reason FROM flowlens.mode_switches WHERE instance = 'ramp/w0'"
            " ORDER BY switched_at"
        ).fetchall()
    return [tuple(r) for r in rows]


def window_totals(dsn: str) -> dict:
    with psycopg.connect(dsn) as conn:
        rows = conn.execute(
            "SELECT window_start, sum(flows), sum(bytes) FROM flowlens.flow_stats GROUP BY 1 ORDER BY 1"
        ).fetchall()
    return {r[0]: (int(r[1]), int(r[2])) for r in rows}


def test_ramp_switches_up_and_down_once_and_every_window_matches_the_truth(
    flowlens_config, clean_pg, kafka_topic, tmp_path, monkeypatch
):
    cfg = pipeline_config(flowlens_config)
    cfg = cfg.model_copy(
        update={"mode": "auto", "kafka": cfg.kafka.model_copy(update={"raw_topic": kafka_topic("flows.raw.auto")})}
    )
    base = scenario.base_window()
    truth = send_ramp(cfg, base, tmp_path)

    assert [s[:2] for s in switches(clean_pg)] == [("postgres", "kafka"), ("kafka", "postgres")]

    for name, value in AUTO_ENV.items():
        monkeypatch.setenv(name, value)
    keys = tick_and_run(cfg, base, monkeypatch)  # the sensor, then every window run with its checks
    assert len(keys) >= 4
    assert_tables_match_truth(clean_pg, truth)

    landing = open_landing(cfg)
    straddling = 0
    try:
        per_window = window_totals(clean_pg)
        for key in keys:
            window = window_of_key(key)
            read = landing.read_window(window, window + WINDOW)
            landed = (read.flows.num_rows, sum(read.flows.column("bytes").to_pylist()))
            assert per_window.get(window, (0, 0)) == landed, key
            rows = read.position["rows"]
            straddling += rows["postgres"] > 0 and rows.get("kafka", 0) > 0
            if read.position["switches"]:
                assert rows["postgres"] > 0 and rows["kafka"] > 0  # a switch splits its window
    finally:
        landing.close()
    assert straddling >= 2  # the window of the switch up and the window of the switch down
