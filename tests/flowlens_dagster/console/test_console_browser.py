"""The web console in headless Chromium against the real API, PostgreSQL and Redis.

Every wait is Playwright's (``expect`` or ``wait_for_*`` with a timeout): nothing here times the
console; ``flowlens bench console`` does.
"""

from __future__ import annotations

import json
import os
import shutil
import urllib.error
import urllib.request
from pathlib import Path

import pytest
import redis
from playwright.sync_api import expect

from tests.flowlens_dagster.console import topology

pytestmark = [pytest.mark.integration, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[3]
DOC_SCREENSHOT = REPO / "docs" / "console.png"
WAIT_MS = 15_000  # generous: the machine is shared; a real failure waits this long, a pass does not


def sign_in(page, console, password: str | None = None) -> None:
    page.goto(console.url)
    page.fill("#login-user", console.user)
    page.fill("#login-password", password or console.password)
    page.click("#login-submit")


def open_map(page, console) -> None:
    sign_in(page, console)
    expect(page.locator("#app")).to_be_visible(timeout=WAIT_MS)
    page.wait_for_function("window.flowlens.timings.groups !== undefined", timeout=WAIT_MS)


def map_stats(page) -> dict:
    return page.evaluate("window.flowlens.map.stats()")


def click_node(page, node_id: str) -> None:
    """Click where the map draws a node (once the camera has stopped and that frame is drawn)."""
    page.evaluate("window.flowlens.map.settled()")
    where = page.evaluate("(id) => window.flowlens.map.pagePosition(id)", node_id)
    assert where is not None, f"{node_id} is not on the map"
    page.mouse.click(where["x"], where["y"])


def list_texts(page, selector: str) -> list[str]:
    return page.locator(f"{selector} li > span:first-child").all_inner_texts()


def search(page, text: str) -> None:
    page.fill("#search-input", text)
    expect(page.locator("#search-results")).to_be_visible(timeout=WAIT_MS)


def test_wrong_password_shows_an_error(page, console):
    sign_in(page, console, password="not-the-password")
    expect(page.locator("#login-error")).to_have_text("Wrong user name or password.", timeout=WAIT_MS)
    expect(page.locator("#app")).to_be_hidden()


def test_login_opens_the_map_and_sign_out_returns(page, console):
    open_map(page, console)
    expect(page.locator("#user")).to_have_text(console.user)
    page.click("#logout")
    expect(page.locator("#login")).to_be_visible(timeout=WAIT_MS)
    page.reload()  # the session is gone, not only hidden
    expect(page.locator("#login")).to_be_visible(timeout=WAIT_MS)


@pytest.mark.parametrize(
    ("group", "expected"),
    [("subnet", topology.SUBNETS), ("owner", topology.OWNERS), ("environment", topology.ENVIRONMENTS)],
)
def test_map_renders_one_node_per_group(page, console, group, expected):
    open_map(page, console)
    page.select_option("#f-group", group)
    page.evaluate("window.flowlens.timings.groups = undefined")
    page.click("#filters button[type=submit]")
    page.wait_for_function("window.flowlens.timings.groups !== undefined", timeout=WAIT_MS)
    assert map_stats(page)["groups"] == len(expected)
    assert sorted(list_texts(page, "#groups")) == sorted(expected)


def test_filters_narrow_the_map_and_a_bad_port_is_refused(page, console):
    open_map(page, console)
    page.evaluate("window.flowlens.timings.groups = undefined")
    page.fill("#f-port", "5432")
    page.click("#filters button[type=submit]")
    page.wait_for_function("window.flowlens.timings.groups !== undefined", timeout=WAIT_MS)
    assert sorted(list_texts(page, "#groups")) == ["10.10.2.0/24", "10.10.3.0/24"]  # app -> db only
    page.fill("#f-port", "70000")
    page.click("#filters button[type=submit]")
    expect(page.locator("#filters-error")).to_have_text("Port must be a number from 0 to 65535.")
    assert map_stats(page)["groups"] == 2  # the map shown stays


def human_bytes(n: int) -> str:
    """Bytes as the console prints them: powers of 1,000, one decimal below 10 (README "Web console")."""
    units, value, unit = ["B", "kB", "MB", "GB", "TB", "PB"], float(n), 0
    while value >= 1000 and unit < len(units) - 1:
        value, unit = value / 1000, unit + 1
    return f"{value:.1f} {units[unit]}" if value < 10 and unit else f"{value:.0f} {units[unit]}"


def test_links_between_groups_are_as_wide_as_their_bytes_and_say_so(page, console):
    open_map(page, console)
    drawn = page.evaluate(
        "window.flowlens.map.graph.mapEdges((e, a, s, t) => ({edge: e, source: s.slice(2), target: t.slice(2),"
        " bytes: a.bytes, dependencies: a.dependencies, size: a.size}))"
    )
    expected = topology.subnet_pairs()
    assert {(e["source"], e["target"]): (e["bytes"], e["dependencies"]) for e in drawn} == expected
    # Wider means more bytes, whatever the number of dependencies (office -> web has the most).
    by_bytes = sorted(drawn, key=lambda e: e["bytes"])
    assert [e["size"] for e in by_bytes] == sorted(e["size"] for e in by_bytes)
    heaviest = by_bytes[-1]
    assert heaviest["size"] > by_bytes[-2]["size"]
    assert (heaviest["source"], heaviest["target"]) != max(expected, key=lambda k: expected[k][1])
    # Pointing at the middle of the heaviest link shows its figures.
    page.evaluate("window.flowlens.map.settled()")
    ends = [
        page.evaluate("(id) => window.flowlens.map.pagePosition(id)", f"g:{heaviest[k]}") for k in ("source", "target")
    ]
    page.mouse.move(ends[0]["x"], ends[0]["y"] + 40)
    page.mouse.move((ends[0]["x"] + ends[1]["x"]) / 2, (ends[0]["y"] + ends[1]["y"]) / 2, steps=4)
    figures = f"{human_bytes(heaviest['bytes'])}, {heaviest['dependencies']} dependencies"
    text = f"{heaviest['source']} → {heaviest['target']}: {figures}"
    expect(page.locator(".edge-tip")).to_have_text(text, timeout=WAIT_MS)
    expect(page.locator("#map-legend")).to_contain_text(f"heaviest {human_bytes(heaviest['bytes'])}")


def test_a_filtered_map_shows_its_counts_first_then_weighs_its_links_by_bytes(page, console):
    open_map(page, console)
    page.evaluate("window.flowlens.timings.groups = undefined; window.flowlens.timings.weights = undefined")
    page.select_option("#f-protocol", str(topology.TCP))
    page.click("#filters button[type=submit]")
    page.wait_for_function("window.flowlens.timings.weights !== undefined", timeout=WAIT_MS)
    drawn = page.evaluate(
        "window.flowlens.map.graph.mapEdges((e, a, s, t) => [s.slice(2), t.slice(2), a.bytes, a.dependencies])"
    )
    assert {(s, t): (b, n) for s, t, b, n in drawn} == topology.subnet_pairs(protocol=topology.TCP)  # no DNS
    expect(page.locator("#map-legend")).to_contain_text("Link width: bytes")


def test_search_finds_a_known_asset_and_opens_it_from_the_keyboard(page, console):
    open_map(page, console)
    page.keyboard.press("/")
    expect(page.locator("#search-input")).to_be_focused()
    search(page, "db-1")
    expect(page.locator("#search-results li").first).to_contain_text(topology.DB, timeout=WAIT_MS)
    page.keyboard.press("ArrowDown")
    page.keyboard.press("Enter")
    expect(page.locator("#asset-title")).to_have_text(topology.DB, timeout=WAIT_MS)


def test_clicking_nodes_expands_a_group_and_opens_an_asset_with_its_dependencies(page, console):
    open_map(page, console)
    click_node(page, "g:10.10.2.0/24")
    page.wait_for_function("window.flowlens.map.stats().addresses === 1", timeout=WAIT_MS)
    click_node(page, f"a:{topology.APP}")
    expect(page.locator("#asset-title")).to_have_text(topology.APP, timeout=WAIT_MS)
    assert set(list_texts(page, "#deps-in")) == topology.APP_CLIENTS
    assert set(list_texts(page, "#deps-out")) == topology.APP_SERVERS
    expect(page.locator("svg.chart path.area")).to_have_count(1)


def test_groups_list_works_from_the_keyboard(page, console):
    open_map(page, console)
    page.focus("#groups")
    page.keyboard.press("Home")
    first = page.locator("#groups li[aria-selected=true] > span:first-child").inner_text()
    page.keyboard.press("Enter")
    page.wait_for_function("window.flowlens.map.stats().addresses > 0", timeout=WAIT_MS)
    assert page.evaluate("[...window.flowlens.map.expanded.keys()]") == [first]
    # PageDown / PageUp move ten items at most: here to the last group and back to the first.
    page.keyboard.press("PageDown")
    expect(page.locator("#groups li[aria-selected=true]")).to_have_attribute(
        "id", f"groups-{len(topology.SUBNETS) - 1}"
    )
    page.keyboard.press("PageUp")
    expect(page.locator("#groups li[aria-selected=true]")).to_have_attribute("id", "groups-0")


@pytest.mark.parametrize("depth", [1, 3])
def test_impact_view_lists_the_known_dependents(page, console, depth):
    open_map(page, console)
    search(page, topology.DB)
    page.locator("#search-results li").first.click()
    expect(page.locator("#asset-title")).to_have_text(topology.DB, timeout=WAIT_MS)
    page.select_option("#impact-depth", str(depth))
    page.click("#impact-button")
    expect(page.locator("#impact-title")).to_be_visible(timeout=WAIT_MS)
    assert set(list_texts(page, "#impact-list")) == topology.DB_DEPENDENTS[depth]
    # On the grouped map the dependents light their subnets.
    subnets = {addr.rsplit(".", 1)[0] + ".0/24" for addr in topology.DB_DEPENDENTS[depth]}
    lit = page.evaluate("[...window.flowlens.map.highlight.hot]")
    assert set(lit) == {f"g:{s}" for s in subnets}


def show_grouping(page, group: str) -> None:
    page.select_option("#f-group", group)
    page.evaluate("window.flowlens.timings.groups = undefined")
    page.click("#filters button[type=submit]")
    page.wait_for_function("window.flowlens.timings.groups !== undefined", timeout=WAIT_MS)


def highlighted(page) -> tuple[str, set[str]]:
    return page.evaluate("window.flowlens.map.highlight.target"), set(
        page.evaluate("[...window.flowlens.map.highlight.hot]")
    )


@pytest.mark.parametrize("grouping", ["subnet", "asn", "owner", "environment"])
def test_impact_lights_groups_under_every_grouping_and_addresses_once_expanded(page, console, grouping):
    open_map(page, console)
    show_grouping(page, grouping)
    search(page, topology.DB)
    page.locator("#search-results li").first.click()
    expect(page.locator("#asset-title")).to_have_text(topology.DB, timeout=WAIT_MS)
    page.select_option("#impact-depth", "3")
    page.click("#impact-button")
    expect(page.locator("#impact-title")).to_be_visible(timeout=WAIT_MS)
    dependents = topology.DB_DEPENDENTS[3]
    groups = {f"g:{topology.group_of(grouping, addr)}" for addr in dependents}
    assert highlighted(page) == (f"g:{topology.group_of(grouping, topology.DB)}", groups)
    # The office's group opened: its addresses light up themselves, the other groups stay lit.
    office = topology.group_of(grouping, topology.OFFICE[0])
    page.evaluate("(key) => window.flowlens.expand(key)", office)
    page.wait_for_function("window.flowlens.map.stats().addresses > 0", timeout=WAIT_MS)
    elsewhere = {f"g:{topology.group_of(grouping, a)}" for a in dependents if topology.group_of(grouping, a) != office}
    inside = {f"a:{a}" for a in dependents if topology.group_of(grouping, a) == office}
    assert inside >= {f"a:{a}" for a in topology.OFFICE}
    assert highlighted(page)[1] == elsewhere | inside
    # Folding it again lights the group again.
    page.evaluate("(key) => window.flowlens.map.collapse(key)", office)
    assert highlighted(page)[1] == groups


def test_impact_of_one_service_from_the_asset_page(page, console):
    open_map(page, console)
    search(page, topology.DNS)
    page.locator("#search-results li").first.click()
    expect(page.locator("#asset-title")).to_have_text(topology.DNS, timeout=WAIT_MS)
    page.select_option("#impact-target", f"{topology.DNS}:53/17")
    page.select_option("#impact-depth", "1")
    page.click("#impact-button")
    expect(page.locator("#impact-title")).to_have_text(f"Impact of {topology.DNS}:53/17", timeout=WAIT_MS)
    assert set(list_texts(page, "#impact-list")) == topology.DNS_CLIENTS


def test_a_published_change_appears_in_the_feed(page, console):
    open_map(page, console)
    expect(page.locator("#feed-state")).to_have_text("live", timeout=WAIT_MS)
    subject = "10.10.9.9"
    change = console.add_change(subject)
    client = redis.Redis.from_url(console.redis_url)
    try:
        client.publish("changes:topology", json.dumps(change))
    finally:
        client.close()
    expect(page.locator("#feed li", has_text=subject)).to_be_visible(timeout=2_000)


def test_the_feed_reconnects_without_losing_changes(page, console):
    open_map(page, console)
    expect(page.locator("#feed-state")).to_have_text("live", timeout=WAIT_MS)
    # As when the network drops: the console retries after a few seconds (its backoff, set long here
    # so the change below is surely stored while it is away and never seen live).
    page.evaluate("window.flowlens.feed.retry = 4; window.flowlens.feed.socket.close()")
    expect(page.locator("#feed-state")).to_contain_text("reconnecting in", timeout=WAIT_MS)
    missed = console.add_change("10.10.9.10")
    expect(page.locator("#feed-state")).to_have_text("live", timeout=WAIT_MS)
    expect(page.locator("#feed li", has_text=missed["subject"])).to_have_count(1, timeout=WAIT_MS)


def test_reconnect_now_resumes_the_feed_at_once_with_what_was_missed(page, console):
    open_map(page, console)
    expect(page.locator("#feed-state")).to_have_text("live", timeout=WAIT_MS)
    expect(page.locator("#feed-retry")).to_be_hidden()
    page.evaluate("window.flowlens.feed.retry = 8; window.flowlens.feed.socket.close()")  # next try in 5 s
    expect(page.locator("#feed-state")).to_have_class("feed-state reconnecting", timeout=WAIT_MS)
    expect(page.locator("#feed-state")).to_contain_text("reconnecting in")
    missed = console.add_change("10.10.9.11")
    page.focus("#feed-retry")
    page.keyboard.press("Enter")
    # Sooner than the 5 s backoff: the button reconnected, not the timer.
    expect(page.locator("#feed-state")).to_have_text("live", timeout=4_000)
    expect(page.locator("#feed-retry")).to_be_hidden()
    expect(page.locator("#feed li", has_text=missed["subject"])).to_have_count(1, timeout=WAIT_MS)


def test_an_empty_map_says_why_and_a_failed_load_offers_to_try_again(page, console):
    open_map(page, console)
    expect(page.locator("#map-message")).to_be_hidden()
    page.fill("#f-port", "9999")
    page.click("#filters button[type=submit]")
    expect(page.locator("#map-message")).to_have_text(
        "Nothing matches these filters (time range: all time, port 9999). Clear a filter or widen the time range.",
        timeout=WAIT_MS,
    )
    expect(page.locator("#groups li.empty")).to_have_text("no groups")
    # The API out of reach: the map says so and offers to try again, from the keyboard too.
    page.route("**/api/v1/topology*", lambda route: route.abort())
    page.fill("#f-port", "")
    page.click("#filters button[type=submit]")
    expect(page.locator("#map-message")).to_contain_text("The map could not be loaded: the API does not answer")
    expect(page.locator("#map-retry")).to_be_focused()
    page.unroute("**/api/v1/topology*")
    page.evaluate("window.flowlens.timings.groups = undefined")
    page.keyboard.press("Enter")
    page.wait_for_function("window.flowlens.timings.groups !== undefined", timeout=WAIT_MS)
    expect(page.locator("#map-message")).to_be_hidden()
    assert map_stats(page)["groups"] == len(topology.SUBNETS)


def test_search_without_a_match_says_what_to_try_and_closes_on_escape_or_elsewhere(page, console):
    open_map(page, console)
    search(page, "zzzz-nothing")
    expect(page.locator("#search-results li.empty")).to_contain_text(
        "Nothing matches “zzzz-nothing”. Try a whole address", timeout=WAIT_MS
    )
    page.keyboard.press("Escape")
    expect(page.locator("#search-results")).to_be_hidden()
    search(page, "db-1")
    page.click("#groups-title")
    expect(page.locator("#search-results")).to_be_hidden()


def test_the_keyboard_focus_follows_to_the_asset_page_and_the_impact_view(page, console):
    open_map(page, console)
    page.keyboard.press("/")
    search(page, "db-1")
    expect(page.locator("#search-results li").first).to_contain_text(topology.DB, timeout=WAIT_MS)
    page.keyboard.press("ArrowDown")
    page.keyboard.press("Enter")
    expect(page.locator("#asset-title")).to_be_focused(timeout=WAIT_MS)
    page.keyboard.press("Tab")
    expect(page.locator("#impact-target")).to_be_focused()
    page.focus("#impact-button")
    page.keyboard.press("Enter")
    expect(page.locator("#impact-title")).to_be_focused(timeout=WAIT_MS)


def test_screenshot_of_the_console(page, console, tmp_path):
    """The README's picture: the whole map with one group expanded, and an asset page open.

    ``FLOWLENS_TEST_UPDATE_DOCS=1`` also copies it to docs/console.png.
    """
    open_map(page, console)
    click_node(page, "g:10.10.4.0/24")
    page.wait_for_function("window.flowlens.map.stats().addresses === 4", timeout=WAIT_MS)
    search(page, "app-1")
    page.keyboard.press("ArrowDown")
    page.keyboard.press("Enter")
    expect(page.locator("#asset-title")).to_have_text(topology.APP, timeout=WAIT_MS)
    page.evaluate("window.flowlens.map.renderer.getCamera().setState({x: 0.6, y: 0.5, ratio: 1.2, angle: 0})")
    page.evaluate("window.flowlens.map.settled()")
    shot = tmp_path / "readme.png"
    page.screenshot(path=str(shot))
    assert shot.stat().st_size > 10_000  # a rendered page, not a blank one
    if os.environ.get("FLOWLENS_TEST_UPDATE_DOCS") == "1":
        DOC_SCREENSHOT.parent.mkdir(exist_ok=True)
        shutil.copyfile(shot, DOC_SCREENSHOT)


def test_the_api_serves_the_console_at_the_root_and_keeps_its_own_paths(console):
    with urllib.request.urlopen(console.url) as answer:
        assert answer.status == 200
        assert "<title>FlowLens console</title>" in answer.read().decode()
    with urllib.request.urlopen(console.url + "console.js") as answer:
        assert answer.headers["content-type"].startswith(("application/javascript", "text/javascript"))
    with pytest.raises(urllib.error.HTTPError) as missing:
        urllib.request.urlopen(console.url + "api/v1/no-such-endpoint")
    assert missing.value.code == 404
    assert "FlowLens console" not in missing.value.read().decode()  # the API answered, not the console
