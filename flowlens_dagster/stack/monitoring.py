"""The stack's monitoring: Prometheus, Alertmanager (Debian packages) and ``flowlens metrics``.

Started by ``flowlens stack up --mode full``. Layout under ``<state_dir>``: ``prometheus/``
(``prometheus.yml``, ``data/``), ``alertmanager/`` (``alertmanager.yml``, ``data/``),
``logs/<service>.log`` and ``run/<service>.pid``. Prometheus loads the shipped rules file
(``flowlens_dagster/monitoring/prometheus-alerts.yaml``) and scrapes every FlowLens component
at its configured address: the ingest daemon (``ingest.metrics_port``), the pipeline exporter
(``monitoring.exporter_port``), the API (``api.port``, when the configuration has an API),
Alertmanager and itself. A component that is not running shows as ``up == 0`` (alert
``FlowLensTargetDown``), not as a missing target.

Each service is a small :class:`Service`: its command line, its config file and its readiness URL;
``up``/``down``/``health``/``running_pid`` follow the pattern of ``postgres.py`` and ``redis.py``.
"""

from __future__ import annotations

import json
import sys
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from flowlens_dagster.monitoring import RULES_FILE, asset_path
from flowlens_dagster.stack import process
from ingest.config import FlowLensConfig

PROMETHEUS = "/usr/bin/prometheus"
ALERTMANAGER = "/usr/bin/prometheus-alertmanager"
PACKAGES = {PROMETHEUS: "prometheus", ALERTMANAGER: "prometheus-alertmanager"}


def _get(url: str, timeout: float = 2.0) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, b""
    except OSError:
        return 0, b""


def scrape_targets(cfg: FlowLensConfig) -> dict[str, str]:
    """Prometheus job name -> host:port of every FlowLens component (and the monitoring itself)."""
    mon = cfg.monitoring
    targets = {
        "flowlens-ingest": f"{cfg.ingest.metrics_host}:{cfg.ingest.metrics_port}",
        "flowlens-pipeline": f"{mon.host}:{mon.exporter_port}",
        "prometheus": f"{mon.host}:{mon.prometheus_port}",
        "alertmanager": f"{mon.host}:{mon.alertmanager_port}",
    }
    api = getattr(cfg, "api", None)  # the API's config section, when this build has the API
    if api is not None:
        targets["flowlens-api"] = f"{api.host}:{api.port}"
    if not cfg.ingest.metrics_port:
        del targets["flowlens-ingest"]
    return targets


def prometheus_config(cfg: FlowLensConfig, rules: Path) -> dict[str, Any]:
    mon = cfg.monitoring
    return {
        "global": {
            "scrape_interval": f"{mon.scrape_interval_seconds:g}s",
            "evaluation_interval": f"{mon.evaluation_interval_seconds:g}s",
            "scrape_timeout": f"{min(10.0, mon.scrape_interval_seconds):g}s",
        },
        "rule_files": [str(rules)],
        "alerting": {"alertmanagers": [{"static_configs": [{"targets": [f"{mon.host}:{mon.alertmanager_port}"]}]}]},
        "scrape_configs": [
            {"job_name": job, "static_configs": [{"targets": [target]}]} for job, target in scrape_targets(cfg).items()
        ],
    }


def alertmanager_config(cfg: FlowLensConfig) -> dict[str, Any]:
    # Without a webhook, alerts are grouped and shown (UI, API, amtool) but sent nowhere.
    receiver: dict[str, Any] = {"name": "flowlens"}
    if cfg.monitoring.alert_webhook_url:
        receiver["webhook_configs"] = [{"url": cfg.monitoring.alert_webhook_url, "send_resolved": True}]
    return {
        "route": {"receiver": "flowlens", "group_by": ["alertname"], "group_wait": "10s",
                  "group_interval": "1m", "repeat_interval": "4h"},
        "receivers": [receiver],
    }  # fmt: skip


@dataclass(frozen=True)
class Service:
    name: str
    port_key: str  # config key of its port, named in errors

    def port(self, cfg: FlowLensConfig) -> int:
        return getattr(cfg.monitoring, self.port_key.split(".")[1])

    def url(self, cfg: FlowLensConfig) -> str:
        return f"http://{cfg.monitoring.host}:{self.port(cfg)}"

    def root(self, cfg: FlowLensConfig) -> Path:
        return cfg.state_dir / self.name

    def conf(self, cfg: FlowLensConfig) -> Path:
        return self.root(cfg) / f"{self.name}.yml"

    def log_path(self, cfg: FlowLensConfig) -> Path:
        return cfg.state_dir / "logs" / f"{self.name}.log"

    def pidfile(self, cfg: FlowLensConfig) -> Path:
        return cfg.state_dir / "run" / f"{self.name}.pid"

    def marker(self, cfg: FlowLensConfig) -> str:
        # The config file path is on every command line below and unique to this state_dir.
        return str(self.conf(cfg))

    def ready_path(self) -> str:
        return "/metrics" if self.name == "exporter" else "/-/ready"

    def ready(self, cfg: FlowLensConfig) -> bool:
        return _get(self.url(cfg) + self.ready_path())[0] == 200

    def write_config(self, cfg: FlowLensConfig, rules: Path | None = None) -> None:
        self.root(cfg).mkdir(parents=True, exist_ok=True)
        if self.name == "prometheus":
            content = prometheus_config(cfg, rules or asset_path(RULES_FILE))
        elif self.name == "alertmanager":
            content = alertmanager_config(cfg)
        else:  # the exporter reads the FlowLens config; this file only records where it listens
            content = {"listen": self.url(cfg)}
        header = "# Generated by flowlens stack up (flowlens_dagster/stack/monitoring.py); rewritten on every up\n"
        self.conf(cfg).write_text(header + yaml.safe_dump(content, sort_keys=False))

    def argv(self, cfg: FlowLensConfig) -> list[str]:
        mon, data, conf = cfg.monitoring, str(self.root(cfg) / "data"), str(self.conf(cfg))
        listen = f"{mon.host}:{self.port(cfg)}"
        if self.name == "prometheus":
            return [PROMETHEUS, f"--config.file={conf}", f"--storage.tsdb.path={data}",
                    f"--web.listen-address={listen}", f"--storage.tsdb.retention.time={mon.retention}",
                    "--web.enable-lifecycle"]  # fmt: skip
        if self.name == "alertmanager":
            return [ALERTMANAGER, f"--config.file={conf}", f"--storage.path={data}", f"--web.listen-address={listen}",
                    "--cluster.listen-address="]  # fmt: skip
        return [sys.executable, "-m", "flowlens_dagster.monitoring.exporter", "--host", mon.host,
                "--port", str(self.port(cfg)), "--state-dir", str(cfg.state_dir), "--mode", cfg.mode,
                "--marker", conf]  # fmt: skip

    def running_pid(self, cfg: FlowLensConfig) -> int | None:
        return process.running_pid(self.pidfile(cfg), self.marker(cfg))

    def start(self, cfg: FlowLensConfig, rules: Path | None = None, timeout: float = 60.0) -> bool:
        if (pid := self.running_pid(cfg)) is not None:
            self.write_config(cfg, rules)  # picked up by a reload; the process keeps running
            process.wait_running(self.name, pid, self.marker(cfg), lambda: self.ready(cfg), timeout,
                                 self.log_path(cfg))  # fmt: skip
            if self.name == "prometheus":
                _get_post(self.url(cfg) + "/-/reload")
            return False
        process.check_port_free(cfg.monitoring.host, self.port(cfg), self.name, self.port_key)
        self.write_config(cfg, rules)
        process.log(f"starting {self.name} on {self.url(cfg)}")
        process.start_and_wait(self.name, self.argv(cfg), self.log_path(cfg), self.pidfile(cfg), self.marker(cfg),
                               lambda: self.ready(cfg), timeout)  # fmt: skip
        return True

    def health(self, cfg: FlowLensConfig) -> tuple[bool, str]:
        if not self.ready(cfg):
            return False, f"{self.name} does not answer at {self.url(cfg)}{self.ready_path()}"
        return True, f"{self.url(cfg)} {self._detail(cfg)}".rstrip()

    def _detail(self, cfg: FlowLensConfig) -> str:
        if self.name != "prometheus":
            return "(/metrics)" if self.name == "exporter" else "(alerts: /#/alerts)"
        status, body = _get(self.url(cfg) + "/api/v1/targets?state=active")
        if status != 200:
            return ""
        targets = json.loads(body)["data"]["activeTargets"]
        up = sum(1 for t in targets if t.get("health") == "up")
        return f"({up}/{len(targets)} targets up; alerts: /alerts)"

    def up(self, cfg: FlowLensConfig) -> None:
        if self.name != "exporter":
            process.ensure_apt_packages(PACKAGES)
        self.start(cfg)

    def down(self, cfg: FlowLensConfig) -> bool:
        return process.stop(self.pidfile(cfg), self.marker(cfg), self.name, timeout=30.0)


def _get_post(url: str) -> None:
    try:
        urllib.request.urlopen(urllib.request.Request(url, method="POST"), timeout=5).close()
    except OSError as exc:
        process.log(f"reload {url} failed: {exc}")


PROMETHEUS_SERVICE = Service("prometheus", "monitoring.prometheus_port")
ALERTMANAGER_SERVICE = Service("alertmanager", "monitoring.alertmanager_port")
EXPORTER_SERVICE = Service("exporter", "monitoring.exporter_port")
