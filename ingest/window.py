"""The 5-minute window, defined once: its length, its start, and its Dagster partition key.

Flows belong to the UTC 5-minute window of their receive time (README "The flow record"): the
ingest daemon never lands a batch that straddles a boundary, the landing reads windows, and the
pipeline's 5-minute partitions are these windows, keyed by :func:`window_key`. The length is not
configurable (``pipeline.window_minutes`` accepts only this value).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

WINDOW_MINUTES = 5
WINDOW = timedelta(minutes=WINDOW_MINUTES)
WINDOW_SECONDS = WINDOW_MINUTES * 60
WINDOW_US = WINDOW_SECONDS * 1_000_000
WINDOW_FMT = "%Y-%m-%d-%H:%M"  # partition key of a window, e.g. 2026-11-26-18:05


def window_start(ts: datetime) -> datetime:
    """The start of the window holding ``ts`` (timezone preserved)."""
    minutes = ts.minute % WINDOW_MINUTES
    return ts - timedelta(minutes=minutes, seconds=ts.second, microseconds=ts.microsecond)


def window_key(window: datetime) -> str:
    """The partition key of the window starting at ``window`` (aware datetime)."""
    return window.astimezone(UTC).strftime(WINDOW_FMT)


def window_of_key(key: str) -> datetime:
    """The aware UTC start of the window with partition key ``key``."""
    return datetime.strptime(key, WINDOW_FMT).replace(tzinfo=UTC)


def window_index(ts: datetime) -> int:
    """The window's number since the Unix epoch (e.g. a seed that changes once a window)."""
    return int(ts.timestamp()) // WINDOW_SECONDS


def windows_in(start: datetime, end: datetime) -> list[datetime]:
    """Every window start in [start, end): what a single-run backfill loops over."""
    out, current = [], start
    while current < end:
        out.append(current)
        current += WINDOW
    return out
