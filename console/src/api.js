// The one place that knows the query API's URLs and JSON shapes (README "Querying the map").
// Every view calls these functions, so a change of the API touches only this file.

const BASE = "/api/v1";
const TOKEN_KEY = "flowlens.token";
const USER_KEY = "flowlens.user";

export class ApiError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

export const session = {
  get token() { return sessionStorage.getItem(TOKEN_KEY); },
  get user() { return sessionStorage.getItem(USER_KEY) || ""; },
  save(token, user) {
    sessionStorage.setItem(TOKEN_KEY, token);
    sessionStorage.setItem(USER_KEY, user);
  },
  clear() {
    sessionStorage.removeItem(TOKEN_KEY);
    sessionStorage.removeItem(USER_KEY);
  },
};

// A session that expired or was revoked sends the user back to the login form.
let onUnauthorized = () => {};
export function whenUnauthorized(callback) { onUnauthorized = callback; }

function query(params) {
  const kept = dropEmpty(params);
  return Object.keys(kept).length ? "?" + new URLSearchParams(kept).toString() : "";
}

async function call(method, path, { params = {}, body, auth = true } = {}) {
  const headers = { Accept: "application/json" };
  if (auth && session.token) headers.Authorization = `Bearer ${session.token}`;
  if (body !== undefined) headers["Content-Type"] = "application/json";
  let response;
  try {
    response = await fetch(BASE + path + query(params), {
      method, headers, body: body === undefined ? undefined : JSON.stringify(body),
    });
  } catch (err) {
    throw new ApiError(0, `the API does not answer (${err.message})`);
  }
  const data = await response.json().catch(() => ({}));
  if (!response.ok) {
    if (response.status === 401 && auth) onUnauthorized();
    throw new ApiError(response.status, errorText(data, response));
  }
  return data;
}

// The API answers errors as one JSON line; FastAPI's own validation errors come as a list.
function errorText(data, response) {
  const detail = data.error ?? data.detail ?? data.message;
  if (typeof detail === "string") return detail;
  if (Array.isArray(detail)) return detail.map((d) => d.msg ?? JSON.stringify(d)).join("; ");
  if (detail && typeof detail === "object") return detail.message ?? JSON.stringify(detail);
  return `${response.status} ${response.statusText}`;
}

export async function login(username, password) {
  const data = await call("POST", "/login", { body: { username, password }, auth: false });
  session.save(data.token, username);
  return data;
}

export async function logout() {
  try {
    await call("POST", "/logout");
  } finally {
    session.clear();
  }
}

// filters: {range, port, protocol, owner, tag} as the filter form holds them.
export function filterParams(filters) {
  const params = { port: filters.port, protocol: filters.protocol, ...assetFilters(filters) };
  if (filters.range) params.since = new Date(Date.now() - rangeMs(filters.range)).toISOString();
  return dropEmpty(params);
}

// The filters that select assets (the others select dependencies).
const assetFilters = (filters) => dropEmpty({ owner: filters.owner, tag: filters.tag });
const dropEmpty = (params) => Object.fromEntries(Object.entries(params).filter(([, v]) => v !== undefined && v !== null && v !== ""));

function rangeMs(range) {
  const n = Number.parseInt(range, 10);
  return n * (range.endsWith("d") ? 86_400_000 : 3_600_000);
}

const MAX_PAGE = 5000; // the API's api.max_page default
const MAX_PAGES = 20;

// Follows next_cursor so a filtered map is whole (the unfiltered one comes in one cached answer).
async function allPages(path, params, pick) {
  const rows = [];
  let first = null;
  let cursor;
  for (let page = 0; page < MAX_PAGES; page += 1) {
    const data = await call("GET", path, { params: { ...params, cursor } });
    first ??= data;
    rows.push(...pick(data));
    cursor = data.next_cursor;
    if (!cursor) return { first, rows, truncated: false };
  }
  return { first, rows, truncated: true };
}

// Groups as nodes {key, label, assets}; edges {source, target, weight, bytes, dependencies} weighted by
// the bytes between the two groups in the time range when asked (the API sums them with bytes=true:
// slower than the counts), else by their dependencies. The whole map by subnet always has bytes.
export async function topologyGrouped(group, filters, { withBytes = true } = {}) {
  const params = { ...filterParams(filters), group };
  const filtered = Object.keys(params).length > 1;
  if (withBytes) params.bytes = "true";
  const pages = filtered ? await allPages("/topology", { ...params, limit: MAX_PAGE }, (d) => d.edges)
    : { first: await call("GET", "/topology", { params }), truncated: false };
  const data = pages.first;
  const edges = (filtered ? pages.rows : data.edges).map((e) => ({
    source: e.source, target: e.target, weight: e.bytes ?? e.dependencies ?? 1, bytes: e.bytes, dependencies: e.dependencies,
  }));
  const groups = data.nodes.map((n) => ({ key: n.id, label: n.id, assets: n.assets }));
  return { groups, edges, assets: groups.reduce((sum, g) => sum + g.assets, 0), truncated: pages.truncated };
}

// A group's members: the search endpoint lists them (every asset, linked or not); the address-level
// topology restricted to the group gives their edges.
const GROUP_FILTER = { asn: "asn", owner: "owner", environment: "environment" };

function memberQuery(group, key, filters, limit) {
  if (group === "subnet") return { q: key, limit };
  return { ...assetFilters(filters), [GROUP_FILTER[group]]: key, limit };
}

function edgeQuery(group, key, filters, limit) {
  return { ...filterParams(filters), group: "address", [group === "subnet" ? "prefix" : GROUP_FILTER[group]]: key, limit };
}

function checkExpandable(group, key) {
  if ((group === "asn" && key === "unknown") || key === "(none)") {
    throw new ApiError(400, `the group ${key} has no value to filter by: search its addresses instead`);
  }
}

// A group's members (asset rows), from the search endpoint: every asset of the group, linked or not.
export async function groupMembers(group, key, filters, limit = MAX_PAGE) {
  checkExpandable(group, key);
  const members = await call("GET", "/search", { params: memberQuery(group, key, filters, limit) });
  return { nodes: members.results, truncated: Boolean(members.next_cursor) };
}

// Their edges, from the address-level topology restricted to the group, with the other ends' rows.
export async function groupEdges(group, key, filters, limit = MAX_PAGE) {
  checkExpandable(group, key);
  const links = await call("GET", "/topology", { params: edgeQuery(group, key, filters, limit) });
  const edges = links.edges.map((e) => ({ source: e.client, target: e.server, weight: e.bytes ?? 1, bytes: e.bytes }));
  return { edges, others: links.nodes, truncated: Boolean(links.next_cursor) };
}

export async function search(q, limit = 20) {
  return (await call("GET", "/search", { params: { q, limit } })).results;
}

const hostPrefix = (addr) => `${addr}/${addr.includes(":") ? 128 : 32}`;

// The asset page: detail, dependencies both ways, traffic series and the asset's changes.
export async function asset(addr) {
  const [detail, history] = await Promise.all([
    call("GET", `/assets/${encodeURIComponent(addr)}`),
    call("GET", "/changes", { params: { prefix: hostPrefix(addr), limit: 50 } }),
  ]);
  const dep = (d, other) => ({ [`${other}_addr`]: d[other], server_port: d.port, protocol: d.protocol,
    bytes: d.bytes, first_seen: d.first_seen, last_seen: d.last_seen });
  return {
    ...detail.asset,
    dependencies_in: detail.dependencies_in.map((d) => dep(d, "client")),
    dependencies_in_total: detail.dependencies_in_total,
    dependencies_out: detail.dependencies_out.map((d) => dep(d, "server")),
    dependencies_out_total: detail.dependencies_out_total,
    traffic: detail.series.points,
    step: detail.series.step,
    changes: history.changes,
  };
}

// What puts an asset in a group of the map (groups.js groupOf).
const placement = (a) => ({ addr: a.addr, owner: a.owner, environment: a.environment, asn: a.asn });

export async function impact(target, depth) {
  const data = await call("GET", "/impact", { params: { target, depth } });
  return {
    target: data.target.addr + (data.target.port !== null && data.target.port !== undefined ? `:${data.target.port}/${data.target.protocol}` : ""),
    target_addr: data.target.addr,
    target_asset: placement(data.target),
    depth: data.depth,
    message: data.message,
    affected: data.affected.map((a) => ({ ...placement(a), name: a.name, depth: a.depth, via_server: a.via.server,
      server_port: a.via.port, protocol: a.via.protocol, path: a.path })),
  };
}

// The newest changes, newest first (the feed starts with them and resumes after the newest id).
export async function recentChanges(limit = 50) {
  return (await call("GET", "/changes", { params: { limit } })).changes;
}

export function changesSocketUrl(lastId) {
  const proto = location.protocol === "https:" ? "wss:" : "ws:";
  return `${proto}//${location.host}${BASE}/changes/ws${query({ token: session.token, last_id: lastId })}`;
}
