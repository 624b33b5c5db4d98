// Analysis page: wires the prompt tokens, the prediction, the NAG graph, the neuron panel, live
// ablation and the URL view state together. Data comes from JSON blocks rendered by the server:
// #analysis-data ({id, slug, url, result: <Analysis>}), #state-data (view state), #ablation-data
// (<Ablation> for the state's ablation, or null).

import { readJSON, showError } from "./api.js";
import { el, clear, tokenChip, tokenText, fmtProb, fmtNum } from "./dom.js";
import { NagGraph } from "./graph.js";
import { NeuronPanel } from "./panel.js";
import { AblationController, ablationElements } from "./ablate.js";
import { initialState, writeUrl, createPermalink, bindShare, ablationMatches } from "./state.js";

const NEURON_RE = /^L\d{1,4}\.N\d{1,7}$/;
const $ = (id) => document.getElementById(id);

function main() {
  const analysis = readJSON("analysis-data");
  if (!analysis || !analysis.result) {
    showError("This page has no analysis data. Open it again from the home page.", { title: "Nothing to show" });
    return;
  }
  const result = analysis.result;
  const model = (result.model && result.model.name) || "";
  const state = initialState(readJSON("state-data"));
  const serverAblation = readJSON("ablation-data");
  let restoring = false;

  // Prompt tokens (re-rendered so whitespace and newlines are visible), target, prediction.
  const tokens = $("tokens");
  clear(tokens);
  (result.tokens || []).forEach((t, i) => {
    const chip = tokenChip(t);
    chip.title = `position ${i} · ${chip.title}`;
    tokens.append(chip);
  });
  if (result.target) {
    const tt = $("target-token");
    tt.textContent = tokenText(result.target.token);
    tt.title = JSON.stringify(String(result.target.token));
  }
  const targetProb = $("target-prob");
  if (result.target) targetProb.textContent = fmtProb(result.target.prob);
  renderFidelity(result.fidelity);

  // Selection.
  let selection = [];
  const selCount = $("sel-count");
  const selList = $("sel-list");

  function setSelection(ids, { write = true } = {}) {
    selection = [...new Set(ids.filter((id) => NEURON_RE.test(id)))];
    state.sel = selection;
    graph.setSelection(selection);
    selCount.textContent = `${selection.length} selected`;
    selCount.classList.toggle("pill-muted", selection.length === 0);
    $("clear-sel").disabled = selection.length === 0;
    $("clear-sel").hidden = selection.length === 0;
    renderSelList();
    ablation.updateButtons();
    panel.refresh();
    if (write) writeUrl(state);
  }

  function renderSelList() {
    clear(selList);
    if (!selection.length) {
      selList.append(el("span", { class: "muted small" }, "Click, shift-click or drag a box in the graph, or use the buttons below."));
      return;
    }
    const shown = selection.slice(0, 18);
    for (const id of shown) {
      selList.append(el("span", { class: "sel-chip" },
        el("button", { type: "button", class: "sel-open mono", title: `Inspect ${id}`, on: { click: () => panel.open(id) } }, id),
        el("button", { type: "button", class: "sel-remove", "aria-label": `Remove ${id} from the selection`, on: { click: () => setSelection(selection.filter((x) => x !== id)) } }, "×")));
    }
    if (selection.length > shown.length) selList.append(el("span", { class: "muted small" }, `+${selection.length - shown.length} more`));
  }

  function toggle(id) {
    if (selection.includes(id)) setSelection(selection.filter((x) => x !== id));
    else setSelection([...selection, id]);
  }

  // Graph.
  const graphEl = $("graph");
  let graph;
  try {
    graph = new NagGraph(graphEl, result, {
      onNodeClick: (id, { shift }) => {
        if (shift) toggle(id);
        else setSelection([id]);
        panel.open(id);
      },
      onBoxSelect: (ids, { shift }) => setSelection(shift ? [...selection, ...ids] : ids),
      onRender: (shown) => {
        $("visible-count").textContent = `${shown.nodes} nodes · ${shown.edges} edges`;
      },
    });
  } catch (err) {
    showError(err, { title: "Could not draw the graph" });
    return;
  }

  // Threshold slider.
  const thr = $("thr");
  const thrOut = $("thr-value");
  const setThr = (t, write = true) => {
    state.thr = t;
    thr.value = String(t);
    thrOut.textContent = `${Math.round(t * 100)}%`;
    graph.setThreshold(t);
    if (write) writeUrl(state);
  };
  thr.addEventListener("input", () => setThr(Number(thr.value)));
  const edgesIn = $("edges-in");
  edgesIn.value = Number.isFinite(graph.maxIn) ? String(graph.maxIn) : "0";
  edgesIn.addEventListener("change", () => graph.setMaxIncoming(Number(edgesIn.value)));

  // Neuron panel.
  const panel = new NeuronPanel($("panel"), {
    model,
    analysisId: analysis.id,
    nodeLookup: (id) => graph.byId.get(id) || null,
    actionsFor: (id) => {
      const inSel = selection.includes(id);
      return el("button", { type: "button", class: `btn btn-sm ${inSel ? "btn-ghost" : "btn-soft"}`, on: { click: () => toggle(id) } },
        inSel ? "Deselect" : "Select");
    },
  });

  // Ablation.
  const ablation = new AblationController({
    analysisId: analysis.id,
    result,
    getSelection: () => selection,
    els: ablationElements(),
    onError: (err) => showError(err, { title: "Ablation failed" }),
    onChange: (cur) => {
      state.abl = cur ? { neurons: cur.neurons, mode: cur.mode, factor: cur.factor } : null;
      graph.setAblated(cur ? cur.neurons : []);
      showAblatedTarget(cur);
      if (!restoring) writeUrl(state);
    },
  });
  ablation.render();
  const runAblation = (abl, opts) => ablation.run(abl, opts).catch((err) => showError(err, { title: "Ablation failed" }));

  function showAblatedTarget(cur) {
    let extra = $("target-prob-ablated");
    if (!cur) {
      if (extra) extra.remove();
      return;
    }
    if (!extra) {
      extra = el("span", { id: "target-prob-ablated", class: "ablated-prob" });
      targetProb.after(extra);
    }
    const p = cur.result && cur.result.ablated ? cur.result.ablated.target_prob : null;
    extra.textContent = `→ ${fmtProb(p)} ablated`;
    extra.classList.toggle("neg", p !== null && result.target && p < result.target.prob);
  }

  // Selection helpers: by layer, top n, clear, find.
  const layerSelect = $("layer-select");
  for (let l = 0; l < graph.nLayers; l += 1) layerSelect.append(el("option", { value: String(l) }, `Layer ${l}`));
  $("select-layer").addEventListener("click", () => setSelection(graph.layerIds(Number(layerSelect.value))));
  const topBy = $("topn-by");
  if (!graph.signed) {
    $("legend-pos").lastChild.textContent = "activation magnitude (darker = larger)";
    $("legend-neg").hidden = true;
    topBy.value = "abs";
    topBy.disabled = true;
  }
  $("select-top").addEventListener("click", () => {
    const n = Math.max(1, Math.min(graph.nodes.length, Math.round(Number($("topn").value) || 1)));
    setSelection(graph.top(n, topBy.value));
  });
  $("clear-sel").addEventListener("click", () => setSelection([]));
  $("find-form").addEventListener("submit", (e) => {
    e.preventDefault();
    const input = $("find-input");
    const id = input.value.trim().toUpperCase().replace(/^L(\d+)\.N(\d+)$/, "L$1.N$2");
    if (!NEURON_RE.test(id)) {
      showError(`“${input.value}” is not a neuron id; write it as L<layer>.N<index>, e.g. L3.N1207.`, { title: "Not a neuron id" });
      return;
    }
    if (graph.byId.has(id)) setSelection([...selection.filter((x) => x !== id), id]);
    panel.open(id);
  });

  // Share.
  bindShare({
    button: $("share-btn"), row: $("share-row"), input: $("share-url"), copyButton: $("share-copy"),
    makeUrl: () => {
      writeUrl(state, { immediate: true });
      return createPermalink(analysis.id, state, result.method);
    },
  });

  // Restore the view state (from ?v=… or the query) without touching the URL: a permalink stays as
  // it was opened until the user changes the view.
  setThr(state.thr, false);
  setSelection(state.sel, { write: false });
  if (state.sel.length) panel.open(state.sel[state.sel.length - 1]);
  if (state.abl) {
    ablation.setControls(state.abl.mode, state.abl.factor);
    const known = ablationMatches(serverAblation, state.abl) ? serverAblation : null;
    restoring = true;
    runAblation(state.abl, { push: false, knownResult: known }).finally(() => { restoring = false; });
  }
  document.body.dataset.ready = "1";
}

function renderFidelity(f) {
  const badge = $("fidelity");
  if (!f || f.spearman === null || f.spearman === undefined) return;
  const rho = Number(f.spearman);
  const quality = rho >= 0.8 ? "good" : rho >= 0.5 ? "fair" : "poor";
  badge.className = `fidelity fidelity-${quality}`;
  badge.title = `Spearman correlation between estimated impacts and exact ablation effects on the top ${f.n ?? "?"} neurons`;
  clear(badge);
  badge.append(el("span", { class: "fidelity-label" }, "Fidelity"), el("span", { class: "fidelity-value" }, `ρ ${fmtNum(rho, 2)}`),
    f.n ? el("span", { class: "fidelity-n" }, `n=${f.n}`) : null);
  badge.hidden = false;
}

try {
  main();
} catch (err) {
  console.error(err);
  showError(err, { title: "This page failed to start" });
}
