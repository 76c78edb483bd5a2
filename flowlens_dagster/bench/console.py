"""``flowlens bench console [--json]``: the web console in headless Chromium on the 100,000-asset topology.

Setup (not timed) is ``flowlens bench api``'s: database ``flowlens_bench_api`` with ``--assets`` assets
and ``--dependencies`` dependencies (built once with COPY and kept), ``flowlens api`` started as a user
would start it. Then Debian's Chromium, driven by Playwright, loads the console ``--repeat`` times:

- ``first_render_ms``: navigation start to the first frame of the grouped map (391 subnets);
- ``expand_group_ms``: one ASN group's first 1,000 addresses (and their edges) fetched, added and drawn;
- ``search_to_result_ms``: a search typed into the box (address, prefix, hostname) to the results shown.

Medians of the repeats. The baseline is the same API request made with ``fetch()`` in the same page,
in the same run, without drawing (``console_measure``).
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import time
from urllib.parse import quote

import numpy as np

from flowlens_dagster.api.console import console_built
from flowlens_dagster.bench import api as api_bench
from flowlens_dagster.bench import console_measure as measure
from flowlens_dagster.bench.report import report
from ingest.config import FlowLensConfig, load_config

EXPAND_ADDRESSES = 1000
WEIGH_TIMEOUT_MS = 180_000  # bytes between ASN groups read every traffic row of the bench database
TARGETS = "first_render_ms <= 2000, expand_group_ms <= 500, search_to_result_ms <= 300 (headless Chromium, 2 cores)"


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="flowlens bench console", description=__doc__.split("\n")[0])
    api_bench.topology_args(parser)
    parser.add_argument("--repeat", type=int, default=5, help="page loads, expansions and searches measured")
    return parser.parse_args(argv)


def searches(assets: int, repeat: int) -> list[str]:
    """Distinct texts (the API caches each for a minute): addresses, /24 prefixes and hostnames."""
    step = max(assets // (repeat + 1), 1)
    picks = np.arange(1, repeat + 1) * step % assets
    kinds = [lambda addr, _i: addr, lambda addr, _i: addr.rsplit(".", 1)[0] + ".0/24", lambda _addr, i: f"host-{i}."]
    pairs = zip(api_bench.addresses(picks), picks.tolist(), strict=True)
    return [kinds[k % len(kinds)](addr, i) for k, (addr, i) in enumerate(pairs)]


def run_browser(
    cfg: FlowLensConfig, args: argparse.Namespace, token: str, weigh_ms: list[float]
) -> dict[str, measure.Samples]:
    from playwright.sync_api import sync_playwright

    from flowlens_dagster.bench import browser as chromium

    url = f"http://{cfg.api.host}:{cfg.api.port}/"
    names = ("first_render", "expand_group", "expand_group_edges", "search_to_result")
    found = {name: measure.Samples() for name in names}
    with sync_playwright() as playwright:
        browser = chromium.launch(playwright)
        try:
            user = api_bench.BENCH_USER
            for _ in range(args.repeat):
                measure.first_render(browser, url, token, user, "/api/v1/topology", found["first_render"])
            page = measure.signed_in_page(browser, url, token, user)
            measure.show_grouping(page, "asn")
            # The links are re-weighed by bytes after the map shows; expansions are measured after that.
            page.wait_for_function("window.flowlens.timings.weights !== undefined", timeout=WEIGH_TIMEOUT_MS)
            weigh_ms.append(
                page.evaluate("window.flowlens.timings.weights.drawn - window.flowlens.timings.groups.started")
            )
            groups = page.evaluate("window.flowlens.state.groups.map((g) => [g.key, g.assets])")
            for key, members in groups[: args.repeat]:
                paths = (
                    f"/api/v1/search?asn={key}&limit={EXPAND_ADDRESSES}",
                    f"/api/v1/topology?group=address&asn={key}&limit={EXPAND_ADDRESSES}",
                )
                shown = measure.expand_group(
                    page, key, EXPAND_ADDRESSES, paths, token, found["expand_group"], found["expand_group_edges"]
                )
                if shown != min(members, EXPAND_ADDRESSES):  # a smaller --assets makes smaller groups
                    raise RuntimeError(f"group {key} of {members} assets showed {shown} addresses")
                found["expand_group"].sizes.append(shown)
            for text in searches(args.assets, args.repeat):
                path = f"/api/v1/search?q={quote(text)}&limit=20"
                measure.search(page, text, path, token, found["search_to_result"])
        finally:
            browser.close()
    return found


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    if not console_built():
        print("flowlens bench console: the console is not built: run scripts/setup.sh", file=sys.stderr)
        return 1
    setup = time.perf_counter()
    cfg = api_bench.prepare(load_config(), args, "flowlens bench console")
    setup_seconds = round(time.perf_counter() - setup, 1)
    api = api_bench.start_api(cfg, args.workers)
    try:
        weigh_ms: list[float] = []
        found = run_browser(cfg, args, api_bench.login(cfg), weigh_ms)
    finally:
        os.killpg(api.pid, signal.SIGTERM)
        api.wait(timeout=60)
    figures, baseline = {}, {}
    for name, samples in found.items():
        figures[f"{name}_ms"], baseline[f"{name}_ms"] = samples.medians()
    assets, dependencies = api_bench.counts(cfg)
    config = {
        "baseline": "the same API request with fetch() in the same page, same run, not drawn",
        "assets": assets,
        "dependencies": dependencies,
        "repeat": args.repeat,
        "expand_group": f"the first {EXPAND_ADDRESSES} addresses of an ASN group (grouping by ASN)",
        "expand_group_addresses": found["expand_group"].sizes,
        "asn_map_weighed_by_bytes_ms": [round(ms) for ms in weigh_ms],  # regroup -> links re-weighed by bytes
        "viewport": "1280x800 headless Chromium (Debian), WebGL by SwiftShader (no GPU)",
        "setup_seconds_untimed": setup_seconds,
        "targets": TARGETS,
    }
    report("console", figures, baseline, config, args.json)
    return 0
