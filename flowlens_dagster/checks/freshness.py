"""Freshness and schema-change checks on the window assets, so a stall shows up as stale, not silence.

- Freshness policies (``dg.FreshnessPolicy.time_window``): a 5-minute window asset that has not
  materialized for 10 minutes warns, 15 minutes fails (two windows missed: the watermark sensor,
  the daemon or the ingest instances stopped). Rollups get an hour/day plus slack.
  :func:`apply_freshness_policies` attaches them to a ``Definitions``.
  Dagster 1.13 evaluates these policies itself (no sensor; the superseded
  ``build_last_update_freshness_checks`` + sensor pair is not used) and shows PASS/WARN/FAIL.
- Column-schema-change checks (``dg.build_column_schema_change_checks``): compare each
  materialization's ``dagster/column_schema`` with the previous one; a column added, dropped or
  retyped warns, since SQL users and the API read these tables by name.
"""

from __future__ import annotations

import warnings
from datetime import timedelta

import dagster as dg

from flowlens_dagster.checks import names

# asset -> (warn after, fail after) without a materialization
LIMITS: dict[str, tuple[timedelta, timedelta]] = {
    **{asset: (timedelta(minutes=10), timedelta(minutes=15)) for asset in (names.FLOWS_LANDED, *names.WINDOW_ASSETS)},
    names.FLOW_STATS_HOURLY: (timedelta(minutes=75), timedelta(hours=2)),
    names.FLOW_STATS_DAILY: (timedelta(hours=26), timedelta(hours=30)),
}
SCHEMA_CHECKED = (*names.WINDOW_ASSETS, *names.ROLLUP_ASSETS)


def freshness_policy(asset: str) -> dg.FreshnessPolicy:
    warn, fail = LIMITS[asset]
    return dg.FreshnessPolicy.time_window(fail_window=fail, warn_window=warn)


def apply_freshness_policies(defs: dg.Definitions) -> dg.Definitions:
    """``defs`` with each window/rollup asset given its freshness policy (other assets unchanged)."""
    return defs.map_asset_specs(func=with_freshness_policy)


def with_freshness_policy(spec: dg.AssetSpec) -> dg.AssetSpec:
    """``spec`` with its FlowLens freshness policy, when it is one of the assets in :data:`LIMITS`."""
    asset = spec.key.to_user_string()
    return dg.apply_freshness_policy(spec, freshness_policy(asset)) if asset in LIMITS else spec


def build_schema_change_checks() -> list[dg.AssetChecksDefinition]:
    """WARN when a materialization's ``dagster/column_schema`` differs from the previous one."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=dg.BetaWarning)  # beta in 1.13; behaves as documented
        return list(dg.build_column_schema_change_checks(assets=list(SCHEMA_CHECKED)))
