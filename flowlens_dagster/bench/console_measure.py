"""The console's timings, measured in headless Chromium by ``flowlens bench console``.

Each figure is read from the page's own clock (``performance.now()``, recorded by the console in
``window.flowlens.timings``), so it covers what a user waits for: fetching, building the graph and
drawing the first WebGL frame. The baseline is the same API request made with ``fetch()`` from the
same page, in the same run, without drawing: the ratio is what the console adds on top of the API.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field

from flowlens_dagster.bench import browser as chromium

WAIT_MS = 120_000

# The same request as the console's, timed in the page: fetch, then JSON parsing.
FETCH_MS = """async ([path, token]) => {
  const started = performance.now();
  const answer = await fetch(path, { headers: { Authorization: `Bearer ${token}` } });
  await answer.json();
  return performance.now() - started;
}"""


@dataclass
class Samples:
    console: list[float] = field(default_factory=list)
    fetch: list[float] = field(default_factory=list)
    sizes: list[int] = field(default_factory=list)  # what each sample showed, when that varies

    def add(self, console_ms: float, fetch_ms: float) -> None:
        self.console.append(console_ms)
        self.fetch.append(fetch_ms)

    def medians(self) -> tuple[float, float]:
        return round(statistics.median(self.console), 1), round(statistics.median(self.fetch), 1)


def signed_in_page(browser, url: str, token: str, user: str):
    """A new page whose session already holds ``token`` (the login form is not what is measured)."""
    context = browser.new_context(viewport=chromium.VIEWPORT)
    context.add_init_script(
        f"sessionStorage.setItem('flowlens.token', {token!r}); sessionStorage.setItem('flowlens.user', {user!r});"
    )
    page = context.new_page()
    page.goto(url)
    return page


def first_render(browser, url: str, token: str, user: str, topology_path: str, samples: Samples) -> None:
    """Navigation start -> first frame of the grouped map (the page's clock starts at navigation)."""
    page = signed_in_page(browser, url, token, user)
    try:
        page.wait_for_function("window.flowlens?.timings?.groups !== undefined", timeout=WAIT_MS)
        drawn = page.evaluate("window.flowlens.timings.groups.drawn")
        samples.add(drawn, page.evaluate(FETCH_MS, [topology_path, token]))
    finally:
        page.context.close()


def show_grouping(page, group: str) -> None:
    """Regroup the map (the "Group by" form) and wait until it is drawn."""
    page.wait_for_function("window.flowlens?.timings?.groups !== undefined", timeout=WAIT_MS)
    page.evaluate("window.flowlens.timings.groups = undefined")
    page.select_option("#f-group", group)
    page.click("#filters button[type=submit]")
    page.wait_for_function("window.flowlens.timings.groups !== undefined", timeout=WAIT_MS)


def expand_group(
    page, key: str, limit: int, paths: tuple[str, str], token: str, samples: Samples, edges_samples: Samples
) -> int:
    """Click-equivalent expansion of one group -> first frame with its addresses (``samples``), and
    -> first frame with their edges too (``edges_samples``); returns how many addresses.

    ``paths``: the members' and the edges' requests. Each is made once before (not timed), so the
    console and the baseline find the API's cache in the same state."""
    path, edges_path = paths
    page.evaluate(FETCH_MS, [path, token])
    page.evaluate(FETCH_MS, [edges_path, token])
    page.evaluate("([key, limit]) => window.flowlens.expand(key, limit)", [key, limit])
    timing = page.evaluate("window.flowlens.timings.expand")
    edges = page.evaluate("window.flowlens.timings.expandEdges")
    page.evaluate("window.flowlens.map.settled()")  # the baseline's fetch must not wait for drawing
    samples.add(timing["drawn"] - timing["started"], page.evaluate(FETCH_MS, [path, token]))
    edges_samples.add(edges["drawn"] - edges["started"], page.evaluate(FETCH_MS, [edges_path, token]))
    return int(timing["addresses"])


def search(page, text: str, path: str, token: str, samples: Samples) -> int:
    """Typing into the search box -> results shown (the console's input delay included); warmed as above."""
    page.evaluate(FETCH_MS, [path, token])
    page.fill("#search-input", "")
    page.evaluate("window.flowlens.timings.search = undefined")
    page.fill("#search-input", text)
    page.wait_for_function(f"window.flowlens.timings.search?.q === {text!r}", timeout=WAIT_MS)
    timing = page.evaluate("window.flowlens.timings.search")
    samples.add(timing["shown"] - timing["started"], page.evaluate(FETCH_MS, [path, token]))
    return int(timing["count"])
