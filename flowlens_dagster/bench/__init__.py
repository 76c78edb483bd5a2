"""``flowlens bench NAME [--json]``: dispatch to the benchmark that owns each figure set."""

from __future__ import annotations

import importlib
import sys

BENCHES: dict[str, str] = {
    "decode": "flowlens_dagster.bench.decode:main",
    "ingest": "flowlens_dagster.bench.ingest:main",
    "enrich": "flowlens_dagster.bench.enrich:main",
    "pipeline": "assets.bench:main",
}


def main(argv: list[str]) -> int:
    if not argv or argv[0] not in BENCHES:
        print(f"usage: flowlens bench {{{','.join(BENCHES)}}} [--json] [options]", file=sys.stderr)
        return 2
    module_name, func_name = BENCHES[argv[0]].split(":")
    return int(getattr(importlib.import_module(module_name), func_name)(argv[1:]) or 0)
