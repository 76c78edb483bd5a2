"""flowlens plan: the scaling model's figures, this machine's bench files, impossible inputs."""

from __future__ import annotations

import json

import pytest

from ingest.config import load_config
from ingest.scaling import plan as planner
from ingest.scaling.figures import load_results, save_result
from ingest.scaling.plan import BATCH_FLOW_BYTES, GB, PlanError, PlanInput, make_plan

CFG = load_config(environ={})


def test_the_model_s_burst_scenario_drains_in_its_ten_minutes():
    # §6.2: 50k steady, 200k for 5 minutes, processing at 100k/s -> 30M backlog, 600 s drain.
    plan = make_plan(PlanInput(50_000, 200_000, 300), CFG, {})
    assert plan.mode == "full"
    assert plan.components["pipeline"]["instances"] == 8
    assert plan.burst["processing_flows_per_s"] == 100_000
    assert plan.burst["backlog_flows"] == 30_000_000
    assert plan.burst["predicted_drain_seconds"] == 600
    assert plan.components["ingest"]["instances"] == 8  # §6.2: 8 ingestion instances at 25k each
    assert plan.kafka["partitions"]["flows.raw"] == 12  # §6.2: 12 partitions for the burst


def test_fifty_thousand_steady_sizes_kafka_disk_from_the_record_size():
    plan = make_plan(PlanInput(50_000), CFG, {})
    per_flow = plan.figures["kafka_bytes_per_flow"]["value"]
    expected = 50_000 * 7 * 86_400 * per_flow * 2 / GB
    assert plan.kafka["disk_gb_per_topic"]["flows.raw"] == pytest.approx(expected, abs=0.1)
    assert plan.kafka["brokers"] == 3
    assert plan.redis["needed"] and plan.redis["recommended_maxmemory_gb"] >= 4
    assert plan.postgres["table_gb_per_day"]["flow_raw"] == 0  # raw flows land in Kafka
    assert plan.burst == {"given": False}


def test_a_configured_three_broker_cluster_sizes_kafka_disk_for_its_three_replicas():
    model = make_plan(PlanInput(50_000), CFG, {}).kafka
    cluster_cfg = load_config(environ={"FLOWLENS_KAFKA__BROKERS": "3"})
    cluster = make_plan(PlanInput(50_000), cluster_cfg, {}).kafka
    assert (model["replication_factor"], cluster["replication_factor"]) == (2, 3)
    assert cluster["disk_gb_total"] == pytest.approx(model["disk_gb_total"] * 1.5, abs=0.2)


@pytest.mark.parametrize(
    ("inp", "mode", "kafka", "redis"),
    [
        (PlanInput(2_000), "minimal", False, False),
        (PlanInput(2_000, api_users=50), "standard", False, True),
        (PlanInput(2_000, api_p99_ms=150), "standard", False, True),
        (PlanInput(2_000, websocket=True), "standard", False, True),
        (PlanInput(5_000, 60_000, 120), "auto", True, False),
        (PlanInput(5_000, 60_000, 20), "minimal", False, False),  # burst shorter than the 30 s trigger
        (PlanInput(20_000), "standard", True, True),
        (PlanInput(250_000), "full", True, True),
    ],
)
def test_mode_follows_the_thresholds(inp, mode, kafka, redis):
    plan = make_plan(inp, CFG, {})
    assert (plan.mode, plan.kafka["needed"], plan.redis["needed"]) == (mode, kafka, redis)
    assert ("kafka" in plan.components) == kafka


def test_minimal_mode_stores_raw_flows_in_postgresql():
    plan = make_plan(PlanInput(2_000, retention_days=10), CFG, {})
    raw = plan.postgres["table_gb_per_day"]["flow_raw"]
    batches = plan.postgres["table_gb_per_day"]["flow_raw_batches"]
    assert raw == pytest.approx(2_000 * 86_400 * 150 / GB, abs=0.01)
    assert batches == pytest.approx(2_000 * 86_400 * BATCH_FLOW_BYTES / GB, abs=0.01)
    assert plan.postgres["retained_gb"] > 10 * (raw + batches)


def test_measured_figures_replace_the_rules_of_thumb_and_far_ones_are_flagged(tmp_path):
    save_result(
        tmp_path,
        {
            "bench": "ingest",
            "figures": {"kafka_flows_per_s": 400_000, "postgres_flows_per_s": 300_000},
            "baseline": {},
            "ratio": {},
            "config": {"receiving_processes": 2},
        },
    )
    save_result(
        tmp_path,
        {"bench": "pipeline", "figures": {"flows": 15_000_000, "window_seconds": 50.0, "upsert_rows_per_s": 40_000}},
    )
    (tmp_path / "broken.json").write_text("{not json")
    results = load_results(tmp_path)
    assert set(results) == {"ingest", "pipeline"}
    plan = make_plan(PlanInput(50_000, 200_000, 300), CFG, results)
    figs = plan.figures
    assert figs["ingest_flows_per_s_per_instance"]["value"] == 400_000
    assert figs["ingest_flows_per_s_per_instance"]["source"].startswith("measured")
    assert figs["pipeline_flows_per_s_per_worker"]["value"] == 300_000
    assert figs["upserts_per_s"]["source"].startswith("measured")
    assert plan.components["ingest"]["instances"] == 2  # one would do; autoscaling.ingestion.min_instances = 2
    assert plan.burst["processing_flows_per_s"] == 300_000  # one worker at 50% is enough for 50k
    assert plan.burst["backlog_flows"] == 0
    flagged = "\n".join(plan.flags)
    assert "25k flows/s" in flagged and "400,000/s, 16.0x the rule" in flagged
    assert "50k writes/s (raw" in flagged  # 300k measured: 6x
    assert "aggregated writes" not in flagged  # 40k vs 50k is within a factor of two


@pytest.mark.parametrize(
    ("inp", "message"),
    [
        (PlanInput(-1), "--rate"),
        (PlanInput(float("nan")), "--rate"),
        (PlanInput(50_000, 20_000, 60), "below the steady"),
        (PlanInput(5_000, 60_000, 0), "both --burst-peak"),
        (PlanInput(5_000, 60_000, 30 * 86_400), "retention"),
        (PlanInput(5_000, retention_days=0), "--retention-days"),
        (PlanInput(5_000, api_users=-3), "--users"),
        (PlanInput(5_000, api_p99_ms=0.5), "below 1 ms"),
    ],
)
def test_impossible_inputs_are_refused_with_the_reason(inp, message):
    with pytest.raises(PlanError, match=message):
        make_plan(inp, CFG, {})


def test_a_slow_pipeline_gets_enough_workers_to_drain_the_burst(tmp_path):
    save_result(tmp_path, {"bench": "pipeline", "figures": {"flows": 1_000, "window_seconds": 1.0}})
    plan = make_plan(PlanInput(10_000, 40_000, 60), CFG, load_results(tmp_path))
    assert plan.burst["predicted_drain_seconds"] is not None  # enough workers are planned to drain
    assert plan.components["pipeline"]["instances"] == 20


def test_command_prints_json_and_a_table_and_refuses_bad_input(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert planner.main(["--rate", "200000", "--json", "--bench-dir", str(tmp_path)]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["mode"] == "full" and data["kafka"]["brokers"] == 3
    assert planner.main(["--rate", "50000", "--bench-dir", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "mode: full" in out and "flows.raw" in out and "figures used:" in out
    assert planner.main(["--rate", "5000", "--burst-peak", "1000", "--burst-seconds", "10"]) == 2
    assert "below the steady --rate" in capsys.readouterr().err
