"""``flowlens bench enrich`` on a tiny window: the JSON contract of README "Benchmarks" and honest figures."""

from __future__ import annotations

import json

from flowlens_dagster.bench.enrich import main


def test_bench_enrich_json_small(capsys) -> None:
    assert main(["--json", "--flows", "3000", "--addresses", "300", "--sample", "500", "--no-redis"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["bench"] == "enrich"
    figures = result["figures"]
    for name in ("window_seconds", "flows", "distinct_addresses", "cache_hit_ratio", "peak_rss_mb"):
        assert name in figures
    assert figures["flows"] == 3000 and figures["distinct_addresses"] == 300
    assert figures["cache_hit_ratio"] == 1.0  # the warm run is served from the (in-process) cache
    assert result["ratio"]["window_seconds"] == round(
        figures["window_seconds"] / result["baseline"]["window_seconds"], 3
    )
    assert result["config"]["cache"] == "memory"
    assert result["config"]["cold_dns"]["dns_lookups"] > 0
