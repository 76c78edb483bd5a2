"""Schedules: rollups once their period has closed (plus a margin for the last windows), retention daily."""

from __future__ import annotations

import dagster as dg

from assets.rollups import retention_job
from flowlens_dagster.jobs import daily_rollup_job, hourly_rollup_job

# minute 10 / 00:20: the hour's last window closes at :05 plus grace plus its run
hourly_rollup_schedule = dg.build_schedule_from_partitioned_job(
    hourly_rollup_job, minute_of_hour=10, default_status=dg.DefaultScheduleStatus.RUNNING
)
daily_rollup_schedule = dg.build_schedule_from_partitioned_job(
    daily_rollup_job, hour_of_day=0, minute_of_hour=20, default_status=dg.DefaultScheduleStatus.RUNNING
)
retention_schedule = dg.ScheduleDefinition(
    job=retention_job,
    cron_schedule="40 0 * * *",
    execution_timezone="UTC",
    default_status=dg.DefaultScheduleStatus.RUNNING,
)

ALL_SCHEDULES = [hourly_rollup_schedule, daily_rollup_schedule, retention_schedule]
