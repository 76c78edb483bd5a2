"""The code location loads and is shaped as the pipeline's contract says."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import dagster as dg

from assets.keys import WINDOW_ASSETS
from assets.partitions import five_minute_partitions
from flowlens_dagster.definitions import defs
from flowlens_dagster.sensors import SENSOR_NAME

ROOT = Path(__file__).resolve().parents[2]
ASSET_KEYS = {
    "flows_landed",
    "enriched_flows",
    "flow_stats",
    "network_assets",
    "dependencies",
    "topology_changes",
    "flow_stats_hourly",
    "flow_stats_daily",
}


def test_definitions_validate_and_hold_every_asset():
    dg.Definitions.validate_loadable(defs)
    keys = {key.to_user_string() for key in defs.resolve_all_asset_keys()}
    assert keys == ASSET_KEYS
    assert defs.resolve_sensor_def(SENSOR_NAME).job_name == "window_job"


def test_windowed_assets_run_ranges_in_one_run_and_report_a_schema():
    graph = defs.resolve_asset_graph()
    for name in [*WINDOW_ASSETS, "flow_stats_hourly", "flow_stats_daily"]:
        node = graph.get(dg.AssetKey(name))
        assert node.backfill_policy == dg.BackfillPolicy.single_run(), name
        assert "dagster/column_schema" in node.metadata, name
        assert "dagster/table_name" in node.metadata, name
    assert graph.get(dg.AssetKey("flow_stats")).partitions_def == five_minute_partitions


def test_dagster_cli_validates_the_code_location(tmp_path):
    env = {**os.environ, "DAGSTER_HOME": str(tmp_path)}
    target = (
        ["-w", str(ROOT / "workspace.yaml")]
        if (ROOT / "workspace.yaml").exists()
        else ["-m", "flowlens_dagster.definitions"]
    )
    proc = subprocess.run(
        [str(Path(sys.executable).parent / "dagster"), "definitions", "validate", *target],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=180,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_window_job_runs_the_landing_checks_and_the_late_data_sensor_is_loaded():
    job = defs.resolve_job_def("window_job")
    selected = {key.to_user_string() for key in job.asset_layer.asset_graph.asset_check_keys}
    assert "flows_landed:landing_suite" in selected
    assert "flow_stats:flow_stats_suite" in selected
    assert {s.name for s in defs.sensors} == {SENSOR_NAME, "late_data_sensor"}
    # One process per run: a process per step cost ~8 s of code-location loading per step.
    assert job.executor_def is dg.in_process_executor
