"""The alert rules: valid for promtool, each one unit-tested with promtool, reading only exported metrics."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from flowlens_dagster.monitoring import RULES_FILE, asset_path
from tests.flowlens_dagster.monitoring.exported import PENDING, exported, metric_names

PROMTOOL = shutil.which("promtool") or "/usr/bin/promtool"
MODEL_RULES = {  # the scaling model's §9.2
    "HighFlowDropRate", "IngestionQueueFull", "KafkaConsumerLag", "KafkaConsumerStalled",
    "PostgreSQLConnectionPoolExhausted", "PostgreSQLWriteLatency", "APIHighLatency", "APIErrorRate",
}  # fmt: skip
PROJECT_RULES = {"LandingDown", "TemplatePendingFlows", "ModeFlapping", "RedisModeFlapping", "QualityCheckFailures"}

needs_promtool = pytest.mark.skipif(not Path(PROMTOOL).exists(), reason="promtool missing: run scripts/setup.sh")


def rules() -> dict[str, dict[str, Any]]:
    doc = yaml.safe_load(asset_path(RULES_FILE).read_text())
    return {rule["alert"]: rule for group in doc["groups"] for rule in group["rules"]}


def test_every_model_rule_and_the_projects_own_are_in_one_file():
    assert set(rules()) >= MODEL_RULES | PROJECT_RULES


def test_rules_read_only_exported_metrics():
    names = exported()
    for alert, rule in rules().items():
        for metric in metric_names(rule["expr"]):
            assert metric in names or metric in PENDING, f"{alert} reads {metric}, which nothing exports"


def test_pending_names_are_not_exported_yet():
    assert not set(PENDING) & exported(), "now exported: remove from PENDING in exported.py"


@needs_promtool
def test_promtool_check_rules():
    result = subprocess.run([PROMTOOL, "check", "rules", str(asset_path(RULES_FILE))], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(rules())} rules found" in result.stdout


# One scenario per alert, at a 1-minute scrape interval: input series, the alert's labels when it
# fires at `fires_at`, and a time (or a second set of series) at which it must not fire.
SCENARIOS: dict[str, dict[str, Any]] = {
    "HighFlowDropRate": {
        "series": {'flowlens_flows_dropped_total{reason="backpressure"}': "0+120000x20"},  # 2,000/s
        "quiet_series": {'flowlens_flows_dropped_total{reason="backpressure"}': "0+30000x20"},  # 500/s
        "fires_at": "10m", "quiet_at": "4m", "labels": {},
    },
    "IngestionQueueFull": {
        "series": {'flowlens_ingestion_queue_depth{instance="ingest:9109"}': "90000x10"},
        "quiet_series": {'flowlens_ingestion_queue_depth{instance="ingest:9109"}': "70000x10"},
        "fires_at": "5m", "quiet_at": "1m", "labels": {"instance": "ingest:9109"},
    },
    "LandingDown": {
        "series": {'flowlens_landing_up{backend="postgres"}': "1 1 0x10"},
        "fires_at": "5m", "quiet_at": "2m", "labels": {"backend": "postgres"},
    },
    "TemplatePendingFlows": {
        "series": {"flowlens_template_pending_sets": "3x20"},
        "quiet_series": {"flowlens_template_pending_sets": "0x20"},
        "fires_at": "15m", "quiet_at": "5m", "labels": {},
    },
    "TemplatePendingDropped": {
        "series": {'flowlens_template_pending_dropped_total{reason="expired"}': "0 0 0 0 4x20"},
        "quiet_series": {'flowlens_template_pending_dropped_total{reason="expired"}': "4x20"},
        "fires_at": "6m", "quiet_at": "2m", "labels": {"reason": "expired"},
    },
    "IngestionSpooling": {
        "series": {"flowlens_spool_bytes": "0 0 1048576x20"},
        "quiet_series": {"flowlens_spool_bytes": "0x20"},
        "fires_at": "10m", "quiet_at": "4m", "labels": {},
    },
    "ModeFlapping": {  # landing switches only: the API's Redis switches (quiet_series) are not the landing's
        "series": {'flowlens_mode_switches_total{from="postgres",to="kafka"}': "0+1x30",
                   'flowlens_mode_switches_total{from="kafka",to="postgres"}': "0+1x30"},
        "quiet_series": {'flowlens_mode_switches_total{from="postgres",to="kafka"}': "0 0 0 1x30",
                         'flowlens_api_redis_switches_total{from="memory",to="redis"}': "0+1x30",
                         'flowlens_api_redis_switches_total{from="redis",to="memory"}': "0+1x30"},
        "fires_at": "20m", "quiet_at": "1m", "labels": {},
    },
    "RedisModeFlapping": {  # the API's Redis switches only: landing switches (quiet_series) are not counted
        "series": {'flowlens_api_redis_switches_total{from="memory",to="redis"}': "0+1x30",
                   'flowlens_api_redis_switches_total{from="redis",to="memory"}': "0+1x30"},
        "quiet_series": {'flowlens_api_redis_switches_total{from="memory",to="redis"}': "0 0 0 1x30",
                         'flowlens_mode_switches_total{from="postgres",to="kafka"}': "0+1x30",
                         'flowlens_mode_switches_total{from="kafka",to="postgres"}': "0+1x30"},
        "fires_at": "20m", "quiet_at": "1m", "labels": {},
    },
    "KafkaConsumerLag": {
        "series": {
            'flowlens_kafka_consumer_lag_seconds{topic="flows.raw",partition="3",consumer_group="flowlens-pipeline"}':
                "400x10",
            'flowlens_kafka_consumer_lag_seconds{topic="flows.raw",partition="0",consumer_group="flowlens-pipeline"}':
                "10x10",
        },
        "fires_at": "8m", "quiet_at": "3m", "labels": {"topic": "flows.raw", "partition": "3"},
    },
    "KafkaConsumerStalled": {
        "series": {
            'flowlens_kafka_messages_consumed_total{topic="flows.raw"}': "500x30",
            'flowlens_kafka_consumer_lag_seconds{topic="flows.raw",partition="0",consumer_group="p"}': "900x30",
        },
        "quiet_series": {  # consuming while behind: catching up, not stalled
            'flowlens_kafka_messages_consumed_total{topic="flows.raw"}': "0+100x30",
            'flowlens_kafka_consumer_lag_seconds{topic="flows.raw",partition="0",consumer_group="p"}': "900x30",
        },
        "fires_at": "20m", "quiet_at": "3m", "labels": {"topic": "flows.raw"},
    },
    "PostgreSQLConnectionPoolExhausted": {
        "series": {"flowlens_pg_connections_waiting": "15x10"},
        "fires_at": "5m", "quiet_at": "1m", "labels": {},
    },
    "PostgreSQLWriteLatency": {  # every write between 1 s and 2.5 s
        "series": {
            'flowlens_pg_write_latency_seconds_bucket{table="flow_stats",le="1.0"}': "0x20",
            'flowlens_pg_write_latency_seconds_bucket{table="flow_stats",le="2.5"}': "0+10x20",
            'flowlens_pg_write_latency_seconds_bucket{table="flow_stats",le="+Inf"}': "0+10x20",
        },
        "fires_at": "10m", "quiet_at": "3m", "labels": {"table": "flow_stats"},
    },
    "APIHighLatency": {
        "series": {
            'flowlens_api_latency_seconds_bucket{endpoint="/api/v1/search",le="1.0"}': "0x20",
            'flowlens_api_latency_seconds_bucket{endpoint="/api/v1/search",le="5.0"}': "0+10x20",
            'flowlens_api_latency_seconds_bucket{endpoint="/api/v1/search",le="+Inf"}': "0+10x20",
        },
        "fires_at": "10m", "quiet_at": "3m", "labels": {},
    },
    "APIErrorRate": {
        "series": {
            'flowlens_api_requests_total{endpoint="/api/v1/search",method="GET",status="500"}': "0+10x20",
            'flowlens_api_requests_total{endpoint="/api/v1/search",method="GET",status="200"}': "0+90x20",
        },
        "quiet_series": {
            'flowlens_api_requests_total{endpoint="/api/v1/search",method="GET",status="500"}': "0+1x20",
            'flowlens_api_requests_total{endpoint="/api/v1/search",method="GET",status="200"}': "0+99x20",
        },
        "fires_at": "10m", "quiet_at": "3m", "labels": {},
    },
    "QualityCheckFailures": {
        "series": {
            'flowlens_quality_checks_total{asset="flow_stats",check="stats_conserve_flows",result="fail"}':
                "0 0 0 1x20",
            'flowlens_quality_checks_total{asset="flow_stats",check="flow_stats_suite",result="pass"}':
                "0+1x20",
        },
        "fires_at": "5m", "quiet_at": "2m", "labels": {"asset": "flow_stats", "check": "stats_conserve_flows"},
    },
    "PipelineLagHigh": {
        "series": {"flowlens_pipeline_lag_seconds": "900x20"},
        "quiet_series": {"flowlens_pipeline_lag_seconds": "200x20"},
        "fires_at": "10m", "quiet_at": "3m", "labels": {},
    },
    "FlowLensTargetDown": {
        "series": {'up{job="flowlens-ingest",instance="127.0.0.1:9109"}': "0x10"},
        "quiet_series": {'up{job="flowlens-ingest",instance="127.0.0.1:9109"}': "1x10"},
        "fires_at": "5m", "quiet_at": "1m", "labels": {"job": "flowlens-ingest", "instance": "127.0.0.1:9109"},
    },
    "MetricsSourceDown": {
        "series": {'flowlens_exporter_source_up{source="kafka"}': "0x10"},
        "fires_at": "5m", "quiet_at": "1m", "labels": {"source": "kafka"},
    },
    "IngestionSampling": {
        "series": {"flowlens_flows_sampled_total": "0+600x20"},
        "fires_at": "10m", "quiet_at": "3m", "labels": {},
    },
    "KernelUdpDrops": {
        "series": {'flowlens_kernel_udp_drops_total{port="2055"}': "0+5x20"},
        "quiet_series": {'flowlens_kernel_udp_drops_total{port="2055"}': "7x20"},
        "fires_at": "10m", "quiet_at": "3m", "labels": {},
    },
    "PacketsRefused": {
        "series": {'flowlens_packets_dropped_total{reason="not_allowed"}': "0+6000x30"},
        "fires_at": "20m", "quiet_at": "5m", "labels": {"reason": "not_allowed"},
    },
    "KafkaDeliveryErrors": {
        "series": {'flowlens_kafka_delivery_errors_total{topic="flows.raw"}': "0+3x20"},
        "fires_at": "10m", "quiet_at": "3m", "labels": {},
    },
}  # fmt: skip


def _expand(text: str, labels: dict[str, str]) -> str:
    return re.sub(r"\{\{ \$labels\.(\w+) \}\}", lambda m: labels.get(m.group(1), ""), text)


def _series(values: dict[str, str]) -> list[dict[str, str]]:
    return [{"series": name, "values": v} for name, v in values.items()]


def promtool_tests(all_rules: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    tests = []
    for alert, case in SCENARIOS.items():
        rule = all_rules[alert]
        labels = {**case["labels"], **rule["labels"]}
        annotations = {k: _expand(v, labels) for k, v in rule.get("annotations", {}).items()}
        fired = {"eval_time": case["fires_at"], "alertname": alert,
                 "exp_alerts": [{"exp_labels": labels, "exp_annotations": annotations}]}  # fmt: skip
        quiet = {"eval_time": case["quiet_at"], "alertname": alert, "exp_alerts": []}
        tests.append({"name": alert, "interval": "1m", "input_series": _series(case["series"]),
                      "alert_rule_test": [quiet, fired]})  # fmt: skip
        if "quiet_series" in case:
            tests.append({"name": f"{alert} (below threshold)", "interval": "1m",
                          "input_series": _series(case["quiet_series"]),
                          "alert_rule_test": [{**quiet, "eval_time": case["fires_at"]}]})  # fmt: skip
    return tests


def test_every_rule_has_a_promtool_scenario():
    assert set(SCENARIOS) == set(rules())


@needs_promtool
def test_promtool_unit_tests(tmp_path):
    shutil.copy(asset_path(RULES_FILE), tmp_path / RULES_FILE)
    spec = {"rule_files": [RULES_FILE], "evaluation_interval": "1m", "tests": promtool_tests(rules())}
    (tmp_path / "alerts_test.yaml").write_text(yaml.safe_dump(spec, sort_keys=False))
    result = subprocess.run([PROMTOOL, "test", "rules", "alerts_test.yaml"], cwd=tmp_path, capture_output=True,
                            text=True)  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout
