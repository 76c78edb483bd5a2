// The right-hand panel: an asset's page and the impact view.
import { trafficChart } from "./chart.js";
import { bytes, service, time } from "./format.js";
import { el, fillList } from "./listbox.js";

function facts(pairs) {
  return el("dl", {}, pairs.filter(([, v]) => v !== undefined && v !== null && v !== "")
    .flatMap(([k, v]) => [el("dt", {}, k), el("dd", {}, v)]));
}

function dependencyList(id, title, rows, other, onOpen) {
  const list = el("ul", { id, class: "list deps", role: "listbox", tabindex: "0", "aria-label": title });
  fillList(list, rows, (d) => [
    el("span", {}, d[other]),
    el("span", { class: "meta" }, `${service(d.server_port, d.protocol)} · ${bytes(d.bytes)} · ${time(d.last_seen)}`),
  ], (d) => onOpen(d[other]));
  return [el("h2", {}, `${title} (${rows.length})`), list];
}

// detail: the asset endpoint's answer (see api.js).
export function assetPage(panel, detail, { onOpen, onImpact }) {
  const a = detail;
  const depth = el("select", { id: "impact-depth", "aria-label": "impact depth" },
    ...[1, 2, 3, 4, 5, 6].map((d) => el("option", d === 3 ? { value: d, selected: "" } : { value: d }, `depth ${d}`)));
  // Impact of the whole asset, or of one service it serves (addr:port/proto, IPv6 in brackets).
  const host = a.addr.includes(":") ? `[${a.addr}]` : a.addr;
  const services = [...new Set(a.dependencies_in.map((d) => `${host}:${d.server_port}/${d.protocol}`))].sort();
  const target = el("select", { id: "impact-target", "aria-label": "impact of" },
    el("option", { value: a.addr }, "whole asset"),
    ...services.map((svc) => el("option", { value: svc }, service(...svc.split(":").pop().split("/")))));
  const changes = el("ul", { id: "asset-changes", class: "list", role: "listbox", tabindex: "0", "aria-label": "changes" });
  fillList(changes, a.changes, (c) => [el("span", {}, `${c.kind} ${c.subject}`), el("span", { class: "meta" }, time(c.window_start))], () => {});
  panel.replaceChildren(
    el("h3", { id: "asset-title", tabindex: "-1" }, a.addr),
    facts([
      ["name", a.name], ["hostname", a.hostname], ["owner", a.owner], ["environment", a.environment],
      ["tags", (a.tags || []).join(", ")], ["ASN", a.asn ? `AS${a.asn} ${a.as_org || ""}` : null],
      ["country", a.country], ["first seen", time(a.first_seen)], ["last seen", time(a.last_seen)],
    ]),
    el("div", { class: "actions" }, target, depth,
      el("button", { id: "impact-button", type: "button", onclick: () => onImpact(target.value, Number(depth.value)) }, "Show impact")),
    el("h2", {}, "Traffic"),
    trafficChart(a.traffic),
    ...dependencyList("deps-in", "Clients (depend on it)", a.dependencies_in, "client_addr", onOpen),
    ...dependencyList("deps-out", "Servers (it depends on)", a.dependencies_out, "server_addr", onOpen),
    el("h2", {}, `Changes (${a.changes.length})`),
    changes,
  );
}

// result: the impact endpoint's answer (see api.js).
export function impactView(panel, result, { onOpen, onDepth, onClose }) {
  const depth = el("select", { id: "impact-depth", "aria-label": "impact depth" },
    ...[1, 2, 3, 4, 5, 6].map((d) => el("option", d === result.depth ? { value: d, selected: "" } : { value: d }, `depth ${d}`)));
  depth.addEventListener("change", () => onDepth(Number(depth.value)));
  const list = el("ul", { id: "impact-list", class: "list", role: "listbox", tabindex: "0", "aria-label": "affected assets" });
  fillList(list, result.affected, (r) => [
    el("span", {}, r.addr),
    el("span", { class: "meta" }, `depth ${r.depth}${r.server_port !== undefined && r.server_port !== null ? ` · via ${r.via_server} ${service(r.server_port, r.protocol)}` : ""}`),
  ], (r) => onOpen(r.addr));
  panel.replaceChildren(...[
    el("h3", { id: "impact-title", tabindex: "-1" }, `Impact of ${result.target}`),
    el("div", { class: "actions" }, depth,
      el("button", { type: "button", onclick: () => onOpen(result.target_addr) }, "Asset page"),
      el("button", { type: "button", onclick: onClose }, "Clear")),
    el("p", { id: "impact-summary" }, `${result.affected.length} affected within depth ${result.depth}`),
    result.message ? el("p", { class: "error", role: "alert" }, result.message) : null,
    list,
  ].filter(Boolean));
}

export function message(panel, text, isError = false) {
  panel.replaceChildren(el("p", isError ? { class: "error", role: "alert" } : { class: "hint" }, text));
}
