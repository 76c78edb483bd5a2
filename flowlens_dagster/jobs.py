"""Jobs: the 5-minute window job the sensor launches, the rollup jobs, and retention."""

from __future__ import annotations

import dagster as dg

from assets.changes import TOPOLOGY_CHANGES
from assets.enriched_flows import ENRICHED_FLOWS
from assets.flow_stats import FLOW_STATS
from assets.rollups import FLOW_STATS_DAILY, FLOW_STATS_HOURLY, retention_job
from assets.topology import DEPENDENCIES, NETWORK_ASSETS
from flowlens_dagster.partitions import daily_partitions, five_minute_partitions, hourly_partitions

WINDOW_ASSETS = [ENRICHED_FLOWS, FLOW_STATS, NETWORK_ASSETS, DEPENDENCIES, TOPOLOGY_CHANGES]

window_job = dg.define_asset_job(
    "window_job",
    selection=dg.AssetSelection.assets(*WINDOW_ASSETS),
    partitions_def=five_minute_partitions,
    description="One 5-minute window from the landing to flow_stats, assets, dependencies and changes.",
)
hourly_rollup_job = dg.define_asset_job(
    "hourly_rollup_job", selection=dg.AssetSelection.assets(FLOW_STATS_HOURLY), partitions_def=hourly_partitions
)
daily_rollup_job = dg.define_asset_job(
    "daily_rollup_job", selection=dg.AssetSelection.assets(FLOW_STATS_DAILY), partitions_def=daily_partitions
)

ALL_JOBS = [window_job, hourly_rollup_job, daily_rollup_job, retention_job]
