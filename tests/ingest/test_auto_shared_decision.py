"""Auto mode decides once per daemon: with two receiving processes a ramp 2k -> 40k -> 2k flows/s
makes exactly one switch each way (recorded, counted), both processes follow it, and every flow
the generator sent is read back from the two landings."""

from __future__ import annotations

import json
from datetime import timedelta

import psycopg
import pyarrow.compute as pc
import pytest

from ingest.addresses import addr_text
from ingest.land import open_landing
from ingest.scaling.shared import SharedDecision
from ingest.scaling.switch import KAFKA, POSTGRES
from ingest.window import WINDOW, window_start
from tests.assets import scenario
from tests.assets.test_window_assets import pipeline_config
from tests.flowlens_dagster.test_auto_mode import RAMP, SPEED, send_ramp

pytestmark = pytest.mark.integration


def test_a_follower_writes_where_the_leader_decided_and_counts_into_the_daemon_rate():
    slots = [0.0] * 4  # two processes
    leader, follower = SharedDecision(slots, 0), SharedDecision(slots, 1)
    follower.add(700)
    leader.add(300)
    assert leader.new_flows() == 1000 and leader.new_flows() == 0
    assert (leader.leader, follower.leader) == (True, False)
    leader.set_landing(KAFKA)
    assert follower.landing == KAFKA and follower.switches == 1
    leader.set_landing(POSTGRES)
    assert follower.landing == POSTGRES and follower.switches == 2
    restarted = SharedDecision(slots, 0)  # a restarted leader measures from its start on
    follower.add(5)
    assert restarted.new_flows() == 5


def test_two_processes_switch_once_each_way(flowlens_config, clean_pg, kafka_topic, tmp_path):
    cfg = pipeline_config(flowlens_config)
    cfg = cfg.model_copy(
        update={"mode": "auto", "kafka": cfg.kafka.model_copy(update={"raw_topic": kafka_topic("flows.raw.shared")})}
    )
    base = scenario.base_window()
    truth = send_ramp(cfg, base, tmp_path, processes=2)

    with psycopg.connect(clean_pg) as conn:
        sql = "SELECT instance, from_landing, to_landing FROM flowlens.mode_switches ORDER BY switched_at"
        recorded = conn.execute(sql).fetchall()
    assert [r[1:] for r in recorded] == [("postgres", "kafka"), ("kafka", "postgres")]
    assert {r[0] for r in recorded} == {"ramp/w0"}  # the leader decided for the daemon

    stats = json.loads((tmp_path / "stats.json").read_text())
    assert stats["mode_switches"] == {"postgres>kafka": 1, "kafka>postgres": 1}

    landing = open_landing(cfg)
    read, exporters = 0, {POSTGRES: set(), KAFKA: set()}
    try:
        window = window_start(base)
        end = base + timedelta(seconds=sum(seconds for _, seconds in RAMP) * SPEED)
        while window < end:
            read += landing.read_window(window, window + WINDOW).flows.num_rows
            for name, part in ((POSTGRES, landing.pg), (KAFKA, landing.kafka)):
                column = part.read_window(window, window + WINDOW).flows.column("exporter")
                exporters[name] |= {addr_text(a) for a in pc.unique(column).to_pylist()}
            window += WINDOW
    finally:
        landing.close()
    assert read == sum(flows for _, _, flows in truth.values())
    # the generator's exporters 127.0.0.1-3 are spread over both processes (by address, mod 2):
    # each process followed the one decision, so each landed in both
    assert exporters[POSTGRES] == exporters[KAFKA] == {"127.0.0.1", "127.0.0.2", "127.0.0.3"}
