"""The Dagster side of the checks: one ``@dg.multi_asset_check`` per guarded asset.

Each definition carries that asset's checks (:data:`flowlens_dagster.checks.evaluate.CHECKS`) as
partitioned ``AssetCheckSpec``s, so they run with the asset's materialization in the same run
(blocking ones stop downstream assets from reading a bad window) and their results show per
partition in the UI. One step per asset, not per check: the step reads each source once and
pays the Great Expectations import once.
"""

# No ``from __future__ import annotations`` here: Dagster inspects the ``context`` annotation at runtime.
import warnings
from collections.abc import Iterator
from typing import Any

import dagster as dg

from assets import metrics
from assets.partitions import daily_partitions, five_minute_partitions, hourly_partitions
from flowlens_dagster.checks.evaluate import BY_NAME, CHECKS, CheckSpec, evaluate, sources_from, spans
from flowlens_dagster.checks.reconcile import Finding, jsonable

PARTITIONS: dict[str, dg.TimeWindowPartitionsDefinition] = {
    "window": five_minute_partitions,
    "hour": hourly_partitions,
    "day": daily_partitions,
}
RESOURCES = {"postgres", "lake", "landing"}
MAX_DESCRIPTION = 4000  # characters; the full findings stay in the metadata


def check_result(spec: CheckSpec, finding: Finding) -> dg.AssetCheckResult:
    """A Dagster result whose description says what failed and what to do."""
    return dg.AssetCheckResult(
        asset_key=spec.asset,
        check_name=spec.name,
        passed=finding.passed,
        severity=dg.AssetCheckSeverity.ERROR,
        description=finding.message[:MAX_DESCRIPTION],
        metadata=check_metadata(finding),
    )


def check_metadata(finding: Finding) -> dict[str, Any]:
    """Finding metadata as Dagster metadata: numbers and text as is, structures as JSON, failed
    expectations also as a markdown table (expectation, column, unexpected count, examples)."""
    out: dict[str, Any] = {}
    for key, value in jsonable(finding.metadata).items():
        if isinstance(value, bool) or value is None:
            out[key] = dg.MetadataValue.text(str(value))
        elif isinstance(value, int | float | str):
            out[key] = value
        else:
            out[key] = dg.MetadataValue.json(value)
    failures = finding.metadata.get("failures") or []
    if failures:
        out["failed_expectation"] = failures[0]["expectation"]
        out["column"] = failures[0]["column"]
        out["unexpected_count"] = dg.MetadataValue.int(int(failures[0]["unexpected_count"] or 0))
        out["failed_expectations_table"] = dg.MetadataValue.md(_failure_table(failures))
    return out


def _failure_table(failures: list[dict[str, Any]]) -> str:
    rows = ["| expectation | column | meaning | unexpected | examples |", "|---|---|---|---|---|"]
    for f in failures:
        examples = ", ".join(str(e) for e in f.get("examples") or [])[:200] or f.get("error", "")
        cells = [f["expectation"], f["column"], f["meaning"], str(f.get("unexpected_count")), examples]
        rows.append("| " + " | ".join(c.replace("|", "/") for c in cells) + " |")
    return "\n".join(rows)


def _checks_for(asset: str) -> dg.AssetChecksDefinition:
    specs = [spec for spec in CHECKS if spec.asset == asset]
    period = specs[0].period
    partitions = PARTITIONS[period]

    @dg.multi_asset_check(
        name=f"{asset}_checks",
        description=f"Great Expectations suite and reconciliation checks of {asset}, per partition.",
        specs=[
            dg.AssetCheckSpec(
                spec.name,
                asset=asset,
                blocking=spec.blocking,
                description=spec.description,
                additional_deps=list(spec.reads),
                partitions_def=partitions,
            )
            for spec in specs
        ],
        can_subset=True,
        required_resource_keys=RESOURCES,
    )
    def _checks(context: dg.AssetCheckExecutionContext) -> Iterator[dg.AssetCheckResult]:
        sources = sources_from(context.resources)
        window = context.partition_time_window
        over = spans(period, window.start, window.end, lambda ts: ts.strftime(partitions.fmt))
        try:
            for key in sorted(context.selected_asset_check_keys, key=lambda k: k.name):
                spec = BY_NAME[key.name]
                finding = evaluate(spec, sources, over)
                context.log.info(f"{spec.asset}/{spec.name}: {'pass' if finding.passed else 'FAIL'}: {finding.message}")
                metrics.QUALITY_CHECKS.labels(spec.asset, spec.name, "pass" if finding.passed else "fail").inc()
                yield check_result(spec, finding)
        finally:
            sources.close()
            metrics.flush(context.resources.postgres.dsn())

    return _checks


def build_asset_checks() -> list[dg.AssetChecksDefinition]:
    """One multi-check definition per guarded asset, in data-path order."""
    assets = list(dict.fromkeys(spec.asset for spec in CHECKS))
    with warnings.catch_warnings():
        # Partitioned check specs are "preview" in Dagster 1.13; tests/flowlens_dagster/checks runs them per partition.
        warnings.filterwarnings("ignore", category=dg.PreviewWarning)
        return [_checks_for(asset) for asset in assets]
