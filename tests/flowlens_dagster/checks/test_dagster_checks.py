"""The checks as Dagster runs them: with the real window assets, in one run, evaluations asserted."""

from __future__ import annotations

from datetime import timedelta

import dagster as dg
import pytest

from assets.changes import topology_changes
from assets.enriched_flows import enriched_flows
from assets.flow_stats import flow_stats
from assets.landing import flows_landed
from assets.topology import dependencies, network_assets
from flowlens_dagster.checks import ALL_CHECKS, names
from flowlens_dagster.checks.evaluate import CHECKS

from .conftest import KEY0, WINDOW0, Pipeline

pytestmark = pytest.mark.integration
WINDOW_ASSETS = [enriched_flows, flow_stats, network_assets, dependencies, topology_changes]


def materialize(pipeline: Pipeline) -> dg.ExecuteInProcessResult:
    window_checks = [
        c for c in ALL_CHECKS if {k.asset_key.to_user_string() for k in c.check_keys} <= set(names.WINDOW_ASSETS)
    ]
    return dg.materialize(
        [flows_landed, *WINDOW_ASSETS, *window_checks],
        partition_key=KEY0,
        resources=pipeline.dagster_resources(),
        raise_on_error=False,
    )


def evaluations(result: dg.ExecuteInProcessResult) -> dict[str, dg.AssetCheckEvaluation]:
    return {e.check_name: e for e in result.get_asset_check_evaluations()}


def test_checks_run_with_the_window_and_pass_on_clean_data(pipeline: Pipeline) -> None:
    pipeline.land(WINDOW0)
    result = materialize(pipeline)
    assert result.success
    found = evaluations(result)
    expected = {c.name for c in CHECKS if c.asset in names.WINDOW_ASSETS}
    assert expected <= set(found)
    assert {name for name in expected if not found[name].passed} == set()
    suite = found[names.FLOW_STATS_SUITE]
    assert suite.metadata["window"].value == KEY0 and suite.metadata["failed_expectations"].value == 0
    assert suite.metadata["rows"].value > 0


def test_failed_blocking_check_stops_downstream_assets(pipeline: Pipeline) -> None:
    pipeline.land(WINDOW0)
    # A decoder bug lands a flow with an unassigned protocol number and too few bytes per packet.
    pipeline.sql(
        "INSERT INTO flowlens.flow_raw (receive_time, exporter, observation_domain, flow_version, src_addr, dst_addr, "
        "src_port, dst_port, protocol, tcp_flags, bytes, packets, sampling_rate) VALUES "
        "(%s, '192.0.2.10', 1, 9, '10.9.9.9', '10.2.0.1', 40000, 443, 200, 0, 100, 10, 1)",
        (WINDOW0 + timedelta(seconds=30),),
    )
    result = materialize(pipeline)
    assert not result.success
    found = evaluations(result)
    suite = found[names.ENRICHED_SUITE]
    assert not suite.passed and suite.blocking
    assert KEY0 in suite.description and "IANA protocol number" in suite.description
    table = suite.metadata["failed_expectations_table"].value
    assert "protocol" in table and "200" in table
    materialized = {event.asset_key.to_user_string() for event in result.get_asset_materialization_events()}
    assert materialized == {"enriched_flows"}  # flow_stats and everything after it never read the bad window


def window_job_run(pipeline: Pipeline) -> dg.ExecuteInProcessResult:
    """The code location's own ``window_job`` (as the watermark sensor launches it) on the test stack."""
    from flowlens_dagster.definitions import ALL_ASSETS
    from flowlens_dagster.jobs import window_job

    defs = dg.Definitions(
        assets=ALL_ASSETS, asset_checks=ALL_CHECKS, jobs=[window_job], resources=pipeline.dagster_resources()
    )
    return defs.resolve_job_def(window_job.name).execute_in_process(partition_key=KEY0, raise_on_error=False)


def test_window_job_runs_the_landing_suite_of_the_external_asset(pipeline: Pipeline) -> None:
    pipeline.land(WINDOW0)
    # An exporter with a skewed clock: a copy of a landed flow whose start is after its end. Only the
    # landing suite states that rule; the copied flow's key still spans start..end, so nothing downstream breaks.
    pipeline.sql("INSERT INTO flowlens.flow_raw SELECT * FROM flowlens.flow_raw WHERE flow_end IS NOT NULL LIMIT 1")
    pipeline.sql(
        "UPDATE flowlens.flow_raw SET flow_start = flow_end + interval '1 second' WHERE ctid = "
        "(SELECT max(ctid) FROM flowlens.flow_raw WHERE flow_end IS NOT NULL)"
    )
    result = window_job_run(pipeline)
    found = evaluations(result)
    landing = found[names.LANDING_SUITE]
    assert landing.asset_key == dg.AssetKey(names.FLOWS_LANDED)
    assert not landing.passed and KEY0 in landing.description and "flow_start <= flow_end" in landing.description
    # Not blocking: the window is still processed, and the window's own checks pass.
    assert result.success
    assert found[names.FLOW_STATS_SUITE].passed
