"""The time span one check evaluates: a 5-minute window, or an hour/day for the rollups."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from ingest.window import WINDOW, window_key


@dataclass(frozen=True)
class Span:
    """[start, end) in UTC, plus the partition key an operator would re-materialize."""

    start: datetime
    end: datetime
    key: str

    @classmethod
    def window(cls, start: datetime) -> Span:
        """The 5-minute window starting at ``start`` (must be aligned to 5 minutes)."""
        start = start.astimezone(UTC) if start.tzinfo else start.replace(tzinfo=UTC)
        if start.minute % 5 or start.second or start.microsecond:
            raise ValueError(f"{start.isoformat()} is not the start of a 5-minute window (minute % 5 == 0, :00)")
        return cls(start, start + WINDOW, window_key(start))

    @classmethod
    def of(cls, start: datetime, end: datetime, key: str) -> Span:
        return cls(start.astimezone(UTC), end.astimezone(UTC), key)

    @property
    def length(self) -> timedelta:
        return self.end - self.start

    def sql(self) -> tuple[str, str]:
        """Start and end as PostgreSQL timestamptz literals (safe: built from datetimes, not user text)."""
        return f"'{self.start.isoformat()}'::timestamptz", f"'{self.end.isoformat()}'::timestamptz"

    def __str__(self) -> str:
        return f"{self.key} ({self.start:%Y-%m-%d %H:%M}-{self.end:%H:%M} UTC)"
