"""Shared output for ``flowlens bench``: a readable table, or one JSON object with ``--json``.

The JSON shape is the contract of README "Benchmarks": ``{"bench", "figures", "baseline", "ratio", "config"}``,
where ``ratio`` is figures/baseline for every figure that has a baseline measured in the same run
(or the scaling model's figure, labelled as such in ``config``); a figure the run could not measure
(None) has no ratio.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

# Set by ``flowlens bench`` (<state_dir>/bench): every result is also saved there for ``flowlens plan``.
SAVE_DIR: Path | None = None


def ratios(figures: dict[str, float], baseline: dict[str, float]) -> dict[str, float]:
    return {
        key: round(figures[key] / value, 3)
        for key, value in baseline.items()
        if isinstance(figures.get(key), int | float) and isinstance(value, int | float) and value
    }


def report(
    bench: str,
    figures: dict[str, Any],
    baseline: dict[str, Any],
    config: dict[str, Any],
    as_json: bool,
    stream=None,
) -> dict[str, Any]:
    """Print the result (table or JSON) and return the JSON-shaped dict."""
    stream = stream or sys.stdout
    result = {
        "bench": bench,
        "figures": figures,
        "baseline": baseline,
        "ratio": ratios(figures, baseline),
        "config": config,
    }
    if SAVE_DIR is not None:
        from ingest.scaling.figures import save_result

        save_result(SAVE_DIR, result)
    if as_json:
        print(json.dumps(result, default=str), file=stream)
        return result
    print(f"flowlens bench {bench}", file=stream)
    width = max([len(k) for k in figures] + [6])
    print(f"  {'figure'.ljust(width)}  {'flowlens':>16}  {'baseline':>16}  {'ratio':>8}", file=stream)
    for key, value in figures.items():
        base = baseline.get(key, "")
        ratio = result["ratio"].get(key, "")
        print(f"  {key.ljust(width)}  {_fmt(value):>16}  {_fmt(base):>16}  {_fmt(ratio):>8}", file=stream)
    for key, value in config.items():
        print(f"  config.{key} = {value}", file=stream)
    return result


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:,.3f}" if abs(value) < 1000 else f"{value:,.0f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)
