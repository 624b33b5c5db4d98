// Live ablation: POST {endpoint} {"neurons" | "groups", "mode", "factor", "continuation"} -> {"id", "result":
// <Ablation>}; render baseline vs ablated (top-10 side by side, target probability change, KL, greedy
// continuation before/after). Keeps a stack of previous ablation states for Undo. The analysis page
// ablates neurons (/api/analyses/{id}/ablations); the circuit page ablates groups of neurons
// (/api/circuits/{id}/ablations) with the same controller and the same before/after rendering.

import { api } from "./api.js";
import { el, clear, tokenText, fmtProb, fmtDeltaProb, fmtNum } from "./dom.js";

const MODE_VERB = { zero: "Zero-ablating", mean: "Mean-ablating", scale: "Scaling" };

/** "Zero-ablating 3 neurons", "Scaling 2 groups by 0.5". */
export function describe(abl, { itemsKey = "neurons", noun = "neuron" } = {}) {
  const n = (abl[itemsKey] || []).length;
  const what = `${n} ${noun}${n === 1 ? "" : "s"}`;
  return abl.mode === "scale" ? `${MODE_VERB.scale} ${what} by ${fmtNum(abl.factor, 3)}` : `${MODE_VERB[abl.mode] || abl.mode} ${what}`;
}

/** The ablation card's elements by their ids, shared by the analysis and circuit pages' markup
 * (templates/_partials.html, ablation_controls), as AblationController's `els`. */
export function ablationElements() {
  const $ = (id) => document.getElementById(id);
  return {
    card: $("ablate-card"),
    resultCard: $("abl-result"),
    title: $("abl-title"),
    body: $("abl-body"),
    desc: $("abl-desc"),
    status: $("ablate-status"),
    modeRadios: [...document.querySelectorAll('input[name="abl-mode"]')],
    factor: $("factor"),
    factorControl: $("factor-control"),
    ablateBtn: $("ablate-btn"),
    undoBtn: $("undo-btn"),
    resetBtn: $("reset-btn"),
  };
}

function barList(top, { targetId, compareTo = null, label }) {
  const maxP = Math.max(...top.map((t) => t.prob), 1e-9);
  const before = compareTo ? new Map(compareTo.map((t) => [t.id ?? t.token, t.prob])) : null;
  return el("div", { class: "bar-col" },
    el("div", { class: "bar-col-title" }, label),
    el("ol", { class: "bar-list" }, top.map((t) => {
      const isTarget = targetId !== undefined && targetId !== null && t.id === targetId;
      let delta = null;
      if (before) {
        const key = t.id ?? t.token;
        const b = before.has(key) ? before.get(key) : null;
        if (b === null) delta = el("span", { class: "bar-delta new", title: "not in the baseline top 10" }, "new");
        else {
          const d = t.prob - b;
          if (Math.abs(d) >= 0.0005) delta = el("span", { class: `bar-delta ${d < 0 ? "neg" : "pos"}` }, `${d > 0 ? "+" : "−"}${Math.abs(d * 100).toFixed(1)}`);
        }
      }
      return el("li", { class: `bar-item${isTarget ? " is-target" : ""}` },
        el("span", { class: "bar-tok tok", title: JSON.stringify(String(t.token)) }, tokenText(t.token)),
        el("span", { class: "bar-track" }, el("span", { class: "bar-fill", style: { width: `${(t.prob / maxP) * 100}%` } })),
        el("span", { class: "bar-val" }, fmtProb(t.prob)),
        delta);
    })));
}

/** Top-k probability bars (the prediction card). */
export function renderPrediction(container, top, targetId) {
  clear(container);
  if (!top || !top.length) {
    container.append(el("p", { class: "muted" }, "No prediction in this analysis."));
    return;
  }
  container.append(barList(top, { targetId, label: "" }).lastChild);
}

/**
 * Baseline vs ablated for one <Ablation> result into `body`: target tile (before → after), Δ target
 * probability, KL, the two top-10 lists side by side and the two greedy continuations.
 */
export function renderComparison(body, r, { target: fallbackTarget = null } = {}) {
  const base = r.baseline || {};
  const abl = r.ablated || {};
  const target = r.target || fallbackTarget || {};
  const dp = Number(r.delta_prob ?? (abl.target_prob - base.target_prob));

  const tiles = el("div", { class: "tiles" },
    el("div", {
      class: "tile tile-wide", id: "abl-target", "data-testid": "abl-target",
      "data-baseline-prob": String(base.target_prob), "data-ablated-prob": String(abl.target_prob),
    },
      el("div", { class: "tile-label" }, "Target ", el("span", { class: "tok tok-target" }, tokenText(target.token))),
      el("div", { class: "tile-main" },
        el("span", { class: "tile-before" }, fmtProb(base.target_prob)),
        el("span", { class: "tile-arrow", "aria-hidden": "true" }, "→"),
        el("span", { class: `tile-after ${dp < 0 ? "neg" : dp > 0 ? "pos" : ""}` }, fmtProb(abl.target_prob)))),
    el("div", { class: "tile" },
      el("div", { class: "tile-label" }, "Δ target probability"),
      el("div", { class: `tile-value ${dp < 0 ? "neg" : dp > 0 ? "pos" : ""}`, "data-testid": "abl-delta" }, fmtDeltaProb(dp))),
    el("div", { class: "tile" },
      el("div", { class: "tile-label", title: "KL(baseline ‖ ablated) of the next-token distribution" }, "KL divergence"),
      el("div", { class: "tile-value", "data-testid": "abl-kl", "data-kl": String(r.kl) }, fmtNum(r.kl, 3))));

  const bars = el("div", { class: "compare" },
    barList(base.top || [], { targetId: target.id, label: "Baseline" }),
    barList(abl.top || [], { targetId: target.id, compareTo: base.top || [], label: "Ablated" }));

  const cont = el("div", { class: "continuations" },
    el("div", { class: "cont" }, el("div", { class: "cont-label" }, "Greedy continuation · baseline"),
      el("div", { class: "cont-text", "data-testid": "cont-baseline" }, base.continuation ?? "—")),
    el("div", { class: "cont" }, el("div", { class: "cont-label" }, "Greedy continuation · ablated"),
      el("div", { class: "cont-text ablated", "data-testid": "cont-ablated" }, abl.continuation ?? "—")));

  body.append(tiles, bars, cont);
}

export class AblationController {
  /**
   * @param {{analysisId?: string, endpoint?: string, itemsKey?: "neurons"|"groups", noun?: string,
   *          result: object, els: object, onChange: (abl: object|null) => void,
   *          getSelection: () => string[], emptyHint?: () => Node}} opts
   * `result` gives the baseline prediction shown before any ablation (`top`, `target`); `endpoint`
   * defaults to the analysis' ablation resource.
   */
  constructor({ analysisId, endpoint = null, itemsKey = "neurons", noun = "neuron", result, els, onChange,
                getSelection, emptyHint = null, onError = (e) => console.error(e) }) {
    this.analysisId = analysisId;
    this.endpoint = endpoint || `/api/analyses/${encodeURIComponent(analysisId)}/ablations`;
    this.itemsKey = itemsKey;
    this.noun = noun;
    this.result = result;
    this.els = els;
    this.onChange = onChange;
    this.onError = onError;
    this.getSelection = getSelection;
    this.emptyHint = emptyHint;
    this.current = null; // {neurons | groups, mode, factor, result}
    this.history = [];
    this.busy = false;
    this.seq = 0;

    for (const r of els.modeRadios) r.addEventListener("change", () => this.syncFactor());
    els.ablateBtn.addEventListener("click", () => this.ablateSelection());
    els.undoBtn.addEventListener("click", () => this.undo());
    els.resetBtn.addEventListener("click", () => this.reset());
    this.syncFactor();
    this.updateButtons();
  }

  describe(abl) {
    return describe(abl, { itemsKey: this.itemsKey, noun: this.noun });
  }

  mode() {
    const r = this.els.modeRadios.find((x) => x.checked);
    return r ? r.value : "zero";
  }

  factor() {
    const f = Number(this.els.factor.value);
    return Number.isFinite(f) ? f : 0;
  }

  setControls(mode, factor) {
    for (const r of this.els.modeRadios) r.checked = r.value === mode;
    if (mode === "scale") this.els.factor.value = String(factor);
    this.syncFactor();
  }

  syncFactor() {
    this.els.factorControl.hidden = this.mode() !== "scale";
  }

  updateButtons() {
    const n = this.getSelection().length;
    const noun = `${this.noun}${n === 1 ? "" : "s"}`;
    this.els.ablateBtn.disabled = this.busy || n === 0;
    this.els.ablateBtn.textContent = this.busy ? "Ablating…" : n ? `Ablate ${n} ${noun}` : "Ablate";
    this.els.undoBtn.disabled = this.busy || this.history.length === 0;
    this.els.resetBtn.disabled = this.busy || !this.current;
  }

  /** The ablation state for a list of items with the mode and factor of the controls. */
  ablationFor(items) {
    return { [this.itemsKey]: [...items], mode: this.mode(), factor: this.mode() === "scale" ? this.factor() : 0 };
  }

  ablateSelection() {
    return this.ablateItems(this.getSelection());
  }

  ablateItems(items) {
    if (!items || !items.length) return undefined;
    return this.run(this.ablationFor(items)).catch((err) => this.onError(err));
  }

  /** Run an ablation. `push` records the previous state for Undo. */
  async run(abl, { push = true, knownResult = null } = {}) {
    const seq = ++this.seq;
    this.busy = true;
    this.updateButtons();
    this.els.status.textContent = `${this.describe(abl)}…`;
    this.els.card.classList.add("busy");
    const t0 = performance.now();
    try {
      let result = knownResult;
      if (!result) {
        const body = { [this.itemsKey]: abl[this.itemsKey], mode: abl.mode, factor: abl.factor, continuation: 8 };
        if (this.itemsKey === "neurons") body.positions = null;
        const { data } = await api(this.endpoint, { method: "POST", body });
        result = data.result;
      }
      if (seq !== this.seq) return;
      if (push) this.history.push(this.current);
      this.current = { ...abl, result };
      this.render();
      const ms = performance.now() - t0;
      this.els.status.textContent = knownResult ? "Restored from the link." : `Done in ${ms < 1000 ? `${Math.round(ms)} ms` : `${(ms / 1000).toFixed(1)} s`}.`;
      this.onChange(this.current);
    } catch (err) {
      if (seq === this.seq) this.els.status.textContent = "";
      throw err;
    } finally {
      if (seq === this.seq) {
        this.busy = false;
        this.els.card.classList.remove("busy");
        this.updateButtons();
      }
    }
  }

  undo() {
    if (!this.history.length) return;
    this.seq += 1;
    this.current = this.history.pop();
    this.els.status.textContent = this.current ? `Back to: ${this.describe(this.current).toLowerCase()}.` : "Back to no ablation.";
    if (this.current) this.setControls(this.current.mode, this.current.factor);
    this.render();
    this.updateButtons();
    this.onChange(this.current);
  }

  reset() {
    if (!this.current && !this.history.length) return;
    this.seq += 1;
    if (this.current) this.history.push(this.current);
    this.current = null;
    this.els.status.textContent = "All ablations removed.";
    this.render();
    this.updateButtons();
    this.onChange(null);
  }

  render() {
    const body = this.els.body;
    clear(body);
    const cur = this.current;
    this.els.resultCard.classList.toggle("has-result", Boolean(cur));
    if (!cur) {
      if (this.els.title) this.els.title.textContent = "Prediction";
      this.els.desc.textContent = this.result.top ? "top 10 next tokens" : "";
      if (this.result.top) {
        const pred = el("div", { id: "prediction", class: "bars prediction-solo" });
        renderPrediction(pred, this.result.top, this.result.target ? this.result.target.id : null);
        body.append(pred);
      }
      body.append(this.emptyHint ? this.emptyHint() : el("p", { class: "hint-line" }, "Select neurons and press ",
        el("strong", {}, "Ablate"), " to compare this prediction with the ablated model’s, side by side."));
      return;
    }
    if (this.els.title) this.els.title.textContent = "Prediction: baseline vs ablated";
    this.els.desc.textContent = this.describe(cur);
    renderComparison(body, cur.result, { target: this.result.target });
  }
}
