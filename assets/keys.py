"""Asset keys, defined once: the pipeline's contract with checks, jobs, sensors and ``flowlens run``.

The assets in this package register under these names; everything that selects, checks or
queries an asset (``window_loads.asset`` holds the same strings) imports them from here.
"""

from __future__ import annotations

FLOWS_LANDED = "flows_landed"  # external: the ingest daemon writes it
ENRICHED_FLOWS = "enriched_flows"
FLOW_STATS = "flow_stats"
NETWORK_ASSETS = "network_assets"
DEPENDENCIES = "dependencies"
TOPOLOGY_CHANGES = "topology_changes"
FLOW_STATS_HOURLY = "flow_stats_hourly"
FLOW_STATS_DAILY = "flow_stats_daily"

# The window job's assets in dependency order; a window is done when the last one is recorded.
WINDOW_ASSETS = (ENRICHED_FLOWS, FLOW_STATS, NETWORK_ASSETS, DEPENDENCIES, TOPOLOGY_CHANGES)
DONE_ASSET = WINDOW_ASSETS[-1]
ROLLUP_ASSETS = (FLOW_STATS_HOURLY, FLOW_STATS_DAILY)
