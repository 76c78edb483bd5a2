"""The FlowLens code location: the one ``dg.Definitions`` Dagster loads.

``dagster dev -m flowlens_dagster.definitions`` (or ``flowlens dagster``) serves it; assets live
in ``assets/``, asset checks in ``flowlens_dagster.checks``, resources are built from the FlowLens
config (``assets.resources``).
"""

from __future__ import annotations

import dagster as dg

from assets.changes import topology_changes
from assets.enriched_flows import enriched_flows
from assets.flow_stats_shards import flow_stats_definition
from assets.landing import flows_landed
from assets.resources import build_resources
from assets.rollups import flow_stats_daily, flow_stats_hourly
from assets.topology import dependencies, network_assets
from flowlens_dagster.checks import ALL_CHECKS, ALL_SENSORS, apply_freshness_policies
from flowlens_dagster.jobs import ALL_JOBS, window_job
from flowlens_dagster.schedules import ALL_SCHEDULES
from flowlens_dagster.sensors import build_sensor
from ingest.config import load_config

ALL_ASSETS = [
    flows_landed,
    enriched_flows,
    flow_stats_definition(load_config().pipeline.shards),
    network_assets,
    dependencies,
    topology_changes,
    flow_stats_hourly,
    flow_stats_daily,
]

defs = apply_freshness_policies(
    dg.Definitions(
        assets=ALL_ASSETS,
        asset_checks=ALL_CHECKS,
        jobs=ALL_JOBS,
        schedules=ALL_SCHEDULES,
        sensors=[build_sensor(window_job), *ALL_SENSORS],
        resources=build_resources(),
    )
)
