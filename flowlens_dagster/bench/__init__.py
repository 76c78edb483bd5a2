"""``flowlens bench NAME [--json]``: dispatch to the benchmark that owns each figure set.

Benchmarks are developer tools: they run from a source checkout, whose root goes on ``sys.path``
so they can use the fakes the tests use (``tests/fakes``: GeoIP databases, a PTR server).
"""

from __future__ import annotations

import importlib
import sys

from ingest.config import PROJECT_ROOT

BENCHES: dict[str, str] = {
    "decode": "flowlens_dagster.bench.decode:main",
    "ingest": "flowlens_dagster.bench.ingest:main",
    "enrich": "flowlens_dagster.bench.enrich:main",
    "pipeline": "flowlens_dagster.bench.pipeline:main",
    "burst": "flowlens_dagster.bench.burst:main",
    "monitoring": "flowlens_dagster.bench.monitoring:main",
    "api": "flowlens_dagster.bench.api:main",
    "console": "flowlens_dagster.bench.console:main",
    "cluster": "flowlens_dagster.bench.cluster:main",
}


def main(argv: list[str]) -> int:
    if not argv or argv[0] not in BENCHES:
        print(f"usage: flowlens bench {{{','.join(BENCHES)}}} [--json] [options]", file=sys.stderr)
        return 2
    if (PROJECT_ROOT / "tests" / "fakes").is_dir() and str(PROJECT_ROOT) not in sys.path:
        sys.path.append(str(PROJECT_ROOT))
    from flowlens_dagster.bench import report
    from ingest.config import ConfigError, load_config
    from ingest.scaling.figures import bench_dir

    try:  # results are saved where `flowlens plan` reads them
        report.SAVE_DIR = bench_dir(load_config().state_dir)
    except ConfigError as exc:
        print(f"flowlens bench: {exc}", file=sys.stderr)
        return 2
    module_name, func_name = BENCHES[argv[0]].split(":")
    return int(getattr(importlib.import_module(module_name), func_name)(argv[1:]) or 0)
