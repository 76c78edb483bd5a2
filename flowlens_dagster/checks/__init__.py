"""Asset checks for every table FlowLens writes: Great Expectations suites, reconciliation,
freshness policies and schema-change checks (README "Data quality").

For the code location (``flowlens_dagster.definitions``):

- :data:`ALL_CHECKS`: every ``AssetChecksDefinition`` (GX suites and reconciliation per partition,
  column-schema-change checks);
- :func:`apply_freshness_policies`: ``defs = apply_freshness_policies(dg.Definitions(...))`` gives
  the window and rollup assets their freshness policies;
- :data:`ALL_SENSORS`: the late-data sensor (re-evaluates the landing reconciliation of recent windows);
- :func:`run_window_checks`: evaluate one window's checks outside Dagster (the pipeline bench).

Great Expectations is imported only when a check runs, so loading the code location stays fast.
"""

import dagster as dg

from flowlens_dagster.checks.asset_checks import build_asset_checks
from flowlens_dagster.checks.evaluate import run_window_checks
from flowlens_dagster.checks.freshness import apply_freshness_policies, build_schema_change_checks
from flowlens_dagster.checks.late_data import late_data_sensor

ALL_CHECKS: list[dg.AssetChecksDefinition] = [*build_asset_checks(), *build_schema_change_checks()]
ALL_SENSORS: list[dg.SensorDefinition] = [late_data_sensor]

__all__ = ["ALL_CHECKS", "ALL_SENSORS", "apply_freshness_policies", "run_window_checks"]
