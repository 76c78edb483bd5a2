// The console's controller: login, then the map, search, asset page, impact view and live feed.
import * as api from "./api.js";
import { ChangeFeed, MAX_SHOWN } from "./feed.js";
import { bytes, time } from "./format.js";
import { el, fillList, handleKey } from "./listbox.js";
import { groupOf, prefixLengths } from "./groups.js";
import { addressId, FlowMap } from "./map.js";
import { assetPage, impactView, message } from "./views.js";

const $ = (id) => document.getElementById(id);
const EXPAND_LIMIT = 5000;
const SEARCH_DELAY_MS = 60;
const FEED_HISTORY = 50;

const state = { map: null, feed: null, groups: [], changes: [], filters: {}, searchSeq: 0, mapSeq: 0, impact: null };
// Timings and handles the browser tests and `flowlens bench console` read; the UI never needs them.
const probe = { timings: {}, state };
window.flowlens = probe;

function setStatus(text) { $("status").textContent = text; }

// --- login -----------------------------------------------------------------------------------
function showLogin(error) {
  state.feed?.stop();
  $("app").hidden = true;
  $("login").hidden = false;
  $("login-error").hidden = !error;
  $("login-error").textContent = error || "";
  $("login-user").focus();
}

$("login-form").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  $("login-submit").disabled = true;
  try {
    await api.login($("login-user").value.trim(), $("login-password").value);
    $("login-password").value = "";
    await showApp();
  } catch (err) {
    showLogin(err.status === 401 || err.status === 403 ? "Wrong user name or password." : err.message);
  } finally {
    $("login-submit").disabled = false;
  }
});

$("logout").addEventListener("click", async () => {
  await api.logout().catch(() => {});
  showLogin();
});

function sessionEnded() {
  api.session.clear();
  showLogin("Your session has ended: sign in again.");
}
api.whenUnauthorized(sessionEnded);

// --- map and groups --------------------------------------------------------------------------
async function showApp() {
  $("login").hidden = true;
  $("app").hidden = false;
  $("user").textContent = api.session.user;
  if (!state.map) {
    state.map = new FlowMap($("map"), { onGroup: toggleGroup, onAddress: openAsset });
    probe.map = state.map;
  }
  startFeed();
  await loadGroups();
}

function readFilters() {
  const f = { group: $("f-group").value, range: $("f-range").value, port: $("f-port").value.trim(),
    protocol: $("f-protocol").value, owner: $("f-owner").value.trim(), tag: $("f-tag").value.trim() };
  if (f.port && !(/^\d+$/.test(f.port) && Number(f.port) <= 65535)) throw new Error("Port must be a number from 0 to 65535.");
  return f;
}

$("filters").addEventListener("submit", (ev) => {
  ev.preventDefault();
  loadGroups();
});

async function loadGroups() {
  try {
    state.filters = readFilters();
    $("filters-error").hidden = true;
  } catch (err) {
    $("filters-error").textContent = err.message;
    $("filters-error").hidden = false;
    return;
  }
  setStatus("loading the map…");
  const started = performance.now();
  const seq = ++state.mapSeq;
  try {
    // The counts first, so the map shows at once; the bytes (slower on a large estate) follow.
    const topo = await api.topologyGrouped(state.filters.group, state.filters, { withBytes: false });
    const fetched = performance.now();
    state.groups = topo.groups;
    state.grouping = state.filters.group;
    state.lengths = prefixLengths(topo.groups.map((g) => g.key));
    state.map.showGroups(topo.groups, topo.edges);
    showLegend(topo.edges);
    highlightImpact(); // an impact view still open lights the new groups
    fillList($("groups"), topo.groups, (g) => [el("span", {}, g.label), el("span", { class: "meta" }, plural(g.assets, "asset"))],
      (g) => toggleGroup(g.key));
    if (!topo.groups.length) {
      $("groups").append(el("li", { class: "empty" }, "no groups"));
      mapMessage(`Nothing matches these filters (${describeFilters(state.filters)}). Clear a filter or widen the time range.`);
    } else {
      mapMessage(null);
    }
    const drawn = await state.map.rendered();
    probe.timings.groups = { started, fetched, drawn };
    const cut = topo.truncated ? " (first pages only: narrow the filters)" : "";
    setStatus(`${topo.groups.length} groups by ${state.filters.group}, ${topo.edges.length} links, ${topo.assets} assets${cut}`);
    if (!weighed(topo.edges)) weigh(seq, state.filters);
  } catch (err) {
    setStatus("");
    mapMessage(`The map could not be loaded: ${err.message}`, { retry: loadGroups });
  }
}

const plural = (n, word) => `${n} ${word}${n === 1 ? "" : "s"}`;

function describeFilters(f) {
  const parts = [`time range: ${$("f-range").selectedOptions[0]?.textContent ?? "all time"}`];
  if (f.port) parts.push(`port ${f.port}`);
  if (f.protocol) parts.push(`protocol ${$("f-protocol").selectedOptions[0]?.textContent}`);
  if (f.owner) parts.push(`owner ${f.owner}`);
  if (f.tag) parts.push(`tag ${f.tag}`);
  return parts.join(", ");
}

// A message over the map: why it is empty, or why it failed with a way to try again (null hides it).
function mapMessage(text, { retry } = {}) {
  const box = $("map-message");
  box.hidden = !text;
  if (!text) return box.replaceChildren();
  box.className = retry ? "map-message error" : "map-message";
  box.setAttribute("role", retry ? "alert" : "status");
  box.replaceChildren(el("p", { style: "margin: 0" }, text));
  if (retry) {
    const again = el("button", { type: "button", id: "map-retry", onclick: () => retry() }, "Try again");
    box.append(again);
    again.focus();
  }
}

const weighed = (edges) => edges.every((e) => e.bytes !== undefined && e.bytes !== null);

async function weigh(seq, filters) {
  try {
    const topo = await api.topologyGrouped(filters.group, filters);
    if (seq !== state.mapSeq) return; // the map was reloaded meanwhile
    state.map.reweigh(topo.edges);
    showLegend(topo.edges);
    probe.timings.weights = { drawn: await state.map.rendered(), edges: topo.edges.length };
  } catch (err) {
    if (seq === state.mapSeq) $("map-legend").textContent = `Link width: dependencies (bytes unavailable: ${err.message}).`;
  }
}

function showLegend(edges) {
  if (!weighed(edges)) {
    $("map-legend").hidden = !edges.length;
    $("map-legend").textContent = "Link width: dependencies, bytes on their way…";
    return;
  }
  const range = $("f-range").selectedOptions[0]?.textContent ?? "all time";
  const heaviest = Math.max(0, ...edges.map((e) => e.bytes ?? 0));
  $("map-legend").hidden = !edges.length;
  $("map-legend").textContent = `Link width: bytes, ${range} (heaviest ${bytes(heaviest)}). Point at a link for its figures.`;
}

async function toggleGroup(key) {
  if (state.map.expanded.has(key)) {
    state.map.collapse(key);
    await state.map.rendered();
    return;
  }
  await expandGroup(key);
}

// The addresses are drawn as soon as the group's members arrive; their edges (a slower query over the
// dependencies) are added when they come, so the group opens at once.
async function expandGroup(key, limit = EXPAND_LIMIT) {
  const started = performance.now();
  setStatus(`expanding ${key}…`);
  try {
    const edges = api.groupEdges(state.grouping, key, state.filters, limit);
    edges.catch(() => {}); // reported below, after the addresses are drawn
    const members = await api.groupMembers(state.grouping, key, state.filters, limit);
    const fetched = performance.now();
    state.map.expand(key, members.nodes, []);
    state.map.focusGroup(key); // starts moving now, so nobody clicks where a node was a frame ago
    const drawn = await state.map.rendered();
    probe.timings.expand = { key, started, fetched, drawn, addresses: members.nodes.length };
    const more = members.truncated ? ` (first ${members.nodes.length})` : "";
    setStatus(`${key}: ${members.nodes.length} addresses${more}, loading their links…`);
    const links = await edges;
    if (!state.map.expanded.has(key)) return; // folded meanwhile
    state.map.addEdges(withGroups(links.edges, [...members.nodes, ...links.others]));
    probe.timings.expandEdges = { key, started, drawn: await state.map.rendered(), edges: links.edges.length };
    const cut = links.truncated ? ` (first ${links.edges.length} links)` : "";
    setStatus(`${key}: ${members.nodes.length} addresses${more}, ${links.edges.length} links${cut}`);
  } catch (err) {
    setStatus(`could not expand ${key}: ${err.message}`);
  }
}
probe.expand = expandGroup;

// Edges of an expanded group end at an address when it is on the map, else at the other end's group.
function withGroups(edges, nodes) {
  const byAddr = new Map(nodes.map((n) => [n.addr, n]));
  const group = (addr) => groupOf(state.grouping, byAddr.get(addr) ?? { addr }, state.lengths);
  return edges.map((e) => ({ ...e, source_group: group(e.source), target_group: group(e.target) }));
}

// Impact results carry each address's owner, environment and ASN: its group under any grouping.
const placed = (item) => ({ addr: item.addr, group: groupOf(state.grouping, item, state.lengths) });

function highlightImpact() {
  const result = state.impact;
  if (!result) return 0;
  return state.map.setHighlight(placed(result.target_asset), result.affected.map(placed));
}

// --- search ----------------------------------------------------------------------------------
const input = $("search-input");
const results = $("search-results");
let searchTimer = null;

input.addEventListener("input", () => {
  const started = performance.now();
  clearTimeout(searchTimer);
  searchTimer = setTimeout(() => runSearch(input.value.trim(), started), SEARCH_DELAY_MS);
});

input.addEventListener("keydown", (ev) => {
  if (ev.key === "Escape") return closeResults();
  if (!results.hidden && handleKey(results, ev.key)) {
    ev.preventDefault();
    input.setAttribute("aria-activedescendant", results.getAttribute("aria-activedescendant") || "");
  }
});

// A pointer anywhere else closes the results, as Escape does.
document.addEventListener("pointerdown", (ev) => {
  if (!results.hidden && !ev.target.closest(".search")) closeResults();
});

document.addEventListener("keydown", (ev) => {
  if (ev.key === "/" && !["INPUT", "SELECT", "TEXTAREA"].includes(document.activeElement?.tagName)) {
    ev.preventDefault();
    input.focus();
  }
});

async function runSearch(q, started) {
  const seq = ++state.searchSeq;
  if (!q) return closeResults();
  try {
    const found = await api.search(q);
    if (seq !== state.searchSeq) return; // a newer query is on its way
    fillList(results, found, (a) => [el("span", {}, a.addr), el("span", { class: "meta" }, [a.name, a.hostname, a.owner].filter(Boolean).join(" · "))],
      (a) => { closeResults(); openAsset(a.addr); });
    if (!found.length) {
      results.append(el("li", { class: "empty" }, `Nothing matches “${q}”. Try a whole address (10.1.2.3), a prefix `
        + "(10.1.0.0/16), part of a hostname or name, an owner, a tag or an AS number (AS64512)."));
    }
    results.hidden = false;
    input.setAttribute("aria-expanded", "true");
    probe.timings.search = { q, started, shown: performance.now(), count: found.length };
  } catch (err) {
    if (seq !== state.searchSeq) return;
    results.replaceChildren(el("li", { class: "error", role: "alert" }, `The search failed: ${err.message}`));
    results.hidden = false;
  }
}

function closeResults() {
  results.hidden = true;
  input.setAttribute("aria-expanded", "false");
}

// --- asset page and impact -------------------------------------------------------------------
async function openAsset(addr) {
  message($("panel"), `loading ${addr}…`);
  try {
    const detail = await api.asset(addr);
    state.impact = null;
    state.map.clearHighlight();
    assetPage($("panel"), detail, { onOpen: openAsset, onImpact: showImpact });
    $("asset-title").focus(); // keyboard users continue on the page they opened; screen readers read it
    if (state.map.graph.hasNode(addressId(addr))) state.map.focus(addressId(addr));
  } catch (err) {
    message($("panel"), `${addr}: ${err.message}`, true);
  }
}

async function showImpact(target, depth) {
  message($("panel"), `computing the impact of ${target}…`);
  try {
    const result = await api.impact(target, depth);
    state.impact = result;
    impactView($("panel"), result, {
      onOpen: openAsset,
      onDepth: (d) => showImpact(target, d),
      onClose: () => { state.impact = null; state.map.clearHighlight(); message($("panel"), "Impact view closed."); },
    });
    $("impact-title").focus();
    const lit = highlightImpact();
    setStatus(`impact of ${target}: ${result.affected.length} affected, ${lit} on the map highlighted`);
  } catch (err) {
    message($("panel"), `impact of ${target}: ${err.message}`, true);
  }
}

// --- live feed -------------------------------------------------------------------------------
async function startFeed() {
  if (state.feed) return state.feed.start();
  state.feed = new ChangeFeed({
    onState: showFeedState,
    onChange: (change) => {
      state.changes.unshift(change);
      state.changes.length = Math.min(state.changes.length, MAX_SHOWN);
      showFeed();
    },
    onUnauthorized: sessionEnded,
  });
  probe.feed = state.feed;
  // The feed opens with the newest stored changes and resumes after the newest of them.
  try {
    const recent = await api.recentChanges(FEED_HISTORY);
    state.feed.lastId = recent.length ? recent[0].id : 0;
    for (const change of recent.reverse()) state.feed.receive(JSON.stringify(change));
  } catch (err) {
    $("feed-state").textContent = `history unavailable: ${err.message}`;
  }
  state.feed.start();
}

// "live", "connecting", "refused: ..." or, while the socket is down, a countdown to the next attempt
// with a button to try at once (the changes missed meanwhile are replayed either way).
let countdown = null;
function showFeedState(s, delayMs = 0) {
  clearInterval(countdown);
  const badge = $("feed-state");
  badge.className = `feed-state ${s.split(":")[0]}`;
  $("feed-retry").hidden = s !== "reconnecting";
  if (s !== "reconnecting") {
    badge.textContent = s;
    return;
  }
  const at = Date.now() + delayMs;
  const tick = () => {
    badge.textContent = `reconnecting in ${Math.max(0, Math.ceil((at - Date.now()) / 1000))} s`;
  };
  tick();
  countdown = setInterval(tick, 250);
}

$("feed-retry").addEventListener("click", () => state.feed?.reconnectNow());

// Changes of the pipeline (new_asset, ...) and alerts (other shapes) in one list, newest first.
function showFeed() {
  fillList($("feed"), state.changes, (c) => {
    const kind = c.kind || c.alertname || (c.channel === "changes:alerts" ? "alert" : "change");
    const subject = c.subject || c.summary || c.message || JSON.stringify(c);
    return [
      el("span", { class: `kind ${kind}` }, kind.replaceAll("_", " ")),
      el("span", { class: "subject" }, subject),
      el("div", { class: "meta" }, time(c.window_start || c.detected_at || c.time)),
    ];
  }, (c) => {
    const addr = c.addr || c.server || c.client;
    if (addr) openAsset(addr);
  });
}

// --- boot ------------------------------------------------------------------------------------
if (api.session.token) showApp();
else showLogin();
