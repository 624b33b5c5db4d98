// Neuron panel: what a neuron writes to the vocabulary and reads from it (LM-head decoding of its
// weights), its activation on each prompt token as a heat strip, and its impact by method.
// Data: GET /api/models/{model}/neurons/{id}?analysis={analysis_id}
//   -> {"neuron": <Neuron>, "activations": {"tokens", "activations"} | null, "impacts": {method: impact} | null}

import { api, ApiError } from "./api.js";
import { el, clear, tokenText, fmtNum, divergingColor, inkOn } from "./dom.js";

const METHOD_NAMES = { magnitude: "Magnitude", attribution: "Attribution", ig: "Integrated gradients", exact: "Exact ablation" };

export function neuronUrl(model, id, analysisId = null) {
  const q = analysisId ? `?analysis=${encodeURIComponent(analysisId)}` : "";
  return `/m/${encodeURIComponent(model)}/n/${encodeURIComponent(id)}${q}`;
}

export function chipList(items, kind) {
  if (!items || !items.length) return el("p", { class: "muted small" }, "—");
  return el("div", { class: `vocab-chips ${kind}` },
    items.map((it) => el("span", { class: "vchip", title: `${JSON.stringify(String(it.token))}  score ${fmtNum(it.score, 4)}` },
      el("span", { class: "vchip-tok" }, tokenText(it.token)),
      el("span", { class: "vchip-score" }, fmtNum(it.score, 2)))));
}

export function vocabSection(title, subtitle, block, testid) {
  if (!block) return null;
  return el("section", { class: "panel-section", "data-testid": testid },
    el("h3", { class: "panel-h" }, title, subtitle ? el("span", { class: "panel-h-sub" }, subtitle) : null),
    el("div", { class: "vocab-row" },
      el("span", { class: "vocab-label pos" }, "top"),
      chipList(block.top, "pos")),
    el("div", { class: "vocab-row" },
      el("span", { class: "vocab-label neg" }, "bottom"),
      chipList(block.bottom, "neg")));
}

function heatStrip(acts) {
  if (!acts || !Array.isArray(acts.tokens) || !acts.tokens.length) return null;
  const values = acts.activations.map((v) => Number(v) || 0);
  const absMax = values.reduce((m, v) => Math.max(m, Math.abs(v)), 0) || 1;
  let argmax = 0;
  values.forEach((v, i) => { if (Math.abs(v) > Math.abs(values[argmax])) argmax = i; });
  // The first position often carries a huge "attention sink" activation; scale the colours by the rest
  // (clipping the outlier) so the other tokens stay readable.
  const rest = values.slice(1).reduce((m, v) => Math.max(m, Math.abs(v)), 0);
  const clipped = values.length > 2 && rest > 0 && Math.abs(values[0]) > 4 * rest;
  const maxAbs = clipped ? rest : absMax;
  const strip = el("div", { class: "heat-strip", "data-testid": "heat-strip" },
    acts.tokens.map((t, i) => {
      const v = Math.max(-1, Math.min(1, values[i] / maxAbs));
      return el("span", {
        class: `heat-tok${i === argmax ? " heat-max" : ""}`,
        title: `position ${i} · ${JSON.stringify(String(t))} · activation ${fmtNum(values[i], 4)}`,
        style: { background: divergingColor(v), color: inkOn(v) },
      }, tokenText(t));
    }));
  return el("section", { class: "panel-section" },
    el("h3", { class: "panel-h" }, "Activation on the prompt",
      el("span", { class: "panel-h-sub" }, `peak ${fmtNum(values[argmax], 3)} at “${tokenText(acts.tokens[argmax])}”`)),
    strip,
    el("div", { class: "heat-scale" },
      el("span", {}, fmtNum(-maxAbs, 2)), el("span", { class: "heat-gradient" }), el("span", {}, fmtNum(maxAbs, 2)),
      clipped ? el("span", { class: "heat-note" }, `colours clipped: position 0 is ${fmtNum(values[0], 3)}`) : null));
}

function impactSection(impacts, node) {
  const entries = impacts && typeof impacts === "object" ? Object.entries(impacts).filter(([, v]) => v !== null && v !== undefined) : [];
  if (!entries.length && !node) return null;
  const maxAbs = entries.reduce((m, [, v]) => Math.max(m, Math.abs(Number(v) || 0)), 0) || 1;
  const rows = entries.map(([method, value]) => {
    const v = Number(value) || 0;
    const w = `${Math.round((Math.abs(v) / maxAbs) * 50)}%`;
    return el("div", { class: "impact-row" },
      el("span", { class: "impact-method" }, METHOD_NAMES[method] || method),
      el("span", { class: "impact-bar" },
        el("span", { class: `impact-fill ${v < 0 ? "neg" : "pos"}`, style: v < 0 ? { right: "50%", width: w } : { left: "50%", width: w } })),
      el("span", { class: `impact-val ${v < 0 ? "neg" : "pos"}` }, fmtNum(v, 3)));
  });
  return el("section", { class: "panel-section" },
    el("h3", { class: "panel-h" }, "Impact by method"),
    rows.length ? el("div", { class: "impact-rows" }, rows) : el("p", { class: "muted small" }, "Not computed for this neuron."));
}

/** Render a neuron into `container` (used by the analysis page panel and the neuron page). */
export function renderNeuron(container, { neuron, activations = null, impacts = null, node = null, model = "", actions = null, standalone = false, analysisId = null }) {
  clear(container);
  container.dataset.neuron = neuron.id;
  const head = el("div", { class: "panel-head" },
    el("div", {},
      el("div", { class: "eyebrow" }, `Layer ${neuron.layer} · unit ${neuron.neuron}`),
      el("h2", { class: "panel-title mono", "data-testid": "panel-title" }, neuron.id)),
    el("div", { class: "panel-head-actions" },
      actions,
      standalone ? null : el("a", { class: "btn btn-ghost btn-sm", href: neuronUrl(model, neuron.id, analysisId), title: "Open the neuron page" }, "Open ↗")));
  if (!standalone) container.append(head);

  if (node) {
    container.append(el("div", { class: "stat-row" },
      stat("impact", fmtNum(node.impact, 3), node.impact < 0 ? "neg" : "pos"),
      stat("activation", fmtNum(node.activation, 3)),
      stat("rank", String(node.rank ?? "—"))));
  }
  const parts = [
    heatStrip(activations),
    impactSection(impacts, node),
    vocabSection("Writes", "output direction → vocabulary", neuron.write, "vocab-write"),
    vocabSection("Reads · up", "up_proj row ← vocabulary", neuron.read_up, "vocab-read-up"),
    vocabSection("Reads · gate", "gate_proj row ← vocabulary", neuron.read_gate, "vocab-read-gate"),
  ];
  for (const p of parts) if (p) container.append(p);
}

function stat(label, value, cls = "") {
  return el("div", { class: "stat" }, el("span", { class: "stat-label" }, label), el("span", { class: `stat-value ${cls}` }, value));
}

function skeleton(container, id) {
  clear(container);
  container.dataset.neuron = id;
  container.append(
    el("div", { class: "panel-head" },
      el("div", {}, el("div", { class: "eyebrow" }, "Loading…"), el("h2", { class: "panel-title mono" }, id))),
    el("div", { class: "skeleton" }, el("div", { class: "sk-line w80" }), el("div", { class: "sk-line w60" }),
      el("div", { class: "sk-line w90" }), el("div", { class: "sk-line w40" })));
}

export class NeuronPanel {
  constructor(container, { model, analysisId = null, nodeLookup = () => null, actionsFor = null }) {
    this.el = container;
    this.model = model;
    this.analysisId = analysisId;
    this.nodeLookup = nodeLookup;
    this.actionsFor = actionsFor;
    this.current = null;
    this.seq = 0;
    this.cache = new Map();
  }

  async open(id) {
    const seq = ++this.seq;
    this.current = id;
    this.el.classList.add("open");
    let data = this.cache.get(id);
    if (!data) {
      skeleton(this.el, id);
      const q = this.analysisId ? `?analysis=${encodeURIComponent(this.analysisId)}` : "";
      try {
        data = (await api(`/api/models/${encodeURIComponent(this.model)}/neurons/${encodeURIComponent(id)}${q}`)).data;
      } catch (err) {
        if (seq !== this.seq) return;
        clear(this.el);
        this.el.append(el("div", { class: "panel-error" },
          el("h2", { class: "panel-title mono" }, id),
          el("p", {}, err instanceof ApiError ? err.message : "Could not load this neuron.")));
        return;
      }
      this.cache.set(id, data);
    }
    if (seq !== this.seq) return;
    this.render(id, data);
  }

  render(id, data) {
    renderNeuron(this.el, {
      neuron: data.neuron,
      activations: data.activations,
      impacts: data.impacts,
      node: this.nodeLookup(id),
      model: this.model,
      actions: this.actionsFor ? this.actionsFor(id) : null,
      analysisId: this.analysisId,
    });
  }

  refresh() {
    if (this.current && this.cache.has(this.current)) this.render(this.current, this.cache.get(this.current));
  }
}
