"""Metric names FlowLens exports, collected from the code's own registries and collectors."""

from __future__ import annotations

import importlib
import importlib.util
import re
from collections.abc import Iterable

from prometheus_client.core import Metric
from prometheus_client.metrics import MetricWrapperBase

from flowlens_dagster.monitoring.exporter import PipelineCollector
from ingest.config import load_config
from ingest.metrics import DaemonCollector

# Names a rule or panel may read before the component exporting them exists (agreed by name);
# test_pending_names_are_not_exported_yet fails once one of them is exported: then drop it here.
PENDING: dict[str, str] = {}

SUFFIXES = {
    "counter": ("_total",),
    "gauge": ("",),
    "histogram": ("_bucket", "_sum", "_count"),
    "summary": ("", "_sum", "_count"),
}


def exposition_names(families: Iterable[Metric]) -> set[str]:
    return {family.name + suffix for family in families for suffix in SUFFIXES[family.type]}


# Modules of the query API defining metrics: its own, and auto mode's Redis switches.
API_METRIC_MODULES = ("flowlens_dagster.api.metrics", "flowlens_dagster.redis_mode")


def api_families() -> list[Metric]:
    """The query API's metrics, when this build has the API (``flowlens_dagster/api/metrics.py``)."""
    if importlib.util.find_spec("flowlens_dagster.api") is None:
        return []
    modules = [importlib.import_module(name) for name in API_METRIC_MODULES]
    return [
        family
        for module in modules
        for obj in vars(module).values()
        if isinstance(obj, MetricWrapperBase)
        for family in obj.collect()
    ]


def exported() -> set[str]:
    """Every series name the daemon, the pipeline exporter and the API can serve."""
    daemon = DaemonCollector(ports=[]).collect()
    pipeline = PipelineCollector(load_config(environ={})).describe()
    return exposition_names([*daemon, *pipeline, *api_families()])


def metric_names(expr: str) -> set[str]:
    """FlowLens metric names a PromQL expression reads."""
    return set(re.findall(r"\bflowlens_[a-z0-9_]+", expr))
