"""``flowlens ingest --stats-file``: the daemon's counters as JSON, fresh even if the supervisor dies.

The supervisor rewrites the file every second with the totals, plus the snapshot each part was
summed from (``parts``: every live process and the ended ones together), its ``pid`` and
``updated_at`` (Unix seconds). If the supervisor is killed outright (``kill -9``), its receiving
processes still drain (they get SIGTERM when their parent dies) and each one puts its final
snapshot in place of its part and sums the parts again, under a file lock, so the file ends with
the true final totals and ``supervisor_lost: true`` instead of the supervisor's last second.
"""

from __future__ import annotations

import fcntl
import json
import time
from pathlib import Path
from typing import Any

from ingest.metrics import merge_snapshots


def jsonable(snapshot: dict[str, Any]) -> dict[str, Any]:
    """A snapshot with its (exporter, protocol) keys as ``exporter|protocol`` text (JSON keys)."""
    out = dict(snapshot)
    out["received"] = {k if isinstance(k, str) else f"{k[0]}|{k[1]}": n for k, n in snapshot["received"].items()}
    return out


def write(path: Path, parts: dict[str, dict[str, Any]], extra: dict[str, Any]) -> None:
    """Write the totals of ``parts`` (key -> jsonable snapshot) and ``extra`` atomically, under the lock."""
    with _locked(path):
        _replace(path, parts, extra)


def replace_part(path: Path, key: str, snapshot: dict[str, Any]) -> None:
    """An orphaned process's last word: its final snapshot replaces its part; totals summed again."""
    with _locked(path):
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError):
            data = {"parts": {}}
        parts = {**data.get("parts", {}), key: jsonable(snapshot)}
        keep = {k: data[k] for k in ("instance", "pid", "workers_ready") if k in data}
        _replace(path, parts, {**keep, "stopping": True, "supervisor_lost": True, "workers_alive": None})


def _replace(path: Path, parts: dict[str, dict[str, Any]], extra: dict[str, Any]) -> None:
    data = merge_snapshots(parts.values()) if parts else {}
    data.update(extra, parts=parts, updated_at=time.time())
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, default=str))
    tmp.replace(path)


class _locked:
    """An exclusive lock on ``<path>.lock`` (the supervisor and its orphans never write at once)."""

    def __init__(self, path: Path):
        self.lock = path.with_name(path.name + ".lock")

    def __enter__(self) -> None:
        self._fd = self.lock.open("a")
        fcntl.flock(self._fd, fcntl.LOCK_EX)

    def __exit__(self, *exc) -> None:
        fcntl.flock(self._fd, fcntl.LOCK_UN)
        self._fd.close()
