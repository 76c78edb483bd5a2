"""The Grafana dashboard: importable as is, every query valid PromQL over exported metrics, every metric shown."""

from __future__ import annotations

import json
import re
import subprocess

import yaml

from flowlens_dagster.monitoring import DASHBOARD_FILE, asset_path
from tests.flowlens_dagster.monitoring.exported import PENDING, exported, metric_names
from tests.flowlens_dagster.monitoring.test_rules import PROMTOOL, needs_promtool


def dashboard() -> dict:
    return json.loads(asset_path(DASHBOARD_FILE).read_text())


def panels() -> list[dict]:
    return [panel for panel in dashboard()["panels"] if panel["type"] != "row"]


def queries() -> list[str]:
    return [target["expr"] for panel in panels() for target in panel["targets"]]


def family(name: str) -> str:
    return re.sub(r"_(total|bucket|sum|count)$", "", name)


def test_importable_with_a_prometheus_data_source_input():
    dash = dashboard()
    assert [i["name"] for i in dash["__inputs"]] == ["DS_PROMETHEUS"]
    assert dash["uid"] and dash["title"] and dash["schemaVersion"] >= 30
    ids = [panel["id"] for panel in dash["panels"]]
    assert len(ids) == len(set(ids))
    for panel in panels():
        assert panel["datasource"] == {"type": "prometheus", "uid": "${DS_PROMETHEUS}"}, panel["title"]
        assert panel["targets"] and panel["gridPos"]["x"] + panel["gridPos"]["w"] <= 24


def test_every_query_names_only_exported_metrics():
    names = exported()
    for expr in queries():
        for metric in metric_names(expr):
            assert metric in names or metric in PENDING, f"{metric} in {expr!r} is not exported"


def test_every_exported_metric_has_a_panel():
    shown = {family(name) for expr in queries() for name in metric_names(expr)}
    assert {family(name) for name in exported()} <= shown


@needs_promtool
def test_every_query_is_valid_promql(tmp_path):
    # promtool parses recording rules: one per panel query.
    rules = [{"record": f"dashboard:query_{i}", "expr": expr} for i, expr in enumerate(queries())]
    path = tmp_path / "queries.yaml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    result = subprocess.run([PROMTOOL, "check", "rules", str(path)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
