"""Where ``flowlens bench`` saves its results, and how the planner reads them back.

Every ``flowlens bench NAME`` run writes its JSON object (the shape printed by ``--json``) to
``<state_dir>/bench/NAME.json``, replacing the previous one; ``flowlens plan`` reads these files
to size components from what this machine measured rather than from rules of thumb alone.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

BENCH_DIR = "bench"


def bench_dir(state_dir: Path) -> Path:
    return Path(state_dir) / BENCH_DIR


def save_result(directory: Path, result: dict[str, Any]) -> Path:
    """Write one bench result as ``<directory>/<bench>.json`` (atomically: readers never see half)."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{result['bench']}.json"
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(result, default=str, indent=1))
    tmp.replace(path)
    return path


def load_results(directory: Path) -> dict[str, dict[str, Any]]:
    """Every readable ``<bench>.json`` of ``directory``: bench name -> its JSON object.

    A file that is not a bench result (unreadable, not JSON, no ``figures``) is skipped: the
    planner then falls back to the scaling model's figure and says so.
    """
    out: dict[str, dict[str, Any]] = {}
    if not directory.is_dir():
        return out
    for path in sorted(directory.glob("*.json")):
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        if isinstance(data, dict) and isinstance(data.get("figures"), dict):
            data["_path"] = f"{directory.name}/{path.name}"  # e.g. bench/ingest.json (under state_dir)
            out[str(data.get("bench") or path.stem)] = data
    return out
