"""A 3-broker KRaft cluster from the stack's own code: one broker killed mid-window, the window lands whole.

The cluster runs on free ports with its state in the test's temporary directory (jars from the
project's state dir, installed by the stack); ``flowlens stack topics`` creates the topics on it.
The real ingest daemon lands the generator's traffic (exporter timestamps, 20 simulated seconds
per real second: one window in 13 s) into ``flows.raw`` with 3 replicas and
min.insync.replicas 2; node 1, the first bootstrap address and the leader of some partitions, is
killed with SIGKILL while the first window is being landed.
Then, with the broker still down, the sensor and the window job run as in production, and
flow_stats must equal the generator's truth: nothing lost, nothing counted twice. The broker is
restarted last and must be back in every partition's ISR.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from assets.partitions import five_minute_partitions
from flowlens_dagster.stack import kafka, kafka_cluster
from flowlens_dagster.stack.kafka_cluster import Cluster
from flowlens_dagster.stack.settings import kafka_topics
from ingest.config import FlowLensConfig
from tests.assets import scenario
from tests.assets.test_window_assets import pipeline_config
from tests.flowlens_dagster.test_pipeline_e2e import FLOWLENS, ROOT, tick_and_run, totals_by_edge, truth_by_edge
from tests.ingest.harness import Daemon, daemon_env, free_udp_port

pytestmark = pytest.mark.integration
BROKERS = 3
SPEED, SECONDS, RATE = 20, 13, 2000  # 260 simulated seconds: one window
KILL_AFTER = 7.0  # real seconds: 140 simulated seconds into the first window


@pytest.fixture
def cluster(flowlens_config: FlowLensConfig, tmp_path: Path) -> Iterator[tuple[Cluster, FlowLensConfig]]:
    cfg = pipeline_config(flowlens_config).model_copy(update={"mode": "standard"})
    with kafka_cluster.temporary(cfg, BROKERS, tmp_path / "cluster") as nodes:
        yield nodes, nodes.cfg


def raw_partitions(cfg: FlowLensConfig) -> dict[int, tuple[int, list[int], list[int]]]:
    """flows.raw partition -> (leader, replicas, in-sync replicas)."""
    topic = kafka.admin(cfg).list_topics(cfg.kafka.raw_topic, timeout=10).topics[cfg.kafka.raw_topic]
    return {p.id: (p.leader, sorted(p.replicas), sorted(p.isrs)) for p in topic.partitions.values()}


def wait_for(check, what: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} not reached within {timeout:.0f}s")
        time.sleep(0.5)


def test_a_broker_killed_mid_window_loses_nothing_and_rejoins(cluster, clean_pg, tmp_path, monkeypatch):
    nodes, cfg = cluster
    env = {**os.environ, "FLOWLENS_KAFKA__BOOTSTRAP_SERVERS": cfg.kafka.bootstrap_servers,
           "FLOWLENS_KAFKA__BROKERS": str(BROKERS)}  # fmt: skip
    made = subprocess.run([FLOWLENS, "stack", "topics"], env=env, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert made.returncode == 0 and f"created: {cfg.kafka.raw_topic}, " in made.stdout, made.stdout + made.stderr
    described = kafka.describe_topics(cfg)
    assert set(described) == set(kafka_topics(cfg))  # flows.raw and every side topic
    assert {(t["replicas"], t["min.insync.replicas"]) for t in described.values()} == {(3, "2")}
    before = raw_partitions(cfg)
    assert all(replicas == [1, 2, 3] == isr for _, replicas, isr in before.values()), before
    assert any(leader == 1 for leader, _, _ in before.values())  # the kill moves leaders

    base, truth = scenario.base_window(), tmp_path / "truth.parquet"
    port = free_udp_port()
    daemon = Daemon(daemon_env(cfg, tmp_path / "daemon", port, processes=1, timestamp_source="export"), tmp_path)
    generator = None
    try:
        daemon.wait_ready(1)
        generator = subprocess.Popen(
            [FLOWLENS, "generate", "--target", f"127.0.0.1:{port}", "--start", base.isoformat(),
             "--speed", str(SPEED), "--duration", str(SECONDS), "--rate", str(RATE), "--versions", "9,10",
             "--seed", "17", "--truth", str(truth)],
            cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        )  # fmt: skip
        time.sleep(KILL_AFTER)
        landed_at_kill = int(daemon.stats().get("flows_landed", 0))
        nodes.kill(1)
        assert generator.wait(120) == 0, generator.stderr.read().decode()[-2000:]
        sent = sum(pq.read_table(truth, columns=["flows"]).column("flows").to_pylist())
        stats = daemon.wait_for(lambda s: s.get("flows_landed", 0) >= sent, 120, "every flow landed")
        assert 0 < landed_at_kill < sent  # the broker died in the middle of the landing
        assert stats["flows_landed"] == sent
        daemon.terminate()
    finally:
        if generator is not None and generator.poll() is None:
            generator.send_signal(signal.SIGKILL)
            generator.wait(10)
        daemon.kill()
    assert 1 not in nodes.registered()  # still down while the windows are processed

    # The window job as production runs it, on the two surviving brokers.
    monkeypatch.setenv("FLOWLENS_KAFKA__BOOTSTRAP_SERVERS", cfg.kafka.bootstrap_servers)
    monkeypatch.setenv("FLOWLENS_KAFKA__BROKERS", str(BROKERS))
    monkeypatch.setenv("FLOWLENS_PIPELINE__MAX_RUNS_PER_TICK", "1")  # the traffic's window, not the empty ones after it
    time.sleep(1.5)  # past the instance timeout: the stopped daemon does not hold the windows
    keys = tick_and_run(cfg, base, monkeypatch)
    assert keys == [five_minute_partitions.get_partition_key_for_timestamp(base.timestamp())]
    assert totals_by_edge(clean_pg) == truth_by_edge(truth)

    during = raw_partitions(cfg)
    assert all(leader in (2, 3) and 1 not in isr for leader, _, isr in during.values()), during
    healthy, detail = kafka_cluster.health(cfg)  # what `flowlens stack status` prints
    assert not healthy and "2/3 brokers" in detail, detail
    nodes.restart(1)
    wait_for(lambda: all(isr == [1, 2, 3] for _, _, isr in raw_partitions(cfg).values()), "ISR back to 3", 120)
    wait_for(lambda: kafka_cluster.health(cfg)[0], "a healthy cluster", 60)
    assert "3/3 brokers" in kafka_cluster.health(cfg)[1]
