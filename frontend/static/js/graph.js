// The Neuron-Activated Graph, drawn with plotly.js (served locally as the global `Plotly`).
//
// x = layer, y = rank of the neuron within its layer (0 = largest |impact|, at the top). Nodes are
// sized by |impact| and coloured by its sign on a diverging red/blue scale. Edges are drawn as a few
// line traces (binned by |weight_norm| and sign, segments separated by nulls), so 1000 edges cost a
// handful of SVG paths. A threshold t in [0, 1] hides nodes with |impact| < t·max|impact| and edges
// with |weight_norm| < t (or with a hidden end). Selection is drawn as an amber halo, ablated nodes
// get an X and a dark outline.

import { afterRender, frameScheduler } from "./dom.js";

const COLORSCALE = [
  [0.0, "#b2182b"], [0.2, "#d6604d"], [0.4, "#f4a582"], [0.5, "#ebebef"],
  [0.6, "#92c5de"], [0.8, "#4393c3"], [1.0, "#2166ac"],
];
const UNSIGNED_SCALE = [[0.0, "#d1e5f0"], [0.5, "#4393c3"], [1.0, "#053061"]];
// weight_norm is the edge's share of its target's incoming |weight| (sums to 1 per target node).
const EDGE_BINS = [0.1, 0.2, 0.4, Infinity];
const EDGE_WIDTH = [0.6, 1.1, 1.8, 2.8];
const EDGE_ALPHA = [0.16, 0.28, 0.45, 0.65];
const FONT = 'system-ui, -apple-system, "Segoe UI", Roboto, "Helvetica Neue", Arial, sans-serif';

let shiftHeld = false;
window.addEventListener("keydown", (e) => { if (e.key === "Shift") shiftHeld = true; });
window.addEventListener("keyup", (e) => { if (e.key === "Shift") shiftHeld = false; });
window.addEventListener("blur", () => { shiftHeld = false; });

export class NagGraph {
  /**
   * @param {HTMLElement} container
   * @param {object} result  an <Analysis>
   * @param {{onNodeClick?: (id: string, opts: {shift: boolean}) => void,
   *          onBoxSelect?: (ids: string[], opts: {shift: boolean}) => void}} handlers
   */
  constructor(container, result, handlers = {}) {
    if (typeof window.Plotly === "undefined") throw new Error("plotly.js did not load (/static/vendor/plotly.min.js)");
    this.el = container;
    this.handlers = handlers;
    this.method = result.method;
    this.nodes = (result.nodes || []).map((n) => ({ ...n, abs: Math.abs(Number(n.impact) || 0) }));
    this.byId = new Map(this.nodes.map((n) => [n.id, n]));
    this.maxAbs = this.nodes.reduce((m, n) => Math.max(m, n.abs), 0) || 1;
    this.signed = result.method !== "magnitude" || this.nodes.some((n) => n.impact < 0);
    const maxLayer = this.nodes.reduce((m, n) => Math.max(m, n.layer), 0);
    this.nLayers = Math.max((result.model && result.model.n_layers) || 0, maxLayer + 1);
    this.assignRanks();
    this.k = Math.max(result.k || 0, this.nodes.reduce((m, n) => Math.max(m, n.rank + 1), 0));
    this.edges = (result.edges || [])
      .filter((e) => this.byId.has(e.source) && this.byId.has(e.target))
      .map((e) => {
        const w = Math.abs(Number(e.weight_norm ?? e.weight) || 0);
        let bin = 0;
        while (w >= EDGE_BINS[bin]) bin += 1;
        return { ...e, absNorm: w, bin: Math.min(bin, EDGE_BINS.length - 1), neg: Number(e.weight) < 0 };
      });
    // Rank of each edge among its target's incoming edges (0 = strongest), for "top m per node".
    const incoming = new Map();
    for (const e of this.edges) {
      if (!incoming.has(e.target)) incoming.set(e.target, []);
      incoming.get(e.target).push(e);
    }
    for (const list of incoming.values()) list.sort((a, b) => b.absNorm - a.absNorm).forEach((e, i) => { e.inRank = i; });
    // Dense graphs (K = 20: up to 20 x 20 edges per layer pair) show the strongest 3 per node by default.
    this.maxIn = this.edges.length > 1200 ? 3 : Infinity;
    this.thr = 0;
    this.selected = new Set();
    this.ablated = new Set();
    this.selectionRevision = 0;
    this.schedule = frameScheduler(() => this.draw());  // one redraw per animation frame
    // Narrow screens scroll the graph sideways rather than squeezing 30 layers into 300 px.
    this.el.style.minWidth = `${this.nLayers * 20 + 110}px`;
    this.el.dataset.nodeCount = String(this.nodes.length);
    this.el.dataset.edgeCount = String(this.edges.length);
    this.el.__nag = this;
    this.draw(true);
  }

  assignRanks() {
    const byLayer = new Map();
    for (const n of this.nodes) {
      if (!byLayer.has(n.layer)) byLayer.set(n.layer, []);
      byLayer.get(n.layer).push(n);
    }
    for (const list of byLayer.values()) {
      const hasRank = list.every((n) => Number.isInteger(n.rank));
      if (!hasRank) list.sort((a, b) => b.abs - a.abs).forEach((n, i) => { n.rank = i; });
    }
  }

  height() {
    return Math.max(340, Math.min(760, 96 + this.k * 34));
  }

  isVisible(n) {
    return n.abs >= this.thr * this.maxAbs - 1e-12;
  }

  traces() {
    const visible = this.nodes.filter((n) => this.isVisible(n));
    const visIds = new Set(visible.map((n) => n.id));
    const edgeTraces = [];
    const groups = new Map();
    let shownEdges = 0;
    const focus = [];
    for (const e of this.edges) {
      if (e.absNorm < this.thr || !visIds.has(e.source) || !visIds.has(e.target)) continue;
      if (this.selected.has(e.source) || this.selected.has(e.target)) focus.push(e);
      if (e.inRank >= this.maxIn) continue;
      shownEdges += 1;
      const key = `${e.bin}:${e.neg ? 1 : 0}`;
      if (!groups.has(key)) groups.set(key, { x: [], y: [], bin: e.bin, neg: e.neg });
      const g = groups.get(key);
      const s = this.byId.get(e.source);
      const t = this.byId.get(e.target);
      g.x.push(s.layer, t.layer, null);
      g.y.push(s.rank, t.rank, null);
    }
    // Dense graphs: fade edges so nodes stay readable (1000+ edges at threshold 0).
    const fade = Math.max(0.35, Math.min(1, 500 / Math.max(shownEdges, 1)));
    for (const g of groups.values()) {
      const rgb = g.neg ? "178,24,43" : "33,102,172";
      edgeTraces.push({
        type: "scatter", mode: "lines", x: g.x, y: g.y, hoverinfo: "skip",
        line: { width: EDGE_WIDTH[g.bin], color: `rgba(${rgb},${(EDGE_ALPHA[g.bin] * (g.bin === 3 ? Math.sqrt(fade) : fade)).toFixed(3)})` },
        showlegend: false,
      });
    }

    // Edges touching the selection, drawn on top in amber so a node's neighbourhood stands out.
    if (focus.length) {
      const fx = [];
      const fy = [];
      for (const e of focus) {
        const s = this.byId.get(e.source);
        const t = this.byId.get(e.target);
        fx.push(s.layer, t.layer, null);
        fy.push(s.rank, t.rank, null);
      }
      edgeTraces.push({
        type: "scatter", mode: "lines", x: fx, y: fy, hoverinfo: "skip", showlegend: false,
        line: { width: 1.6, color: "rgba(240,140,0,0.75)" },
      });
    }

    const sel = visible.filter((n) => this.selected.has(n.id));
    const halo = {
      type: "scatter", mode: "markers", x: sel.map((n) => n.layer), y: sel.map((n) => n.rank),
      hoverinfo: "skip", showlegend: false,
      marker: {
        size: sel.map((n) => this.size(n) + 12), color: "rgba(240,140,0,0.28)",
        line: { color: "#f08c00", width: 2.5 },
      },
    };

    const M = this.maxAbs;
    const nodeTrace = {
      type: visible.length > 4000 ? "scattergl" : "scatter",
      mode: "markers",
      x: visible.map((n) => n.layer),
      y: visible.map((n) => n.rank),
      customdata: visible.map((n) => [n.id, n.impact, n.activation ?? null, n.rank]),
      hovertemplate:
        "<b>%{customdata[0]}</b><br>impact %{customdata[1]:.4g}<br>activation %{customdata[2]:.4g}" +
        "<br>rank %{customdata[3]} in layer %{x}<extra></extra>",
      showlegend: false,
      marker: {
        size: visible.map((n) => this.size(n)),
        color: visible.map((n) => Number(n.impact) || 0),
        colorscale: this.signed ? COLORSCALE : UNSIGNED_SCALE,
        cmin: this.signed ? -M : 0,
        cmax: M,
        symbol: visible.map((n) => (this.ablated.has(n.id) ? "circle-x" : "circle")),
        line: {
          color: visible.map((n) => (this.ablated.has(n.id) ? "#111827" : "rgba(27,33,48,0.45)")),
          width: visible.map((n) => (this.ablated.has(n.id) ? 2.2 : 0.8)),
        },
        opacity: 1,
        showscale: true,
        colorbar: {
          thickness: 10, len: 0.8, outlinewidth: 0, x: 1.01, xpad: 6,
          title: { text: "impact", side: "right", font: { size: 11 } },
          tickfont: { size: 10 },
        },
      },
      selected: { marker: { opacity: 1 } },
      unselected: { marker: { opacity: 1 } },
    };
    this.shown = { nodes: visible.length, edges: shownEdges };
    this.nodeTraceIndex = edgeTraces.length + 1;
    return [...edgeTraces, halo, nodeTrace];
  }

  size(n) {
    return 7 + 17 * Math.sqrt(n.abs / this.maxAbs);
  }

  layout() {
    const dtickX = this.nLayers > 24 ? 2 : 1;
    return {
      height: this.height(),
      margin: { l: 52, r: 8, t: 10, b: 46 },
      paper_bgcolor: "rgba(0,0,0,0)",
      plot_bgcolor: "#ffffff",
      font: { family: FONT, size: 12, color: "#4a5368" },
      xaxis: {
        title: { text: "layer", standoff: 8 }, range: [-0.7, this.nLayers - 0.3], tickmode: "linear",
        tick0: 0, dtick: dtickX, tickprefix: "L", showgrid: true, gridcolor: "#eef0f5", zeroline: false,
        showline: false, ticks: "",
      },
      yaxis: {
        title: { text: "rank in layer", standoff: 6 }, range: [this.k - 0.4, -0.6], tickmode: "linear",
        tick0: 0, dtick: this.k > 12 ? 2 : 1, showgrid: false, zeroline: false, ticks: "",
      },
      dragmode: "select",
      selectdirection: "any",
      hovermode: "closest",
      clickmode: "event",
      hoverlabel: { bgcolor: "#1b2130", bordercolor: "#1b2130", font: { color: "#ffffff", family: FONT, size: 12 } },
      showlegend: false,
      uirevision: "nag",
      selectionrevision: this.selectionRevision,
      selections: [],
      newselection: { line: { color: "#4355d6", width: 1, dash: "dot" } },
      activeselection: { fillcolor: "#4355d6", opacity: 0.08 },
    };
  }

  draw(first = false) {
    const config = {
      displaylogo: false,
      responsive: true,
      scrollZoom: false,
      modeBarButtonsToRemove: ["lasso2d", "autoScale2d", "toggleSpikelines", "hoverCompareCartesian", "hoverClosestCartesian"],
      toImageButtonOptions: { filename: "circuitscope-nag", scale: 2 },
    };
    const t0 = performance.now();
    const p = window.Plotly.react(this.el, this.traces(), this.layout(), config);
    this.el.dataset.visibleCount = String(this.shown.nodes);
    this.el.dataset.visibleEdges = String(this.shown.edges);
    if (first) {
      this.el.on("plotly_click", (ev) => this.onClick(ev));
      this.el.on("plotly_selected", (ev) => this.onSelected(ev));
    }
    return afterRender(this, t0, p);
  }

  onClick(ev) {
    if (!ev || !ev.points) return;
    const pt = ev.points.find((p) => p.curveNumber === this.nodeTraceIndex && p.customdata);
    if (!pt) return;
    const shift = Boolean((ev.event && ev.event.shiftKey) || shiftHeld);
    if (this.handlers.onNodeClick) this.handlers.onNodeClick(pt.customdata[0], { shift });
  }

  onSelected(ev) {
    if (!ev || !ev.points) return;
    const ids = ev.points.filter((p) => p.curveNumber === this.nodeTraceIndex && p.customdata).map((p) => p.customdata[0]);
    // Drop plotly's own selection styling and box; ours is the halo.
    this.selectionRevision += 1;
    setTimeout(() => {
      if (this.handlers.onBoxSelect && ids.length) this.handlers.onBoxSelect(ids, { shift: shiftHeld });
      else this.draw();
    }, 0);
  }

  setThreshold(t) {
    this.thr = Math.max(0, Math.min(1, Number(t) || 0));
    this.schedule();
  }

  /** Show at most m incoming edges per node (Infinity: all). */
  setMaxIncoming(m) {
    this.maxIn = m > 0 ? m : Infinity;
    this.schedule();
  }

  setSelection(ids) {
    this.selected = new Set(ids);
    this.schedule();
  }

  setAblated(ids) {
    this.ablated = new Set(ids || []);
    this.schedule();
  }

  /** Page coordinates (CSS px) of a node's centre, for tests and keyboard helpers. */
  screenPos(id) {
    const n = this.byId.get(id);
    const fl = this.el._fullLayout;
    if (!n || !fl) return null;
    const rect = this.el.getBoundingClientRect();
    const x = rect.left + fl._size.l + fl.xaxis.l2p(n.layer);
    const y = rect.top + fl._size.t + fl.yaxis.l2p(n.rank);
    return { x: x + window.scrollX, y: y + window.scrollY, clientX: x, clientY: y };
  }

  /** Nodes sorted for "select top n": by impact (pos), by -impact (neg) or by |impact| (abs). */
  top(n, by = "pos") {
    const key = by === "neg" ? (x) => -x.impact : by === "abs" || !this.signed ? (x) => x.abs : (x) => x.impact;
    return [...this.nodes].sort((a, b) => key(b) - key(a)).slice(0, n).map((x) => x.id);
  }

  layerIds(layer) {
    return this.nodes.filter((n) => n.layer === layer).sort((a, b) => a.rank - b.rank).map((n) => n.id);
  }
}
