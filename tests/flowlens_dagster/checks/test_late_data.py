"""The late-data sensor notices a window whose landing grew after processing and reports the failed
reconciliation check on that partition, naming the partition to re-materialize."""

from __future__ import annotations

import dagster as dg
import pytest

from flowlens_dagster.checks import names
from flowlens_dagster.checks.late_data import late_data_sensor

from .conftest import KEY0, WINDOW0, Pipeline

pytestmark = pytest.mark.integration


def test_late_data_sensor_reports_the_failed_check_naming_the_window(pipeline: Pipeline) -> None:
    pipeline.land(WINDOW0)
    pipeline.process(WINDOW0)
    with dg.build_sensor_context(resources=pipeline.resources) as context:
        assert isinstance(late_data_sensor(context), dg.SkipReason)  # nothing changed since processing

    pipeline.land(WINDOW0, flows=12, seed=5)  # flows that land after their window was processed
    with dg.build_sensor_context(resources=pipeline.resources) as context:
        result = late_data_sensor(context)
    (evaluation,) = result.asset_events
    assert evaluation.asset_key.to_user_string() == names.ENRICHED_FLOWS and evaluation.partition == KEY0
    assert evaluation.check_name == names.LANDING_MATCHES_LOAD and not evaluation.passed
    assert f"late data in window {KEY0}" in evaluation.description
    assert f"Re-materialize partition {KEY0}" in evaluation.description
    assert evaluation.metadata["late_flows"].value == 12
