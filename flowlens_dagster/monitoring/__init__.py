"""Monitoring: the pipeline's metrics exporter, the alert rules and the Grafana dashboard.

``prometheus-alerts.yaml`` and ``grafana-dashboard.json`` ship with the package (:func:`asset_path`);
``flowlens stack up --mode full`` provisions Prometheus with the rules (``flowlens_dagster/stack``).
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

RULES_FILE = "prometheus-alerts.yaml"
DASHBOARD_FILE = "grafana-dashboard.json"


def asset_path(name: str) -> Path:
    """Path of a file shipped in this package (rules, dashboard)."""
    return Path(str(resources.files(__name__) / name))
