"""Hourly/daily rollups and retention on real PostgreSQL."""

from datetime import UTC, datetime, timedelta

import psycopg
import pytest

from assets.keys import FLOW_STATS_DAILY, FLOW_STATS_HOURLY
from assets.resources import build_resources
from assets.rollups import apply_retention, roll_up
from tests.assets import scenario
from tests.assets.test_window_assets import landed, materialize  # noqa: F401  (fixture)

pytestmark = pytest.mark.integration
TOTALS = (
    "SELECT count(*), sum(bytes), sum(packets), sum(flows) FROM flowlens.{table} WHERE {period} >= %s AND {period} < %s"
)


def totals(dsn: str, table: str, period: str, start: datetime, end: datetime) -> tuple:
    with psycopg.connect(dsn) as conn:
        return conn.execute(TOTALS.format(table=table, period=period), (start, end)).fetchone()


def test_rollups_conserve_totals_and_rerun_identically(flowlens_config, landed, pg_dsn):  # noqa: F811
    base, flows = landed
    for index in sorted(flows):
        materialize(flowlens_config, base + index * scenario.WINDOW)
    postgres = build_resources(flowlens_config, use_env=False)["postgres"]
    day = base.replace(hour=0, minute=0)
    hours = [base.replace(minute=0) + timedelta(hours=h) for h in (0, 1)]  # the scenario may cross an hour
    for hour in hours:
        roll_up(postgres, FLOW_STATS_HOURLY, hour, hour + timedelta(hours=1), "test")
    roll_up(postgres, FLOW_STATS_DAILY, day, day + timedelta(days=1), "test")

    raw = totals(pg_dsn, "flow_stats", "window_start", day, day + timedelta(days=1))
    hourly = totals(pg_dsn, "flow_stats_hourly", "hour_start", day, day + timedelta(days=1))
    daily = totals(pg_dsn, "flow_stats_daily", "day_start", day, day + timedelta(days=1))
    assert raw[1:] == hourly[1:] == daily[1:]
    # one row per edge per day: the scenario has 6 distinct edges
    assert daily[0] == len({r[1:5] for r in scenario.expected_flow_stats(base, flows)})

    roll_up(postgres, FLOW_STATS_DAILY, day, day + timedelta(days=1), "test")
    assert totals(pg_dsn, "flow_stats_daily", "day_start", day, day + timedelta(days=1)) == daily


def test_retention_drops_only_old_day_partitions(flowlens_config, clean_pg, tmp_path):
    res = build_resources(flowlens_config, use_env=False)
    today = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    old, recent = today - timedelta(days=40), today - timedelta(days=2)
    with psycopg.connect(clean_pg) as conn:
        for day in (old, recent):
            for parent in ("flowlens.flow_stats", "flowlens.flow_raw_batches"):
                conn.execute("SELECT flowlens.ensure_day_partitions(%s::regclass, %s::date, 1)", (parent, day))
    lake_root = tmp_path / "lake"
    for day in (old, recent):
        (lake_root / "enriched_flows" / f"date={day:%Y-%m-%d}" / "window=0000").mkdir(parents=True)
        (lake_root / "flow_stats_staging" / f"date={day:%Y-%m-%d}" / "window=0000" / "run").mkdir(parents=True)
    lake = res["lake"].model_copy(update={"root": str(lake_root)})
    dropped = apply_retention(res["postgres"], lake, days=30, today=today)
    assert dropped["flowlens.flow_stats"] == [f"flow_stats_{old:%Y%m%d}"]
    assert dropped["flowlens.flow_raw_batches"] == [f"flow_raw_batches_{old:%Y%m%d}"]
    assert dropped["lake"] == [f"date={old:%Y-%m-%d}"]
    assert dropped["flow_stats_staging"] == [f"date={old:%Y-%m-%d}"]  # shards staged by runs that never committed
    assert [p.name for p in (lake_root / "flow_stats_staging").iterdir()] == [f"date={recent:%Y-%m-%d}"]
    with psycopg.connect(clean_pg) as conn:
        left = {r[0] for r in conn.execute(
            "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid"
            " WHERE i.inhparent = 'flowlens.flow_stats'::regclass")}  # fmt: skip
    assert f"flow_stats_{recent:%Y%m%d}" in left and f"flow_stats_{old:%Y%m%d}" not in left
