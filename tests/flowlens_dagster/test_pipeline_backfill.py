"""Backfilling a range from the Dagster CLI leaves the tables as window-by-window runs leave them."""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg
import pytest

from assets.keys import WINDOW_ASSETS
from ingest.window import window_key
from tests.assets import scenario
from tests.assets.test_window_assets import landed, materialize, snapshot  # noqa: F401  (fixture)

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.integration


def cli_env(cfg, home: Path, shards: int = 1) -> dict[str, str]:
    return {
        **os.environ,
        "FLOWLENS_PIPELINE__SHARDS": str(shards),  # > 1: flow_stats as one step per shard, then the commit
        "DAGSTER_HOME": str(home),
        "FLOWLENS_MODE": "minimal",
        "FLOWLENS_DNS__ENABLED": "false",
        "FLOWLENS_POSTGRES__DATABASE": cfg.postgres.database,
        "FLOWLENS_PIPELINE__LAKE_DIR": str(cfg.lake_dir),
        "FLOWLENS_PIPELINE__DEPENDENCY_GONE_AFTER_WINDOWS": str(scenario.GONE_AFTER),
    }


def materialize_cli(cfg, home: Path, first: str, last: str, shards: int = 1) -> subprocess.CompletedProcess:
    """`dagster asset materialize` of the window assets over [first, last], as a user runs it."""
    return subprocess.run(
        [
            str(Path(sys.executable).parent / "dagster"), "asset", "materialize", "-m", "flowlens_dagster.definitions",
            "--select", ",".join(WINDOW_ASSETS), "--partition-range", f"{first}...{last}",
        ],
        cwd=ROOT, env=cli_env(cfg, home, shards), capture_output=True, text=True, timeout=600,
    )  # fmt: skip


def test_a_window_six_days_old_can_still_be_backfilled(flowlens_config, clean_pg, pg_dsn, tmp_path, monkeypatch):
    """The partition set keeps windows the landing still holds (a week), whatever today's date."""
    monkeypatch.setenv("FLOWLENS_PIPELINE__DEPENDENCY_GONE_AFTER_WINDOWS", str(scenario.GONE_AFTER))
    base = scenario.base_window(datetime.now(UTC) - timedelta(days=6))
    flows = scenario.land(clean_pg, base)
    proc = materialize_cli(flowlens_config, tmp_path, window_key(base), window_key(base + max(flows) * scenario.WINDOW))
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert snapshot(pg_dsn)["flow_stats"] == scenario.expected_flow_stats(base, flows)


@pytest.mark.parametrize("shards", [1, 3])
def test_cli_partition_range_backfill_matches_single_windows(flowlens_config, landed, pg_dsn, tmp_path, shards):  # noqa: F811
    base, flows = landed
    for index in sorted(flows):
        materialize(flowlens_config, base + index * scenario.WINDOW)
    one_by_one = snapshot(pg_dsn)

    # wipe the derived tables, keep the landing, then one CLI run over the whole range
    with psycopg.connect(pg_dsn) as conn:
        raw = conn.execute("SELECT count(*) FROM flowlens.flow_raw").fetchone()[0]
    truncate_keep_raw(pg_dsn)
    last = window_key(base + max(flows) * scenario.WINDOW)
    proc = materialize_cli(flowlens_config, tmp_path, window_key(base), last, shards)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    if shards > 1:  # the range's windows went through the shard steps and one commit
        assert "flow_stats.flow_stats_stage_shard[shard_2]" in proc.stderr
    after = snapshot(pg_dsn)
    with psycopg.connect(pg_dsn) as conn:
        assert conn.execute("SELECT count(*) FROM flowlens.flow_raw").fetchone()[0] == raw
    assert after == one_by_one


def truncate_keep_raw(dsn: str) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(
            "TRUNCATE flowlens.flow_stats, flowlens.assets, flowlens.dependencies, flowlens.changes,"
            " flowlens.window_loads"
        )
