"""The code location loads and is shaped as the pipeline's contract says."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import dagster as dg

from assets.flow_stats_shards import flow_stats_definition
from assets.keys import WINDOW_ASSETS
from assets.partitions import five_minute_partitions
from flowlens_dagster.definitions import defs
from flowlens_dagster.jobs import window_executor
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


def test_sharded_flow_stats_keeps_its_key_policy_and_schema_as_a_graph_of_shard_steps():
    one, sharded = flow_stats_definition(1), flow_stats_definition(3)
    assert isinstance(one.node_def, dg.OpDefinition) and isinstance(sharded.node_def, dg.GraphDefinition)
    assert sharded.key == one.key == dg.AssetKey("flow_stats")
    assert [n.name for n in sharded.node_def.node_defs] == [
        "flow_stats_shard_plan",
        "flow_stats_stage_shard",
        "flow_stats_commit",
    ]
    for attribute in ("backfill_policy", "partitions_def", "group_names_by_key", "metadata_by_key", "asset_deps"):
        assert getattr(sharded, attribute) == getattr(one, attribute), attribute
    assert window_executor(1) is dg.in_process_executor
    assert window_executor(3).name == "window_multiprocess"


def test_the_code_location_loads_with_shard_steps_and_step_processes(tmp_path):
    env = {**os.environ, "FLOWLENS_PIPELINE__SHARDS": "3", "FLOWLENS_PIPELINE__STEP_PROCESSES": "2"}
    show = (
        "from flowlens_dagster.definitions import defs; import dagster as dg; dg.Definitions.validate_loadable(defs);"
        "job = defs.resolve_job_def('window_job'); print(job.executor_def.name, sorted(job.graph.node_names()));"
        "print(sorted(k.to_user_string() for k in job.asset_layer.asset_graph.asset_check_keys))"
    )
    proc = subprocess.run([sys.executable, "-c", show], cwd=ROOT, env=env, capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stderr
    executor_and_nodes, checks = proc.stdout.splitlines()[-2:]
    assert executor_and_nodes.startswith("window_multiprocess ")
    assert "'flow_stats'" in executor_and_nodes  # the graph's node keeps the asset's name
    assert "flow_stats:flow_stats_suite" in checks
