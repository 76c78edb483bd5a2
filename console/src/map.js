// The map: groups when zoomed out, a group's addresses on demand, drawn with WebGL (sigma.js over a
// graphology graph) so the bench's 100,000-asset topology stays usable. Positions are computed, not
// simulated: a force layout over thousands of nodes would cost seconds on every load.
import Graph from "graphology";
import Sigma from "sigma";
import { bytes } from "./format.js";

const GOLDEN_ANGLE = Math.PI * (3 - Math.sqrt(5));
const GROUP_COLOR = "#1f6feb";
const ADDRESS_COLOR = "#4e8f5a";
const DIM_COLOR = "#d5dae0";
const HOT_COLOR = "#d1242f";
const TARGET_COLOR = "#ff8c00";

export const groupId = (key) => `g:${key}`;
export const addressId = (addr) => `a:${addr}`;

// Sunflower spiral: even density, biggest items first in the middle, deterministic.
function spiral(index, spacing) {
  const r = spacing * Math.sqrt(index + 0.5);
  const a = index * GOLDEN_ANGLE;
  return { x: r * Math.cos(a), y: r * Math.sin(a) };
}

const GROUP_SPACING = 10;
// Edge widths grow with the square root of their weight (bytes, else dependencies) relative to the
// heaviest edge: a log scale would draw 1 GB and 10 GB nearly alike.
const edgeSize = (weight, heaviest) => 0.5 + 5 * Math.sqrt(Math.max(weight || 0, 0) / Math.max(heaviest, 1));
// Node sizes are screen pixels at every zoom (see zoomToSizeRatioFunction), so zooming in spreads
// nodes apart; the biggest group's radius shrinks as groups get denser on the screen.
const groupSize = (assets, maxSize) => Math.min(maxSize, 5 + 1.5 * Math.log2(1 + (assets || 0)));
const maxGroupSize = (count) => Math.max(5, Math.min(18, 320 / Math.sqrt(count || 1)));

export class FlowMap {
  constructor(container, { onGroup, onAddress }) {
    this.graph = new Graph({ type: "directed", multi: false, allowSelfLoops: true });
    this.expanded = new Map(); // group key -> [address node ids]
    this.impact = null; // {target, impacted} of the impact view shown
    this.highlight = null; // {target: id, hot: Set(ids)}: where that impact is on the map now
    this.heaviest = 1;
    this.renderer = new Sigma(this.graph, container, {
      hideEdgesOnMove: true,
      labelRenderedSizeThreshold: 4,
      labelDensity: 0.4,
      zoomToSizeRatioFunction: () => 1,
      defaultEdgeType: "line",
      zIndex: true,
      nodeReducer: (node, data) => this.reduceNode(node, data),
      edgeReducer: (edge, data) => this.reduceEdge(edge, data),
      enableEdgeEvents: true, // the tooltip of a link
    });
    this.tip = document.createElement("div");
    this.tip.className = "edge-tip";
    this.tip.setAttribute("role", "tooltip");
    this.tip.hidden = true;
    container.after(this.tip);
    this.renderer.on("enterEdge", ({ edge, event }) => this.showTip(edge, event));
    this.renderer.on("leaveEdge", () => { this.tip.hidden = true; });
    this.renderer.on("clickNode", ({ node }) => {
      const attrs = this.graph.getNodeAttributes(node);
      if (attrs.kind === "group") onGroup(attrs.key);
      else onAddress(attrs.key);
    });
  }

  // One frame drawn after the latest change: what "visible" means for the bench's timings.
  rendered() {
    return new Promise((resolve) => {
      this.renderer.once("afterRender", () => resolve(performance.now()));
      this.renderer.scheduleRefresh();
    });
  }

  showGroups(groups, edges) {
    this.graph.clear();
    this.expanded.clear();
    this.impact = null;
    this.highlight = null;
    const sorted = [...groups].sort((a, b) => b.assets - a.assets || String(a.key).localeCompare(String(b.key)));
    const maxSize = maxGroupSize(sorted.length);
    sorted.forEach((g, i) => {
      const { x, y } = spiral(i, GROUP_SPACING);
      this.graph.addNode(groupId(g.key), {
        kind: "group", key: g.key, x, y, size: groupSize(g.assets, maxSize), color: GROUP_COLOR,
        label: `${g.label} (${g.assets})`, zIndex: 1,
      });
    });
    this.heaviest = Math.max(1, ...edges.map((e) => e.weight || 0));
    for (const e of edges) this.addEdge(groupId(e.source), groupId(e.target), e);
    // Labels are drawn right of their nodes: a little zoomed out and shifted so the rightmost fit.
    this.renderer.getCamera().setState({ x: 0.6, y: 0.5, ratio: 1.2, angle: 0 });
  }

  // Replaces a group by its addresses, laid out around where the group was; edges go to the
  // other end's address when it is on the map, else to its group.
  expand(key, nodes, edges) {
    if (this.expanded.has(key)) this.collapse(key);
    const gid = groupId(key);
    if (!this.graph.hasNode(gid)) return [];
    const center = this.graph.getNodeAttributes(gid);
    // The addresses fill a disc a little smaller than the space between two groups.
    const spacing = (0.45 * GROUP_SPACING) / Math.sqrt(Math.max(nodes.length, 1));
    const ids = [];
    const size = nodes.length < 50 ? 6 : nodes.length < 500 ? 4 : 3;
    nodes.forEach((n, i) => {
      const id = addressId(n.addr);
      const { x, y } = spiral(i, spacing);
      this.graph.mergeNode(id, {
        kind: "address", key: n.addr, group: key, x: center.x + x, y: center.y + y, size,
        color: ADDRESS_COLOR, label: n.name || n.hostname || n.addr, zIndex: 2,
      });
      ids.push(id);
    });
    this.graph.setNodeAttribute(gid, "hidden", true);
    this.expanded.set(key, ids);
    this.addEdges(edges);
    this.relight();
    return ids;
  }

  // edges: {source, target, weight, bytes?, source_group, target_group} between addresses.
  addEdges(edges) {
    for (const e of edges) {
      this.addEdge(this.endpoint(e.source, e.source_group), this.endpoint(e.target, e.target_group), e);
    }
  }

  collapse(key) {
    for (const id of this.expanded.get(key) || []) if (this.graph.hasNode(id)) this.graph.dropNode(id);
    this.expanded.delete(key);
    if (this.graph.hasNode(groupId(key))) this.graph.setNodeAttribute(groupId(key), "hidden", false);
    this.relight();
  }

  endpoint(addr, group) {
    if (this.graph.hasNode(addressId(addr))) return addressId(addr);
    return group !== undefined && group !== null ? groupId(group) : null;
  }

  // link: {weight, bytes?, dependencies?}; links between the same two nodes add up.
  addEdge(source, target, { weight = 0, bytes: traffic, dependencies = 1 } = {}) {
    if (!source || !target || !this.graph.hasNode(source) || !this.graph.hasNode(target)) return;
    const known = traffic !== undefined && traffic !== null;
    if (this.graph.hasEdge(source, target)) {
      const a = this.graph.getEdgeAttributes(source, target);
      const total = a.weight + weight;
      this.graph.mergeEdgeAttributes(source, target, {
        weight: total, size: edgeSize(total, this.heaviest), dependencies: a.dependencies + dependencies,
        bytes: a.bytes === null || !known ? null : a.bytes + traffic,
      });
      return;
    }
    this.graph.addEdge(source, target, { weight, size: edgeSize(weight, this.heaviest), color: "rgba(60, 80, 100, 0.55)",
      bytes: known ? traffic : null, dependencies });
  }

  // The bytes of the links between groups, arrived after the map was drawn by dependencies.
  reweigh(edges) {
    this.heaviest = Math.max(1, ...edges.map((e) => e.weight || 0));
    for (const e of edges) {
      const [s, t] = [groupId(e.source), groupId(e.target)];
      if (!this.graph.hasEdge(s, t)) continue;
      this.graph.mergeEdgeAttributes(s, t, { weight: e.weight, bytes: e.bytes, size: edgeSize(e.weight, this.heaviest) });
    }
  }

  // "10.1.2.0/24 → 10.1.3.0/24: 1.2 GB, 14 dependencies" (bytes when the API gave them).
  describeEdge(edge) {
    const a = this.graph.getEdgeAttributes(edge);
    const [s, t] = this.graph.extremities(edge).map((n) => this.graph.getNodeAttribute(n, "key"));
    const deps = `${a.dependencies} ${a.dependencies === 1 ? "dependency" : "dependencies"}`;
    return `${s} → ${t}: ${a.bytes === null ? "" : `${bytes(a.bytes)}, `}${deps}`;
  }

  showTip(edge, event) {
    this.tip.textContent = this.describeEdge(edge);
    this.tip.style.left = `${event.x + 12}px`;
    this.tip.style.top = `${event.y + 12}px`;
    this.tip.hidden = false;
  }

  // target and impacted: [{addr, group}] from the impact view. An address on the map lights itself,
  // one not expanded its group; expanding or folding a group later moves the light with it.
  setHighlight(target, impacted) {
    this.impact = { target, impacted };
    return this.relight();
  }

  relight() {
    if (!this.impact) return 0;
    const hot = new Set();
    for (const item of this.impact.impacted) {
      const id = this.endpoint(item.addr, item.group);
      if (id) hot.add(id);
    }
    const { addr, group } = this.impact.target;
    this.highlight = { target: this.endpoint(addr, group), hot };
    this.renderer.refresh();
    return hot.size;
  }

  clearHighlight() {
    this.impact = null;
    this.highlight = null;
    this.renderer.refresh();
  }

  reduceNode(node, data) {
    if (!this.highlight) return data;
    if (node === this.highlight.target) return { ...data, color: TARGET_COLOR, zIndex: 4, forceLabel: true };
    if (this.highlight.hot.has(node)) return { ...data, color: HOT_COLOR, zIndex: 3, forceLabel: true };
    return { ...data, color: DIM_COLOR, label: null, zIndex: 0 };
  }

  reduceEdge(edge, data) {
    if (!this.highlight) return data;
    const [s, t] = this.graph.extremities(edge);
    const lit = (s === this.highlight.target || this.highlight.hot.has(s)) &&
      (t === this.highlight.target || this.highlight.hot.has(t));
    return lit ? { ...data, color: HOT_COLOR } : { ...data, hidden: true };
  }

  // Where a node is drawn, in page pixels (keyboard users have the lists; tests and the bench click here).
  pagePosition(id) {
    if (!this.graph.hasNode(id)) return null;
    const { x, y } = this.graph.getNodeAttributes(id);
    const p = this.renderer.graphToViewport({ x, y });
    const box = this.renderer.getContainer().getBoundingClientRect();
    return { x: box.left + p.x, y: box.top + p.y };
  }

  // Centers the camera on a node; a group's addresses fill the view when it is expanded.
  focus(id, ratio = 0.15) {
    const display = this.renderer.getNodeDisplayData(id);
    if (display) this.renderer.getCamera().animate({ x: display.x, y: display.y, ratio }, { duration: 250 });
  }

  // Zoom so an expanded group's disc of addresses (diameter 0.9 group spacings) fills about a quarter
  // of the view; the whole spiral of n groups is about 2 sqrt(n) group spacings wide.
  focusGroup(key) {
    const groups = this.graph.filterNodes((_, a) => a.kind === "group").length;
    this.focus(groupId(key), Math.min(1, (4 * 0.9) / (2 * Math.sqrt(Math.max(groups, 1)))));
  }

  idle() {
    return !this.renderer.getCamera().isAnimated();
  }

  // Resolves once the camera has stopped and a frame was drawn where it stopped: sigma finds the
  // node under the pointer in its last drawn frame, so a click before that frame would miss.
  async settled() {
    while (!this.idle()) await new Promise((resolve) => requestAnimationFrame(resolve));
    await this.rendered();
  }

  stats() {
    let groups = 0;
    let addresses = 0;
    this.graph.forEachNode((_, a) => {
      if (a.hidden) return;
      if (a.kind === "group") groups += 1;
      else addresses += 1;
    });
    return { groups, addresses, edges: this.graph.size };
  }
}
