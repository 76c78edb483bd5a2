"""A private Prometheus started by the stack's own code (``flowlens_dagster/stack/monitoring.py``).

It runs from a temporary state directory on free ports and scrapes and evaluates every second, so
tests see series and alerts within seconds; its HTTP query API is what the tests read.
"""

from __future__ import annotations

import json
import time
import urllib.parse
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

from flowlens_dagster.stack.monitoring import ALERTMANAGER_SERVICE, PROMETHEUS_SERVICE
from ingest.config import FlowLensConfig
from tests.ingest.private_services import free_tcp_port


class PrivatePrometheus:
    def __init__(
        self, cfg: FlowLensConfig, state_dir: Path, rules: Path | None = None, alertmanager: bool = False, **ports: int
    ) -> None:
        mon = cfg.monitoring.model_copy(
            update={
                "prometheus_port": free_tcp_port(),
                "alertmanager_port": free_tcp_port(),  # started only with alertmanager=True
                "exporter_port": ports.get("exporter_port", free_tcp_port()),
                "scrape_interval_seconds": 1.0,
                "evaluation_interval_seconds": 1.0,
            }
        )
        ingest = cfg.ingest.model_copy(update={"metrics_port": ports.get("ingest_port", free_tcp_port())})
        self.cfg = cfg.model_copy(update={"state_dir": state_dir, "monitoring": mon, "ingest": ingest})
        self.rules, self.alertmanager = rules, alertmanager
        self.url = PROMETHEUS_SERVICE.url(self.cfg)

    def __enter__(self) -> PrivatePrometheus:
        if self.alertmanager:
            ALERTMANAGER_SERVICE.start(self.cfg)
        PROMETHEUS_SERVICE.start(self.cfg, rules=self.rules)
        return self

    def __exit__(self, *exc: object) -> None:
        PROMETHEUS_SERVICE.down(self.cfg)
        ALERTMANAGER_SERVICE.down(self.cfg)

    def alertmanager_alerts(self) -> set[str]:
        """Names of the alerts Alertmanager holds (received from this Prometheus)."""
        with urllib.request.urlopen(f"{ALERTMANAGER_SERVICE.url(self.cfg)}/api/v2/alerts", timeout=10) as response:
            return {alert["labels"]["alertname"] for alert in json.load(response)}

    def api(self, path: str, **params: str) -> Any:
        query = f"?{urllib.parse.urlencode(params)}" if params else ""
        with urllib.request.urlopen(f"{self.url}/api/v1/{path}{query}", timeout=10) as response:
            body = json.load(response)
        assert body["status"] == "success", body
        return body["data"]

    def query(self, expr: str) -> dict[tuple[tuple[str, str], ...], float]:
        """Instant query: {sorted labels (without __name__): value}."""
        return {
            tuple(sorted((k, v) for k, v in r["metric"].items() if k != "__name__")): float(r["value"][1])
            for r in self.api("query", query=expr)["result"]
        }

    def value(self, expr: str) -> float | None:
        """The single value of an instant query, None when it returns nothing."""
        result = self.query(expr)
        assert len(result) <= 1, result
        return next(iter(result.values()), None)

    def firing(self) -> dict[str, list[dict[str, str]]]:
        """Alert name -> labels of each firing instance."""
        out: dict[str, list[dict[str, str]]] = {}
        for alert in self.api("alerts")["alerts"]:
            if alert["state"] == "firing":
                out.setdefault(alert["labels"]["alertname"], []).append(alert["labels"])
        return out


def wait_until(check: Callable[[], Any], timeout: float, what: str, every: float = 0.5) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(every)
