"""Late data, caught after the fact: a sensor that re-evaluates ``landing_matches_load`` when a
window's landing changed after the window was processed.

The reconciliation check runs right after ``enriched_flows`` materializes, when landing and load
agree by construction. Flows that land later with a receive time inside an already processed
window (an ingest instance presumed dead that comes back, a replay) would go unnoticed until the
check ran again. Each tick this sensor compares, for the most recently loaded windows, the
landing's row count with what ``enriched_flows`` read; for each mismatch it evaluates the check
and reports the failed evaluation on that partition (no run needed), so the message naming the
partition to re-materialize shows up on ``enriched_flows`` in the UI. On PostgreSQL the landing
counts the window (one aggregate query); on Kafka the landings' published tallies of each window
(``ingest.land.ledger``) say how many flows were landed and whether messages were deleted since,
without reading a flow back. Auto mode reads windows from both landings: the check runs with each
materialization there.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any

import dagster as dg

from assets.resources import LakeResource, LandingResource, PostgresResource
from flowlens_dagster.checks import names
from flowlens_dagster.checks.asset_checks import check_metadata
from flowlens_dagster.checks.evaluate import sources_from
from flowlens_dagster.checks.reconcile import landing_matches_load
from flowlens_dagster.checks.windows import Span
from ingest.land.base import SummarizesWindows
from ingest.services import ServiceUnavailable, require
from ingest.window import WINDOW, window_key

RECENT_WINDOWS = 6  # windows compared per tick (30 minutes of receive time)

RECENT_SQL = """
SELECT window_start, rows_read FROM flowlens.window_loads
WHERE asset = %(asset)s AND source LIKE %(source)s ORDER BY window_start DESC LIMIT %(n)s
"""


def changed_windows(
    postgres: PostgresResource, landing: Any, recent: int = RECENT_WINDOWS
) -> list[tuple[datetime, int, int]]:
    """(window, rows enriched_flows read, rows landed now) where they differ, or (Kafka) where
    messages of the window were deleted since; oldest first. ``landing`` summarizes windows
    (PostgreSQL) or publishes tallies (Kafka)."""
    source, landed_now = _counter(landing)
    with postgres.connect() as conn:
        loads = conn.execute(RECENT_SQL, {"asset": names.ENRICHED_FLOWS, "source": source, "n": recent}).fetchall()
    out = []
    for window, read in reversed(loads):
        landed, deleted = landed_now(window)
        if int(read) != landed or deleted:
            out.append((window, int(read), landed))
    return out


def _counter(landing: Any) -> tuple[str, Callable[[datetime], tuple[int, bool]]]:
    """The loads' source pattern and (rows landed now, messages deleted) of a window, for ``landing``."""
    if isinstance(landing, SummarizesWindows):
        return "postgres:%", lambda window: (landing.summarize_window(window, window + WINDOW).rows, False)

    def tallied(window: datetime) -> tuple[int, bool]:
        reading = landing.landed_tally(window)
        return (reading.tally.rows if reading.tally else 0), bool(reading.deleted())

    return "kafka:%", tallied


@dg.sensor(
    name="late_data_sensor",
    minimum_interval_seconds=300,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description=__doc__.split("\n\n")[0],
)
def late_data_sensor(
    context: dg.SensorEvaluationContext, postgres: PostgresResource, lake: LakeResource, landing: LandingResource
) -> dg.SensorResult | dg.SkipReason:
    if landing.mode == "auto":
        return dg.SkipReason("landing is auto (both landings): landing_matches_load runs with each materialization")
    services = ["postgres", "kafka"] if landing.mode in ("standard", "full") else ["postgres"]
    try:  # a stopped stack is one line per tick in the UI, not a traceback
        require(landing.flowlens_config(), services, "late_data_sensor")
    except ServiceUnavailable as exc:
        return dg.SkipReason(str(exc))
    opened = landing.open()
    try:
        if not isinstance(opened, SummarizesWindows) and not hasattr(opened, "landed_tally"):
            return dg.SkipReason(f"landing {opened.name} cannot count a window: landing_matches_load runs with loads")
        changed = changed_windows(postgres, opened)
    finally:
        opened.close()
    if not changed:
        return dg.SkipReason(f"the landing of the last {RECENT_WINDOWS} processed windows is unchanged")
    sources = sources_from({"postgres": postgres, "lake": lake, "landing": landing})
    evaluations = []
    try:
        for window, _read, _landed in changed:
            finding = landing_matches_load(sources, Span.window(window))
            context.log.warning(finding.message)
            evaluations.append(
                dg.AssetCheckEvaluation(
                    asset_key=dg.AssetKey(names.ENRICHED_FLOWS),
                    check_name=names.LANDING_MATCHES_LOAD,
                    passed=finding.passed,
                    description=finding.message,
                    metadata=check_metadata(finding),
                    partition=window_key(window),
                )
            )
    finally:
        sources.close()
    return dg.SensorResult(asset_events=evaluations)
