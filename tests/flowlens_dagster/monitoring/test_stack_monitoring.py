"""Prometheus and Alertmanager of the local stack: provisioned with the rules and every component's target."""

from __future__ import annotations

import pytest

from flowlens_dagster.monitoring.exporter import serve
from flowlens_dagster.stack import cli as stack
from flowlens_dagster.stack.monitoring import PROMETHEUS_SERVICE, prometheus_config, scrape_targets
from ingest.config import load_config
from tests.flowlens_dagster.monitoring.prom import PrivatePrometheus, wait_until
from tests.flowlens_dagster.monitoring.test_dashboard import queries
from tests.flowlens_dagster.monitoring.test_rules import rules
from tests.ingest.private_services import free_tcp_port

pytestmark = pytest.mark.integration


def test_full_mode_adds_the_monitoring_and_status_shows_its_urls(flowlens_config):
    assert {"prometheus", "alertmanager", "exporter"} <= set(stack.services_for("full"))
    assert not {"prometheus", "alertmanager", "exporter"} & set(stack.services_for("standard"))
    report = stack.status(flowlens_config, "full")
    mon = flowlens_config.monitoring
    for name, port in (("prometheus", mon.prometheus_port), ("alertmanager", mon.alertmanager_port),
                       ("exporter", mon.exporter_port)):  # fmt: skip
        assert report[name]["healthy"], report[name]
        assert str(report[name]["detail"]).startswith(f"http://{mon.host}:{port}")


def test_scrape_targets_follow_the_config():
    cfg = load_config(environ={"FLOWLENS_INGEST__METRICS_PORT": "9300", "FLOWLENS_MONITORING__EXPORTER_PORT": "9301"})
    targets = scrape_targets(cfg)
    assert targets["flowlens-ingest"] == "127.0.0.1:9300" and targets["flowlens-pipeline"] == "127.0.0.1:9301"
    config = prometheus_config(cfg, rules=PROMETHEUS_SERVICE.conf(cfg))
    assert config["alerting"]["alertmanagers"][0]["static_configs"][0]["targets"] == ["127.0.0.1:59094"]
    no_daemon = load_config(environ={"FLOWLENS_INGEST__METRICS_PORT": "0"})
    assert "flowlens-ingest" not in scrape_targets(no_daemon)


def test_prometheus_loads_every_rule_scrapes_the_pipeline_and_answers_every_panel(flowlens_config, tmp_path):
    exporter_port = free_tcp_port()
    serve(flowlens_config.model_copy(update={"mode": "minimal"}), "127.0.0.1", exporter_port)
    with PrivatePrometheus(flowlens_config, tmp_path, exporter_port=exporter_port) as prom:
        wait_until(lambda: prom.value('up{job="flowlens-pipeline"}') == 1, 30, "the exporter scraped")
        wait_until(lambda: prom.value('flowlens_exporter_source_up{source="postgresql"}') == 1, 30, "exporter series")
        loaded = {rule["name"] for group in prom.api("rules")["groups"] for rule in group["rules"]}
        assert loaded == set(rules())
        # No daemon here: its target is visible as down, not missing.
        wait_until(lambda: prom.value('up{job="flowlens-ingest"}') == 0, 30, "the daemon's target scraped as down")
        for expr in queries():
            prom.api("query", query=expr)  # every panel's query is accepted by the real Prometheus
        pid = PROMETHEUS_SERVICE.running_pid(prom.cfg)
        assert pid is not None
    assert PROMETHEUS_SERVICE.running_pid(prom.cfg) is None
