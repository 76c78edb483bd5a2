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
  const kept = Object.entries(params).filter(([, v]) => v !== undefined && v !== null && v !== "");
  return kept.length ? "?" + new URLSearchParams(kept).toString() : "";
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
  const params = { port: filters.port, protocol: filters.protocol, owner: filters.owner, tag: filters.tag };
  if (filters.range) params.since = new Date(Date.now() - rangeMs(filters.range)).toISOString();
  return params;
}

function rangeMs(range) {
  const n = Number.parseInt(range, 10);
  return n * (range.endsWith("d") ? 86_400_000 : 3_600_000);
}

export function topologyGrouped(group, filters) {
  return call("GET", "/topology", { params: { ...filterParams(filters), group } });
}

// A group's addresses: the address-level topology filtered to the group (a subnet is a prefix).
const GROUP_FILTER = { subnet: "prefix", asn: "asn", owner: "owner", environment: "environment" };

export function topologyAddresses(group, groupKey, filters, limit) {
  const params = { ...filterParams(filters), group: "address", [GROUP_FILTER[group]]: groupKey, limit };
  return call("GET", "/topology", { params });
}

export function search(q, limit = 20) {
  return call("GET", "/search", { params: { q, limit } });
}

export function asset(addr) {
  return call("GET", `/assets/${encodeURIComponent(addr)}`);
}

export function impact(target, depth) {
  return call("GET", "/impact", { params: { target, depth } });
}

export function changes(afterId, limit = 100) {
  return call("GET", "/changes", { params: { after: afterId, limit } });
}

export function changesSocketUrl(lastId) {
  const proto = location.protocol === "https:" ? "wss:" : "ws:";
  return `${proto}//${location.host}${BASE}/changes/ws${query({ token: session.token, last_id: lastId })}`;
}
