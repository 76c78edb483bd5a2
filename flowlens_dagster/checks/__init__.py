"""Asset checks (Great Expectations suites and reconciliation) for every table FlowLens writes."""

import dagster as dg

ALL_CHECKS: list[dg.AssetChecksDefinition] = []
