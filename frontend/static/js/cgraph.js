// The circuit graph (NeurFlow groups), drawn with plotly.js (served locally as the global `Plotly`).
//
// x = layer (bottom of the window on the left), one column per layer, the root (the target token's
// metric) in a column of its own at the right. y = rank of the group in its layer (0 = most
// important, at the top), each column centred vertically. Nodes are sized by importance (the share
// of the root's relevance the circuit routes through the group) and coloured by importance or, for a
// prompt set, by stability. Flow edges (`group_edges`, lower → upper) are drawn as a few line traces
// binned by their share of the upper group's incoming |weight| and by sign; by default only the
// strongest few incoming edges of each group are drawn. Edges touching a selected group are drawn on
// top in amber; a hover point at each edge's midpoint names it. Selected groups get an amber halo,
// ablated groups an X and a dark outline.

import { tokenText, afterRender, frameScheduler } from "./dom.js";

const FONT = 'system-ui, -apple-system, "Segoe UI", Roboto, "Helvetica Neue", Arial, sans-serif';
const IMPORTANCE_SCALE = [[0, "#dbe3fb"], [0.35, "#98a8f0"], [0.7, "#5b6ce0"], [1, "#2f3ea8"]];
export const STABILITY_COLORS = { stable: "#2b8a3e", mixed: "#e8a33d", specific: "#8e44ad", weak: "#b5bcc9" };
// Share of the upper group's incoming |weight| (sums to 1 per upper group).
const EDGE_BINS = [0.1, 0.25, 0.5, Infinity];
const EDGE_WIDTH = [0.8, 1.7, 2.8, 4.2];
const EDGE_ALPHA = [0.2, 0.32, 0.48, 0.66];
export const ROOT = "root";

let shiftHeld = false;
window.addEventListener("keydown", (e) => { if (e.key === "Shift") shiftHeld = true; });
window.addEventListener("keyup", (e) => { if (e.key === "Shift") shiftHeld = false; });
window.addEventListener("blur", () => { shiftHeld = false; });

/** Text for plotly's pseudo-HTML labels: entities, so a token such as "<b>" shows as typed. */
export function plotlyText(s) {
  return String(s ?? "").replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/>/g, "&gt;");
}

function fmt(x, digits = 3) {
  const v = Number(x);
  if (!Number.isFinite(v)) return "—";
  if (v === 0) return "0";
  if (Math.abs(v) < 1e-3 || Math.abs(v) >= 1e5) return v.toExponential(2);
  return String(parseFloat(v.toPrecision(digits)));
}

export class CircuitGraph {
  /**
   * @param {HTMLElement} container
   * @param {object} result  a <Circuit>
   * @param {{onGroupClick?: (id: string, opts: {shift: boolean}) => void, onRender?: (shown) => void,
   *          targetLabel?: string}} handlers
   */
  constructor(container, result, handlers = {}) {
    if (typeof window.Plotly === "undefined") throw new Error("plotly.js did not load (/static/vendor/plotly.min.js)");
    this.el = container;
    this.handlers = handlers;
    const layers = (result.layers || []).map((l) => l.layer);
    const groupLayers = (result.groups || []).map((g) => g.layer);
    const all = [...layers, ...groupLayers];
    this.lo = all.length ? Math.min(...all) : 0;
    this.hi = all.length ? Math.max(...all) : 0;
    this.rootX = this.hi + 1;
    this.layerInfo = new Map((result.layers || []).map((l) => [l.layer, l]));

    // Groups per layer, ranked by importance (the id's rank breaks ties: G29.0 first).
    const rankOf = (id) => Number(String(id).split(".")[1]) || 0;
    this.groups = (result.groups || []).map((g) => ({
      ...g, importance: Math.abs(Number(g.importance) || 0), nNeurons: (g.neurons || []).length,
    }));
    this.byId = new Map(this.groups.map((g) => [g.id, g]));
    const byLayer = new Map();
    for (const g of this.groups) {
      if (!byLayer.has(g.layer)) byLayer.set(g.layer, []);
      byLayer.get(g.layer).push(g);
    }
    this.maxCount = 1;
    for (const list of byLayer.values()) {
      list.sort((a, b) => b.importance - a.importance || rankOf(a.id) - rankOf(b.id));
      this.maxCount = Math.max(this.maxCount, list.length);
    }
    for (const list of byLayer.values()) {
      const offset = (this.maxCount - list.length) / 2;
      list.forEach((g, i) => { g.rank = i; g.x = g.layer; g.y = i + offset; });
    }
    this.byLayer = byLayer;
    this.maxImp = this.groups.reduce((m, g) => Math.max(m, g.importance), 0) || 1;
    this.hasStability = this.groups.some((g) => g.stability && g.stability.label);
    this.colorBy = this.hasStability ? "stability" : "importance";

    const target = result.target;
    this.rootCore = ((result.root && result.root.core) || []).map((c) => c.neuron);
    this.root = {
      id: ROOT, x: this.rootX, y: (this.maxCount - 1) / 2, layer: null,
      label: handlers.targetLabel || (target ? target.token : null),
    };

    this.edges = (result.group_edges || [])
      .filter((e) => this.byId.has(e.source) && (e.target === ROOT || this.byId.has(e.target)))
      .map((e) => ({ ...e, abs: Math.abs(Number(e.weight) || 0), neg: Number(e.weight) < 0 }));
    const incoming = new Map();
    for (const e of this.edges) {
      if (!incoming.has(e.target)) incoming.set(e.target, []);
      incoming.get(e.target).push(e);
    }
    for (const list of incoming.values()) {
      const total = list.reduce((s, e) => s + e.abs, 0) || 1;
      list.sort((a, b) => b.abs - a.abs).forEach((e, i) => {
        e.inRank = i;
        e.share = e.abs / total;
        let bin = 0;
        while (e.share >= EDGE_BINS[bin]) bin += 1;
        e.bin = Math.min(bin, EDGE_BINS.length - 1);
      });
    }
    this.maxIn = this.edges.length > 90 ? 3 : Infinity;
    this.selected = new Set();
    this.ablated = new Set();
    this.schedule = frameScheduler(() => this.draw());  // one redraw per animation frame

    this.el.style.minWidth = `${(this.rootX - this.lo + 1) * 92 + 80}px`;
    this.el.dataset.groupCount = String(this.groups.length);
    this.el.dataset.edgeCount = String(this.edges.length);
    this.el.__circuit = this;
    this.draw(true);
  }

  pos(id) {
    return id === ROOT ? this.root : this.byId.get(id);
  }

  size(g) {
    return 14 + 30 * Math.sqrt(g.importance / this.maxImp);
  }

  height() {
    return Math.max(380, Math.min(900, 110 + this.maxCount * 66));
  }

  color(g) {
    if (this.colorBy === "stability") {
      const label = g.stability && g.stability.label;
      return STABILITY_COLORS[label] || "#cfd5e1";
    }
    return g.importance / this.maxImp;
  }

  traces() {
    const traces = [];
    const bins = new Map();
    const focus = [];
    const mids = { x: [], y: [], customdata: [] };
    let shown = 0;
    for (const e of this.edges) {
      const touches = this.selected.has(e.source) || this.selected.has(e.target);
      if (touches) focus.push(e);
      if (e.inRank >= this.maxIn && !touches) continue;
      const s = this.pos(e.source);
      const t = this.pos(e.target);
      shown += 1;
      mids.x.push((s.x + t.x) / 2);
      mids.y.push((s.y + t.y) / 2);
      mids.customdata.push([e.source, e.target, e.weight, Math.round(e.share * 100)]);
      if (touches) continue;
      const key = `${e.bin}:${e.neg ? 1 : 0}`;
      if (!bins.has(key)) bins.set(key, { x: [], y: [], bin: e.bin, neg: e.neg });
      const b = bins.get(key);
      b.x.push(s.x, t.x, null);
      b.y.push(s.y, t.y, null);
    }
    for (const b of [...bins.values()].sort((a, c) => a.bin - c.bin)) {
      const rgb = b.neg ? "178,24,43" : "33,102,172";
      traces.push({
        type: "scatter", mode: "lines", x: b.x, y: b.y, hoverinfo: "skip", showlegend: false,
        line: { width: EDGE_WIDTH[b.bin], color: `rgba(${rgb},${EDGE_ALPHA[b.bin]})` },
      });
    }
    if (focus.length) {
      // Edges of the selected groups: every one of them, amber, width by share, dashed when negative.
      for (const neg of [false, true]) {
        const list = focus.filter((e) => e.neg === neg);
        if (!list.length) continue;
        for (const bin of [0, 1, 2, 3]) {
          const sub = list.filter((e) => e.bin === bin);
          if (!sub.length) continue;
          const x = [];
          const y = [];
          for (const e of sub) {
            const s = this.pos(e.source);
            const t = this.pos(e.target);
            x.push(s.x, t.x, null);
            y.push(s.y, t.y, null);
          }
          traces.push({
            type: "scatter", mode: "lines", x, y, hoverinfo: "skip", showlegend: false,
            line: { width: EDGE_WIDTH[bin] + 0.4, color: "rgba(240,140,0,0.8)", dash: neg ? "dot" : "solid" },
          });
        }
      }
    }
    traces.push({
      type: "scatter", mode: "markers", x: mids.x, y: mids.y, customdata: mids.customdata, showlegend: false,
      marker: { size: 9, color: "rgba(0,0,0,0)" },
      hovertemplate: "<b>%{customdata[0]} → %{customdata[1]}</b><br>weight %{customdata[2]:.4g}" +
        "<br>%{customdata[3]}% of %{customdata[1]}'s input<extra></extra>",
    });
    this.edgeHoverIndex = traces.length - 1;

    const sel = [...this.selected].map((id) => this.pos(id)).filter(Boolean);
    traces.push({
      type: "scatter", mode: "markers", x: sel.map((g) => g.x), y: sel.map((g) => g.y), hoverinfo: "skip",
      showlegend: false,
      marker: { size: sel.map((g) => (g.id === ROOT ? 40 : this.size(g)) + 14), color: "rgba(240,140,0,0.25)",
        line: { color: "#f08c00", width: 2.5 } },
    });

    const gs = this.groups;
    const byStability = this.colorBy === "stability";
    traces.push({
      type: "scatter", mode: "markers",
      x: gs.map((g) => g.x), y: gs.map((g) => g.y),
      customdata: gs.map((g) => [g.id, g.nNeurons, g.importance, (g.members || []).length,
        g.stability && g.stability.label ? `<br>stability ${g.stability.label} (support ${fmt(g.stability.support, 2)})` : "",
        this.ablated.has(g.id) ? "<br><b>ablated</b>" : ""]),
      hovertemplate: "<b>%{customdata[0]}</b><br>%{customdata[1]} neurons · %{customdata[3]} sub-concepts" +
        "<br>importance %{customdata[2]:.3g}%{customdata[4]}%{customdata[5]}<extra></extra>",
      showlegend: false,
      cliponaxis: false,
      marker: {
        size: gs.map((g) => this.size(g)),
        color: gs.map((g) => this.color(g)),
        ...(byStability ? {} : { colorscale: IMPORTANCE_SCALE, cmin: 0, cmax: 1 }),
        symbol: gs.map((g) => (this.ablated.has(g.id) ? "circle-x" : "circle")),
        line: {
          color: gs.map((g) => (this.ablated.has(g.id) ? "#111827" : "rgba(27,33,48,0.5)")),
          width: gs.map((g) => (this.ablated.has(g.id) ? 2.4 : 0.9)),
        },
        opacity: 1,
      },
    });
    this.nodeTraceIndex = traces.length - 1;

    const label = this.root.label !== null && this.root.label !== undefined ? `“${plotlyText(tokenText(this.root.label))}”` : "top token";
    traces.push({
      type: "scatter", mode: "markers+text", x: [this.root.x], y: [this.root.y],
      text: [label], textposition: "bottom center", textfont: { size: 12, color: "#174a7d", family: FONT },
      customdata: [[ROOT]], hovertemplate: `<b>root</b><br>target ${label}<extra></extra>`, showlegend: false,
      cliponaxis: false,
      marker: {
        size: 40, symbol: this.ablated.has(ROOT) ? "diamond-x" : "diamond", color: "#174a7d",
        line: { color: this.ablated.has(ROOT) ? "#111827" : "#fff", width: this.ablated.has(ROOT) ? 2.4 : 2 },
      },
    });
    this.rootTraceIndex = traces.length - 1;
    this.shown = { groups: gs.length, edges: shown };
    return traces;
  }

  layout() {
    const tickvals = [];
    const ticktext = [];
    for (let l = this.lo; l <= this.hi; l += 1) {
      tickvals.push(l);
      const info = this.layerInfo.get(l);
      ticktext.push(info ? `L${l}<br><span style="font-size:10px;color:#8a93a6">${info.critical} neurons</span>` : `L${l}`);
    }
    tickvals.push(this.rootX);
    ticktext.push("output");
    // Group labels as annotations: drawn above the edges, on a light backing, so they stay readable.
    const annotations = this.groups.map((g) => {
      const abl = this.ablated.has(g.id);
      const sel = this.selected.has(g.id);
      return {
        x: g.x, y: g.y, xref: "x", yref: "y", text: abl ? `${g.id} ×` : g.id, showarrow: false,
        yshift: this.size(g) / 2 + 9, font: { size: 10.5, family: FONT, color: abl ? "#b2182b" : sel ? "#8a4b00" : "#3a4256" },
        bgcolor: sel ? "rgba(255,243,224,0.95)" : "rgba(255,255,255,0.82)", borderpad: 1, captureevents: false,
      };
    });
    return {
      annotations,
      height: this.height(),
      margin: { l: 22, r: 22, t: 30, b: 52 },
      paper_bgcolor: "rgba(0,0,0,0)",
      plot_bgcolor: "#ffffff",
      font: { family: FONT, size: 12, color: "#4a5368" },
      xaxis: {
        range: [this.lo - 0.55, this.rootX + 0.55], tickmode: "array", tickvals, ticktext, fixedrange: true,
        showgrid: true, gridcolor: "#eef0f5", zeroline: false, showline: false, ticks: "",
      },
      yaxis: {
        range: [this.maxCount - 0.35, -0.75], showticklabels: false, fixedrange: true,
        showgrid: false, zeroline: false, ticks: "",
      },
      dragmode: false,
      hovermode: "closest",
      clickmode: "event",
      hoverlabel: { bgcolor: "#1b2130", bordercolor: "#1b2130", font: { color: "#ffffff", family: FONT, size: 12 } },
      showlegend: false,
      uirevision: "circuit",
    };
  }

  draw(first = false) {
    const config = {
      displaylogo: false, responsive: true, scrollZoom: false, displayModeBar: "hover",
      modeBarButtonsToRemove: ["lasso2d", "select2d", "autoScale2d", "toggleSpikelines", "hoverCompareCartesian",
        "hoverClosestCartesian", "zoom2d", "pan2d", "zoomIn2d", "zoomOut2d", "resetScale2d"],
      toImageButtonOptions: { filename: "circuitscope-circuit", scale: 2 },
    };
    const t0 = performance.now();
    const p = window.Plotly.react(this.el, this.traces(), this.layout(), config);
    this.el.dataset.visibleEdges = String(this.shown.edges);
    if (first) this.el.on("plotly_click", (ev) => this.onClick(ev));
    return afterRender(this, t0, p);
  }

  onClick(ev) {
    if (!ev || !ev.points) return;
    const pt = ev.points.find((p) => (p.curveNumber === this.nodeTraceIndex || p.curveNumber === this.rootTraceIndex) && p.customdata);
    if (!pt) return;
    const shift = Boolean((ev.event && ev.event.shiftKey) || shiftHeld);
    if (this.handlers.onGroupClick) this.handlers.onGroupClick(pt.customdata[0], { shift });
  }

  /** Draw at most m incoming edges per group (Infinity or 0: all). */
  setMaxIncoming(m) {
    this.maxIn = m > 0 ? m : Infinity;
    this.schedule();
  }

  setColorBy(by) {
    this.colorBy = by === "stability" && this.hasStability ? "stability" : "importance";
    this.schedule();
  }

  setSelection(ids) {
    this.selected = new Set(ids);
    this.schedule();
  }

  setAblated(ids) {
    this.ablated = new Set(ids || []);
    this.el.dataset.ablated = [...this.ablated].sort().join(",");
    this.schedule();
  }

  /** Member neurons of a group; for "root", its core set (the top layer's critical neurons). */
  neuronsOf(id) {
    if (id === ROOT) return this.rootCore;
    return (this.byId.get(id) || {}).neurons || [];
  }

  /** Incoming (from the layer below) and outgoing (to the layer above / root) edges of a group. */
  edgesOf(id) {
    const inc = this.edges.filter((e) => e.target === id).sort((a, b) => b.abs - a.abs);
    const out = this.edges.filter((e) => e.source === id).sort((a, b) => b.abs - a.abs);
    return { incoming: inc, outgoing: out };
  }

  /** Page coordinates (CSS px) of a group's centre, for tests and keyboard helpers. */
  screenPos(id) {
    const g = this.pos(id);
    const fl = this.el._fullLayout;
    if (!g || !fl) return null;
    const rect = this.el.getBoundingClientRect();
    const x = rect.left + fl._size.l + fl.xaxis.l2p(g.x);
    const y = rect.top + fl._size.t + fl.yaxis.l2p(g.y);
    return { x: x + window.scrollX, y: y + window.scrollY, clientX: x, clientY: y };
  }

  /** Group ids of a layer, most important first. */
  layerIds(layer) {
    return (this.byLayer.get(layer) || []).map((g) => g.id);
  }

  /** The most important groups overall. */
  top(n = 1) {
    return [...this.groups].sort((a, b) => b.importance - a.importance).slice(0, n).map((g) => g.id);
  }
}
