// Traffic over time as a small SVG area chart: a few hundred points need no chart library.
import { bytes, time } from "./format.js";

const NS = "http://www.w3.org/2000/svg";
const W = 300;
const H = 110;
const PAD = { left: 4, right: 4, top: 14, bottom: 14 };

function svg(tag, attrs, text) {
  const node = document.createElementNS(NS, tag);
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, v);
  if (text !== undefined) node.textContent = text;
  return node;
}

// points: [{t: ISO time, bytes}] in any order.
export function trafficChart(points) {
  const data = points.map((p) => ({ t: new Date(p.t).getTime(), v: Number(p.bytes) || 0 })).sort((a, b) => a.t - b.t);
  const root = svg("svg", { class: "chart", viewBox: `0 0 ${W} ${H}`, role: "img", "aria-label": `traffic, ${data.length} points` });
  if (!data.length) {
    root.append(svg("text", { x: W / 2, y: H / 2, "text-anchor": "middle" }, "no traffic in range"));
    return root;
  }
  const t0 = data[0].t;
  const t1 = Math.max(data[data.length - 1].t, t0 + 1);
  const top = Math.max(...data.map((d) => d.v), 1);
  const x = (t) => PAD.left + ((t - t0) / (t1 - t0)) * (W - PAD.left - PAD.right);
  const y = (v) => H - PAD.bottom - (v / top) * (H - PAD.top - PAD.bottom);
  const line = data.map((d) => `${x(d.t).toFixed(1)},${y(d.v).toFixed(1)}`).join(" L");
  const base = H - PAD.bottom;
  root.append(
    svg("path", { class: "area", d: `M${x(t0)},${base} L${line} L${x(data[data.length - 1].t)},${base} Z` }),
    svg("text", { x: PAD.left, y: 10 }, `peak ${bytes(top)} per window`),
    svg("text", { x: PAD.left, y: H - 2 }, time(new Date(t0).toISOString())),
    svg("text", { x: W - PAD.right, y: H - 2, "text-anchor": "end" }, time(new Date(t1).toISOString())),
  );
  return root;
}
