// The console's controller: login, then the map, search, asset page, impact view and live feed.
import * as api from "./api.js";
import { ChangeFeed, MAX_SHOWN } from "./feed.js";
import { bytes, time } from "./format.js";
import { el, fillList, handleKey } from "./listbox.js";
import { addressId, FlowMap } from "./map.js";
import { assetPage, impactView, message } from "./views.js";

const $ = (id) => document.getElementById(id);
const EXPAND_LIMIT = 5000;
const SEARCH_DELAY_MS = 60;

const state = { map: null, feed: null, groups: [], changes: [], filters: {}, searchSeq: 0, impact: null };
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

api.whenUnauthorized(() => {
  api.session.clear();
  showLogin("Your session has ended: sign in again.");
});

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
  try {
    const topo = await api.topologyGrouped(state.filters.group, state.filters);
    const fetched = performance.now();
    state.groups = topo.groups;
    state.map.showGroups(topo.groups, topo.edges);
    fillList($("groups"), topo.groups, (g) => [el("span", {}, g.label), el("span", { class: "meta" }, `${g.assets} · ${bytes(g.bytes)}`)],
      (g) => toggleGroup(g.key));
    const drawn = await state.map.rendered();
    probe.timings.groups = { started, fetched, drawn };
    setStatus(`${topo.groups.length} groups by ${state.filters.group}, ${topo.edges.length} links, ${topo.assets} assets`);
  } catch (err) {
    setStatus("");
    message($("panel"), `The map could not be loaded: ${err.message}`, true);
  }
}

async function toggleGroup(key) {
  if (state.map.expanded.has(key)) {
    state.map.collapse(key);
    await state.map.rendered();
    return;
  }
  await expandGroup(key);
}

async function expandGroup(key) {
  const started = performance.now();
  setStatus(`expanding ${key}…`);
  try {
    const topo = await api.topologyAddresses(state.filters.group, key, state.filters, EXPAND_LIMIT);
    const fetched = performance.now();
    state.map.expand(key, topo.nodes, topo.edges);
    const drawn = await state.map.rendered();
    probe.timings.expand = { key, started, fetched, drawn, addresses: topo.nodes.length };
    state.map.focusGroup(key);
    setStatus(`${key}: ${topo.nodes.length} addresses${topo.truncated ? ` (first ${topo.nodes.length})` : ""}`);
  } catch (err) {
    setStatus(`could not expand ${key}: ${err.message}`);
  }
}
probe.expand = expandGroup;

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
    if (!found.length) results.append(el("li", { class: "empty" }, `nothing matches “${q}”`));
    results.hidden = false;
    input.setAttribute("aria-expanded", "true");
    probe.timings.search = { q, started, shown: performance.now(), count: found.length };
  } catch (err) {
    if (seq !== state.searchSeq) return;
    results.replaceChildren(el("li", { class: "error", role: "alert" }, err.message));
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
    state.map.clearHighlight();
    assetPage($("panel"), detail, { onOpen: openAsset, onImpact: showImpact });
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
      onClose: () => { state.map.clearHighlight(); message($("panel"), "Impact view closed."); },
    });
    const lit = state.map.setHighlight(result.target_addr, result.target_group, result.affected);
    setStatus(`impact of ${target}: ${result.affected.length} affected, ${lit} on the map highlighted`);
  } catch (err) {
    message($("panel"), `impact of ${target}: ${err.message}`, true);
  }
}

// --- live feed -------------------------------------------------------------------------------
function startFeed() {
  if (state.feed) return state.feed.start();
  state.feed = new ChangeFeed({
    onState: (s) => {
      $("feed-state").textContent = s;
      $("feed-state").className = `feed-state ${s}`;
    },
    onChange: (change) => {
      state.changes.unshift(change);
      state.changes.length = Math.min(state.changes.length, MAX_SHOWN);
      fillList($("feed"), state.changes, (c) => [
        el("span", { class: `kind ${c.kind}` }, c.kind.replace("_", " ")),
        el("span", { class: "subject" }, c.subject),
        el("div", { class: "meta" }, time(c.window_start || c.detected_at)),
      ], (c) => openAsset(c.addr || c.server_addr || c.client_addr));
    },
  });
  probe.feed = state.feed;
  state.feed.start();
}

// --- boot ------------------------------------------------------------------------------------
if (api.session.token) showApp();
else showLogin();
