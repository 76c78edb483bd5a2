"""The pipeline's partitions, defined once: 5-minute windows, plus hourly and daily ones for rollups.

Windows are UTC buckets of the collector's receive time (see ``ingest.window``).

Where the 5-minute set starts (README "Partitions"): ``pipeline.partition_start`` when the config
sets it; otherwise a start chosen once and persisted in ``<state_dir>/pipeline/partition_start``:
midnight UTC ``pipeline.partition_lookback_days`` (7, the retention of ``flows.raw``) before the
first time the code location loaded. Persisting it keeps every process (Dagster's daemon, the
webserver, ``dagster asset materialize``) on the same set, and the set never shrinks as days pass,
so a window the landing still holds can always be backfilled. It grows by 288 partitions a day;
set ``pipeline.partition_start`` to a later date to trim it knowingly.
"""

from __future__ import annotations

import os
from datetime import UTC, datetime, timedelta
from pathlib import Path

import dagster as dg

from ingest.config import FlowLensConfig, load_config
from ingest.window import WINDOW_FMT

HOUR_FMT = "%Y-%m-%d-%H:%M"
DAY_FMT = "%Y-%m-%d"


def parse_start(text: str, origin: str = "pipeline.partition_start") -> datetime:
    """An ISO date or date-time as an aware UTC datetime truncated to midnight (naive means UTC)."""
    try:
        start = datetime.fromisoformat(text.strip())
    except ValueError as exc:
        raise ValueError(
            f"{origin}={text!r} is not an ISO date or date-time; use e.g. 2026-11-24 or 2026-11-24T00:00:00Z"
        ) from exc
    start = start.replace(tzinfo=UTC) if start.tzinfo is None else start.astimezone(UTC)
    return start.replace(hour=0, minute=0, second=0, microsecond=0)


def start_file(cfg: FlowLensConfig) -> Path:
    """Where the chosen start is persisted when the config sets none."""
    return cfg.state_dir / "pipeline" / "partition_start"


def partition_start(cfg: FlowLensConfig | None = None, now: datetime | None = None) -> datetime:
    """First 5-minute partition: the configured start, else the persisted one, else chosen and persisted now."""
    cfg = cfg or load_config()
    if cfg.pipeline.partition_start:
        return parse_start(cfg.pipeline.partition_start)
    path = start_file(cfg)
    if path.exists():
        return parse_start(path.read_text(), origin=str(path))
    start = parse_start(((now or datetime.now(UTC)) - timedelta(days=cfg.pipeline.partition_lookback_days)).isoformat())
    _persist(path, start)
    return start


def _persist(path: Path, start: datetime) -> None:
    """Write once, atomically: two processes racing at first start both end with one valid file."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
        tmp.write_text(start.date().isoformat() + "\n")
        os.replace(tmp, path)
    except OSError:
        pass  # a read-only state dir: the start is recomputed per process (still at least the lookback)


def build_partitions(start: datetime) -> tuple[dg.TimeWindowPartitionsDefinition, ...]:
    """The (five-minute, hourly, daily) partition definitions starting at ``start``."""
    five = dg.TimeWindowPartitionsDefinition(
        cron_schedule="*/5 * * * *", start=start.strftime(WINDOW_FMT), fmt=WINDOW_FMT, timezone="UTC"
    )
    hourly = dg.HourlyPartitionsDefinition(start_date=start.strftime(HOUR_FMT), timezone="UTC")
    daily = dg.DailyPartitionsDefinition(start_date=start.strftime(DAY_FMT), timezone="UTC")
    return five, hourly, daily


START = partition_start()
five_minute_partitions, hourly_partitions, daily_partitions = build_partitions(START)
