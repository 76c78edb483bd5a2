"""Names of every check, defined once, next to the asset keys they are attached to.

Asset keys are the pipeline's contract (``assets.keys``); check names are what the Dagster UI lists
under each asset, so they read as the property that holds when the check passes.
"""

from __future__ import annotations

# Asset keys (the pipeline's contract) live in assets.keys; checks refer to them through this module.
from assets.keys import (  # noqa: F401
    DEPENDENCIES,
    ENRICHED_FLOWS,
    FLOW_STATS,
    FLOW_STATS_DAILY,
    FLOW_STATS_HOURLY,
    FLOWS_LANDED,
    NETWORK_ASSETS,
    ROLLUP_ASSETS,
    TOPOLOGY_CHANGES,
    WINDOW_ASSETS,
)

# Great Expectations suites: one check per table, named "<table>_suite".
LANDING_SUITE = "landing_suite"
ENRICHED_SUITE = "enriched_suite"
FLOW_STATS_SUITE = "flow_stats_suite"
ASSETS_SUITE = "network_assets_suite"
DEPENDENCIES_SUITE = "dependencies_suite"
CHANGES_SUITE = "topology_changes_suite"
HOURLY_SUITE = "flow_stats_hourly_suite"
DAILY_SUITE = "flow_stats_daily_suite"

# Reconciliation: what no off-the-shelf suite can see.
LANDING_MATCHES_LOAD = "landing_matches_load"  # late data / flows removed from the landing
LAKE_MATCHES_LOAD = "lake_matches_load"  # enriched lake holds exactly what was landed
STATS_CONSERVE_FLOWS = "stats_conserve_flows"  # flows, bytes, packets: lake == flow_stats
NO_WINDOW_GAP = "no_window_gap"  # every earlier window was materialized
ASSETS_COVER_STATS = "assets_cover_stats"  # every address in flow_stats is an asset
DEPENDENCIES_COVER_STATS = "dependencies_cover_stats"  # every flow_stats key is a dependency
HOURLY_CONSERVES_STATS = "hourly_conserves_stats"
DAILY_CONSERVES_STATS = "daily_conserves_stats"
