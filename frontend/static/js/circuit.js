// Circuit page (/c/<slug>): the NeurFlow circuit as a layered graph of groups, a side panel for the
// clicked group (member neurons, concept samples, what it writes, its flow, its stability), group
// ablation with the analysis page's before/after panel, the fidelity report, and the view state in the
// URL (`grp`, `gabl`, `mode`) and in permalinks. Data comes from JSON blocks rendered by the server:
// #circuit-data ({id, slug, url, result: <Circuit>}), #state-data (view state), #ablation-data
// (<Ablation> for the state's groups, or null).

import { readJSON, showError } from "./api.js";
import { el, clear, tokenChip, tokenText, fmtProb, fmtDeltaProb, fmtNum } from "./dom.js";
import { CircuitGraph, ROOT, STABILITY_COLORS } from "./cgraph.js";
import { neuronUrl, vocabSection } from "./panel.js";
import { AblationController, ablationElements } from "./ablate.js";
import {
  initialCircuitState, circuitQuery, circuitPermalinkState, writeQuery, postPermalink, bindShare, sameNeuronSet,
} from "./state.js";

const GROUP_RE = /^G\d{1,4}\.\d{1,4}$/;
const STABILITY_TEXT = {
  stable: "stable: active on most prompts of the set",
  mixed: "mixed: active on some prompts",
  specific: "prompt-specific: active on one prompt or a small minority",
  weak: "weak: never among the layer's stronger groups",
};
const $ = (id) => document.getElementById(id);

function main() {
  const circuit = readJSON("circuit-data");
  if (!circuit || !circuit.result) {
    showError("This page has no circuit data. Build the circuit again from the home page.", { title: "Nothing to show" });
    return;
  }
  const result = circuit.result;
  const model = (result.model && result.model.name) || "";
  const prompts = result.prompts || [];
  const first = prompts[0] || {};
  const firstTarget = first.target || null;
  const state = initialCircuitState(readJSON("state-data"));
  const serverAblation = readJSON("ablation-data");
  const neuronsById = new Map((result.neurons || []).map((n) => [n.id, n]));
  let restoring = false;

  renderSummary(result);

  // Selection: the groups the Ablate button acts on; the panel shows the last one clicked.
  let selection = [];
  const selCount = $("sel-count");
  const selList = $("sel-list");
  const writeState = (opts) => writeQuery(() => circuitQuery(state), opts);

  function setSelection(ids, { write = true } = {}) {
    selection = [...new Set(ids.filter((id) => GROUP_RE.test(id) && graph.byId.has(id)))];
    graph.setSelection(selection.length ? selection : state.grp === ROOT ? [ROOT] : []);
    selCount.textContent = `${selection.length} selected`;
    selCount.classList.toggle("pill-muted", selection.length === 0);
    $("clear-sel").hidden = selection.length === 0;
    renderSelList();
    ablation.updateButtons();
    if (write) writeState();
  }

  function renderSelList() {
    clear(selList);
    if (!selection.length) {
      selList.append(el("span", { class: "muted small" }, "Click a group in the graph; shift-click adds more groups to ablate together."));
      return;
    }
    for (const id of selection) {
      const g = graph.byId.get(id);
      selList.append(el("span", { class: "sel-chip" },
        el("button", { type: "button", class: "sel-open mono", title: `Inspect ${id} (${g ? g.nNeurons : "?"} neurons)`, on: { click: () => openGroup(id) } }, id),
        el("button", { type: "button", class: "sel-remove", "aria-label": `Remove ${id} from the selection`, on: { click: () => setSelection(selection.filter((x) => x !== id)) } }, "×")));
    }
    const n = new Set(selection.flatMap((id) => graph.neuronsOf(id))).size;
    selList.append(el("span", { class: "muted small" }, `${n} neuron${n === 1 ? "" : "s"}`));
  }

  function toggle(id) {
    if (selection.includes(id)) setSelection(selection.filter((x) => x !== id));
    else setSelection([...selection, id]);
  }

  // Graph.
  const graphEl = $("graph");
  let graph;
  try {
    graph = new CircuitGraph(graphEl, result, {
      targetLabel: result.target ? result.target.token : null,
      onGroupClick: (id, { shift }) => {
        if (id === ROOT) {
          openGroup(ROOT);
          return;
        }
        if (shift) toggle(id);
        else setSelection([id]);
        openGroup(id);
      },
      onRender: (shown) => {
        $("visible-count").textContent = `${shown.groups} groups · ${shown.edges} edges`;
      },
    });
  } catch (err) {
    showError(err, { title: "Could not draw the circuit" });
    return;
  }
  const edgesIn = $("edges-in");
  edgesIn.value = Number.isFinite(graph.maxIn) ? String(graph.maxIn) : "0";
  edgesIn.addEventListener("change", () => graph.setMaxIncoming(Number(edgesIn.value)));
  if (graph.hasStability) {
    $("color-by-ctl").hidden = false;
    const colorBy = $("color-by");
    const syncLegend = () => {
      for (const item of document.querySelectorAll(".legend-stab")) item.hidden = colorBy.value !== "stability";
      for (const item of document.querySelectorAll(".legend-imp")) item.hidden = colorBy.value === "stability";
    };
    colorBy.addEventListener("change", () => { graph.setColorBy(colorBy.value); syncLegend(); });
    syncLegend();
  }

  // Ablation of groups: the analysis page's controller and before/after panel.
  const ablation = new AblationController({
    endpoint: `/api/circuits/${encodeURIComponent(circuit.id)}/ablations`,
    itemsKey: "groups",
    noun: "group",
    result: { target: firstTarget ? { ...firstTarget, ...(result.target || {}) } : result.target },
    getSelection: () => selection,
    emptyHint: () => el("div", { class: "abl-empty" },
      el("p", { class: "hint-line first" }, "Click a group and press ", el("strong", {}, "Ablate group"),
        " (or select several with shift-click and press ", el("strong", {}, "Ablate"),
        ") to switch its neurons off and compare the model’s next-token prediction before and after, side by side."),
      prompts.length > 1 ? el("p", { class: "muted small" }, "Ablations run on the first prompt of the set.") : null),
    els: ablationElements(),
    onError: (err) => showError(err, { title: "Ablation failed" }),
    onChange: (cur) => {
      state.gabl = cur ? { groups: [...cur.groups], mode: cur.mode, factor: cur.factor } : null;
      graph.setAblated(cur ? cur.groups : []);
      showAblatedTarget(cur);
      if (panelGroup) openGroup(panelGroup, { write: false });
      if (!restoring) writeState();
    },
  });
  ablation.render();

  const targetProb = $("target-prob");
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
    const pAbl = cur.result && cur.result.ablated ? cur.result.ablated.target_prob : null;
    const pBase = cur.result && cur.result.baseline ? cur.result.baseline.target_prob : null;
    const what = cur.groups.map((id) => (id === ROOT ? "the root’s core set" : id)).join(", ");
    extra.textContent = `→ ${fmtProb(pAbl)} with ${what} ablated`;
    extra.classList.toggle("neg", pAbl !== null && pBase !== null && pAbl < pBase);
  }

  // Side panel: a group (or the root).
  const panel = $("panel");
  let panelGroup = null;

  function openGroup(id, { write = true } = {}) {
    if (id !== ROOT && !graph.byId.has(id)) {
      showError(`There is no group ${id} in this circuit; groups are named G<layer>.<rank>, e.g. ${graph.top(1)[0] || "G29.0"}.`, { title: "No such group" });
      return;
    }
    panelGroup = id;
    state.grp = id;
    panel.classList.add("open");
    if (id === ROOT) renderRoot();
    else renderGroup(graph.byId.get(id));
    if (id === ROOT) graph.setSelection(selection.length ? selection : [ROOT]);
    if (write) writeState();
  }

  function groupButton(id, extra = null, cls = "") {
    return el("button", { type: "button", class: `gchip ${cls}`.trim(), title: `Open ${id}`, on: { click: () => {
      if (id !== ROOT) setSelection([id]);
      openGroup(id);
    } } }, el("span", { class: "mono" }, id), extra);
  }

  function flowList(edges, other) {
    if (!edges.length) return el("p", { class: "muted small" }, "—");
    const shown = edges.slice(0, 8);
    const list = el("div", { class: "flow-list" }, shown.map((e) => groupButton(e[other],
      el("span", { class: `gchip-val ${e.neg ? "neg" : "pos"}`, title: `weight ${fmtNum(e.weight, 4)} · ${Math.round(e.share * 100)}% of ${e.target}'s input` },
        `${e.neg ? "−" : "+"}${fmtNum(e.abs, 2)}`))));
    if (edges.length > shown.length) list.append(el("span", { class: "muted small" }, `+${edges.length - shown.length} more`));
    return list;
  }

  function renderGroup(g) {
    clear(panel);
    panel.dataset.group = g.id;
    const isAblated = graph.ablated.has(g.id);
    const inSel = selection.includes(g.id);
    const members = aggregateMembers(g);
    const layerGroups = graph.layerIds(g.layer);
    const rank = layerGroups.indexOf(g.id);
    panel.append(el("div", { class: "panel-head" },
      el("div", {},
        el("div", { class: "eyebrow" }, `Layer ${g.layer} · group ${rank + 1} of ${layerGroups.length}`,
          isAblated ? el("span", { class: "badge badge-ablated" }, "ablated") : null),
        el("h2", { class: "panel-title mono", "data-testid": "panel-title" }, g.id)),
      el("div", { class: "panel-head-actions" },
        el("button", { type: "button", class: `btn btn-sm ${inSel ? "btn-ghost" : "btn-soft"}`, "data-testid": "select-group", on: { click: () => toggle(g.id) } },
          inSel ? "Deselect" : "Select"),
        el("button", { type: "button", class: "btn btn-sm btn-primary", "data-testid": "ablate-group",
          title: `Switch off the ${g.nNeurons} neurons of ${g.id} and compare the prediction`,
          on: { click: () => { ablation.ablateItems([g.id]); } } }, "Ablate group"))));

    const stab = g.stability && g.stability.label ? g.stability : null;
    panel.append(el("div", { class: "stat-row" },
      stat("importance", `${fmtNum(g.importance * 100, 3)}%`, "", "share of the root's relevance routed through this group"),
      stat("neurons", String(g.nNeurons)),
      stat("sub-concepts", String((g.members || []).length))));
    panel.append(el("div", { class: "stability-line", "data-testid": "group-stability" },
      el("span", { class: "small muted" }, "Stability"),
      stab ? el("span", { class: `stab-badge stab-${stab.label}`, title: STABILITY_TEXT[stab.label] || "" },
        `${stab.label} · support ${Math.round(Number(stab.support) * 100)}%`)
        : el("span", { class: "stab-badge stab-none", title: "Build the circuit over a prompt set to see which groups are stable across prompts" }, "single prompt")));

    // Member neurons.
    panel.append(el("section", { class: "panel-section", "data-testid": "group-members" },
      el("h3", { class: "panel-h" }, `Member neurons (${members.length})`, el("span", { class: "panel-h-sub" }, "importance · click for the neuron page")),
      el("div", { class: "member-chips" }, members.map((m) => {
        const nrow = neuronsById.get(m.neuron);
        const ns = nrow && nrow.stability && nrow.stability.label ? nrow.stability.label : null;
        return el("a", {
          class: "member-chip", href: neuronUrl(model, m.neuron), "data-neuron": m.neuron,
          title: `${m.neuron}: ${m.subconcepts} sub-concept${m.subconcepts === 1 ? "" : "s"} in this group, ${m.size} samples, mean activation ${fmtNum(m.activation, 3)}${ns ? `, ${ns} across prompts` : ""}`,
        },
          ns ? el("span", { class: "stab-dot", style: { background: STABILITY_COLORS[ns] || "#cfd5e1" } }) : null,
          el("span", { class: "mono" }, m.neuron),
          el("span", { class: "member-imp" }, fmtNum(m.importance, 2)),
          m.subconcepts > 1 ? el("span", { class: "member-sub" }, `×${m.subconcepts}`) : null);
      }))));

    // Concept samples.
    const samples = g.samples || [];
    panel.append(el("section", { class: "panel-section", "data-testid": "group-samples" },
      el("h3", { class: "panel-h" }, "Representative samples", el("span", { class: "panel-h-sub" }, "nearest the group’s concept · focus token highlighted")),
      samples.length ? el("ol", { class: "sample-list" }, samples.map(sampleItem)) : el("p", { class: "muted small" }, "No samples.")));

    // What the members write.
    const writes = vocabSection("Writes", "members’ output directions → vocabulary", g.writes, "group-writes");
    if (writes) panel.append(writes);

    // Flow.
    const { incoming, outgoing } = graph.edgesOf(g.id);
    panel.append(el("section", { class: "panel-section", "data-testid": "group-flow" },
      el("h3", { class: "panel-h" }, "Flow", el("span", { class: "panel-h-sub" }, "signed edge weight")),
      el("div", { class: "flow-row" }, el("span", { class: "flow-label" }, "feeds"), flowList(outgoing, "target")),
      el("div", { class: "flow-row" }, el("span", { class: "flow-label" }, "fed by"),
        g.layer === graph.lo ? el("p", { class: "muted small" }, "bottom of the window") : flowList(incoming, "source"))));
  }

  function renderRoot() {
    clear(panel);
    panel.dataset.group = ROOT;
    const t = result.target;
    const core = (result.root && result.root.core) || [];
    panel.append(el("div", { class: "panel-head" },
      el("div", {},
        el("div", { class: "eyebrow" }, result.metric === "logit_diff" ? "Root · logit difference" : "Root · target log-probability"),
        el("h2", { class: "panel-title", "data-testid": "panel-title" }, "Output ",
          t ? el("span", { class: "tok tok-target" }, tokenText(t.token)) : el("span", { class: "muted" }, "(each prompt’s top token)")))));
    panel.append(el("div", { class: "panel-note" },
      el("p", { class: "small muted" }, "The root is the metric the circuit explains, at the last position of each prompt. Its core set is the top layer’s critical neurons."),
      el("button", { type: "button", class: "btn btn-sm btn-primary", "data-testid": "ablate-group",
        title: `Switch off the ${core.length} core neurons of the root and compare the prediction`,
        on: { click: () => { ablation.ablateItems([ROOT]); } } }, "Ablate core set")));
    panel.append(el("section", { class: "panel-section" },
      el("h3", { class: "panel-h" }, "Prompts", el("span", { class: "panel-h-sub" }, "target probability")),
      el("ol", { class: "prompt-set compact" }, prompts.map(promptItem))));
    panel.append(el("section", { class: "panel-section" },
      el("h3", { class: "panel-h" }, `Core neurons of the root (${core.length})`, el("span", { class: "panel-h-sub" }, "signed edge weight")),
      el("div", { class: "member-chips" }, core.map((c) => el("a", {
        class: "member-chip", href: neuronUrl(model, c.neuron), title: `importance ${fmtNum(c.importance, 4)} · weight ${fmtNum(c.weight, 4)}`,
      }, el("span", { class: "mono" }, c.neuron), el("span", { class: `member-imp ${Number(c.weight) < 0 ? "neg" : "pos"}` }, fmtNum(c.weight, 2)))))));
    panel.append(el("section", { class: "panel-section" },
      el("h3", { class: "panel-h" }, "Fed by"), flowList(graph.edgesOf(ROOT).incoming, "source")));
  }

  // Find a group.
  $("find-form").addEventListener("submit", (e) => {
    e.preventDefault();
    const input = $("find-input");
    const raw = input.value.trim().toUpperCase();
    const id = raw === "ROOT" ? ROOT : raw;
    if (id !== ROOT && !GROUP_RE.test(id)) {
      showError(`“${input.value}” is not a group id; write it as G<layer>.<rank>, e.g. G29.0.`, { title: "Not a group id" });
      return;
    }
    if (id !== ROOT && graph.byId.has(id)) setSelection([id]);
    openGroup(id);
  });
  $("clear-sel").addEventListener("click", () => setSelection([]));

  // Fidelity and stability.
  renderFidelity(result, model, (id) => { if (GROUP_RE.test(id)) setSelection([id]); openGroup(id); });

  // Share.
  bindShare({
    button: $("share-btn"), row: $("share-row"), input: $("share-url"), copyButton: $("share-copy"),
    makeUrl: () => {
      writeState({ immediate: true });
      return postPermalink(circuit.id, circuitPermalinkState(state));
    },
  });

  // Restore the view state (from ?v=… or the query) without touching the URL.
  const startGroup = state.grp;
  setSelection(startGroup && startGroup !== ROOT ? [startGroup] : [], { write: false });
  if (startGroup) openGroup(startGroup, { write: false });
  if (state.gabl) {
    const abl = { ...state.gabl, groups: state.gabl.groups.filter((id) => id === ROOT || graph.byId.has(id)) };
    if (abl.groups.length) {
      ablation.setControls(abl.mode, abl.factor);
      const known = ablationMatchesGroups(serverAblation, abl, graph) ? serverAblation : null;
      restoring = true;
      ablation.run(abl, { push: false, knownResult: known })
        .catch((err) => showError(err, { title: "Ablation failed" }))
        .finally(() => { restoring = false; });
    }
  }
  document.body.dataset.ready = "1";
}

/** Whether a server-rendered <Ablation> is the one of these groups (same neurons, mode, factor). */
function ablationMatchesGroups(res, abl, graph) {
  if (!res || !res.ablation || !abl) return false;
  const neurons = [...new Set(abl.groups.flatMap((id) => graph.neuronsOf(id)))];
  if (!sameNeuronSet(res.ablation.neurons || [], neurons)) return false;
  if ((res.ablation.mode || "zero") !== abl.mode) return false;
  return abl.mode !== "scale" || Math.abs(Number(res.ablation.factor) - Number(abl.factor)) < 1e-9;
}

/** One row per member neuron: its sub-concepts in this group merged (importance summed). */
function aggregateMembers(g) {
  const rows = new Map();
  for (const m of g.members || []) {
    const r = rows.get(m.neuron) || { neuron: m.neuron, importance: 0, subconcepts: 0, size: 0, actSum: 0 };
    r.importance += Number(m.importance) || 0;
    r.subconcepts += 1;
    r.size += Number(m.size) || 0;
    r.actSum += (Number(m.activation) || 0) * (Number(m.size) || 1);
    rows.set(m.neuron, r);
  }
  for (const id of g.neurons || []) if (!rows.has(id)) rows.set(id, { neuron: id, importance: 0, subconcepts: 0, size: 0, actSum: 0 });
  return [...rows.values()]
    .map((r) => ({ ...r, activation: r.size ? r.actSum / r.size : 0 }))
    .sort((a, b) => b.importance - a.importance);
}

/** A concept sample: its tokens with the focus token highlighted (text only, never HTML). */
function sampleItem(s) {
  const tokens = Array.isArray(s.tokens) && s.tokens.length ? s.tokens : [s.token];
  const focus = Array.isArray(s.tokens) && s.tokens.length ? Number(s.focus) : 0;
  const line = el("div", { class: "sample-tokens" }, tokens.map((t, i) => el("span", {
    class: i === focus ? "stok stok-focus" : "stok", title: i === focus ? `focus token ${JSON.stringify(String(t))}` : null,
  }, tokenText(t))));
  return el("li", { class: "sample", title: s.text ? String(s.text) : null, "data-focus": String(s.token ?? "") },
    line,
    el("div", { class: "sample-meta" },
      el("span", { class: `badge badge-${s.source === "prompt" ? "prompt" : "corpus"}` }, s.source === "prompt" ? "prompt" : "corpus"),
      s.neuron ? el("span", { class: "mono" }, s.neuron) : null,
      el("span", {}, `activation ${fmtNum(s.activation, 3)}`)));
}

function promptItem(p) {
  const t = p.target || {};
  return el("li", { class: "prompt-item" },
    el("span", { class: "prompt-item-text" }, p.prompt),
    el("span", { class: "prompt-item-target" }, el("span", { class: "tok tok-target" }, tokenText(t.token)), " ", fmtProb(t.prob)));
}

function stat(label, value, cls = "", title = null) {
  return el("div", { class: "stat", title }, el("span", { class: "stat-label" }, label), el("span", { class: `stat-value ${cls}` }, value));
}

function renderSummary(result) {
  const prompts = result.prompts || [];
  const first = prompts[0] || {};
  const tokens = $("tokens");
  clear(tokens);
  (first.tokens || []).forEach((t, i) => {
    const chip = tokenChip(t);
    chip.title = `position ${i} · ${chip.title}`;
    tokens.append(chip);
  });
  const t = result.target || (first.target ? { token: first.target.token } : null);
  if (t && result.target) {
    const tt = $("target-token");
    tt.textContent = tokenText(t.token);
    tt.title = JSON.stringify(String(t.token));
  }
  $("target-prob").textContent = first.target ? fmtProb(first.target.prob) : "—";
  const set = $("prompt-set");
  if (set) for (const p of prompts) set.append(promptItem(p));
}

function renderFidelity(result, model, openGroup) {
  const fid = result.fidelity || {};
  const rows = [...(fid.ablation || [])].sort((a, b) => {
    if (a.layer === "all") return 1;
    if (b.layer === "all") return -1;
    return Number(a.layer) - Number(b.layer);
  });
  const label = (r) => (r.layer === "all" ? "all layers" : `L${r.layer}`);
  const z = (r) => {
    const sd = Number(r.random.delta_prob_std);
    const d = Number(r.core.delta_prob) - Number(r.random.delta_prob_mean);
    return sd > 0 ? d / sd : null;
  };

  const chart = $("fidelity-chart");
  if (rows.length && window.Plotly) {
    const x = rows.map(label);
    const FONT = getComputedStyle(document.body).fontFamily;
    window.Plotly.newPlot(chart, [
      { type: "bar", name: "circuit neurons", x, y: rows.map((r) => Number(r.core.delta_prob) * 100),
        marker: { color: rows.map((r) => (r.layer === "all" ? "#2f3ea8" : "#5b6ce0")) },
        hovertemplate: "%{x}: circuit %{y:.2f} pts<extra></extra>" },
      { type: "bar", name: "random neurons (mean ± sd)", x, y: rows.map((r) => Number(r.random.delta_prob_mean) * 100),
        error_y: { type: "data", array: rows.map((r) => Number(r.random.delta_prob_std) * 100), color: "#6b7385", thickness: 1.4, width: 4 },
        marker: { color: "#c3c9d6" },
        hovertemplate: "%{x}: random %{y:.2f} ± %{error_y.array:.2f} pts<extra></extra>" },
    ], {
      height: 250, barmode: "group", bargap: 0.28, bargroupgap: 0.08,
      margin: { l: 56, r: 10, t: 8, b: 34 }, paper_bgcolor: "rgba(0,0,0,0)", plot_bgcolor: "#ffffff",
      font: { family: FONT, size: 12, color: "#4a5368" },
      yaxis: { title: { text: "Δ target prob. (pts)", font: { size: 11 } }, zeroline: true, zerolinecolor: "#9aa3b5", gridcolor: "#eef0f5" },
      xaxis: { fixedrange: true }, legend: { orientation: "h", y: 1.12, x: 0, font: { size: 11 } },
    }, { displayModeBar: false, responsive: true, staticPlot: false });
    chart.dataset.rows = String(rows.length);
  } else {
    chart.hidden = true;
  }

  const table = $("fidelity-table");
  clear(table);
  table.append(el("thead", {}, el("tr", {},
    el("th", {}, "Ablated"), el("th", { class: "num" }, "neurons"), el("th", { class: "num" }, "circuit Δp"),
    el("th", { class: "num" }, "random Δp (mean ± sd)"), el("th", { class: "num", title: "(circuit − random mean) / random sd" }, "separation"))));
  table.append(el("tbody", {}, rows.map((r) => {
    const zz = z(r);
    const strong = zz !== null && Math.abs(zz) >= 3;
    return el("tr", { class: r.layer === "all" ? "row-all" : "" },
      el("td", {}, label(r)),
      el("td", { class: "num" }, String(r.n)),
      el("td", { class: `num ${Number(r.core.delta_prob) < 0 ? "neg" : "pos"}` }, fmtDeltaProb(Number(r.core.delta_prob))),
      el("td", { class: "num muted" }, `${fmtDeltaProb(Number(r.random.delta_prob_mean))} ± ${fmtNum(Number(r.random.delta_prob_std) * 100, 2)}`),
      el("td", { class: `num ${strong ? "sep-strong" : ""}` }, zz === null ? "—" : `${fmtNum(zz, 2)} σ`));
  })));

  const all = rows.find((r) => r.layer === "all");
  const badge = $("fidelity-badge");
  if (all) {
    const zz = z(all);
    const quality = zz === null ? "fair" : Math.abs(zz) >= 3 ? "good" : Math.abs(zz) >= 1.5 ? "fair" : "poor";
    badge.className = `fidelity fidelity-${quality}`;
    badge.title = "Ablating every circuit neuron vs as many random neurons: change in the target probability";
    badge.append(el("span", { class: "fidelity-label" }, "All circuit neurons"),
      el("span", { class: "fidelity-value", "data-testid": "fidelity-all" }, fmtDeltaProb(Number(all.core.delta_prob))),
      el("span", { class: "fidelity-n" }, `vs random ${fmtDeltaProb(Number(all.random.delta_prob_mean))}`));
    badge.hidden = false;
  }

  // Correlation check.
  const corr = fid.correlation || {};
  const box = $("correlation");
  clear(box);
  const rootC = corr.root;
  if (rootC) {
    box.append(el("div", { class: "corr-root" },
      corrStat("Pearson", rootC.pearson), corrStat("Spearman", rootC.spearman), corrStat("signed Pearson", rootC.signed_pearson)),
    el("p", { class: "muted small" }, `Root vs layer ${rootC.layer}: summed importance of ${rootC.subsets} random neuron subsets against the true change of the target metric when they are zeroed.`));
  }
  const nrows = corr.neurons || [];
  if (nrows.length) {
    box.append(el("table", { class: "data-table compact" },
      el("thead", {}, el("tr", {}, el("th", {}, "neuron"), el("th", {}, "subsets of"), el("th", { class: "num" }, "Pearson"), el("th", { class: "num" }, "Spearman"))),
      el("tbody", {}, nrows.map((r) => el("tr", {},
        el("td", {}, el("a", { class: "mono", href: neuronUrl(model, r.neuron) }, r.neuron)),
        el("td", {}, `L${r.layer}`),
        el("td", { class: "num" }, corrCell(r.pearson)),
        el("td", { class: "num" }, corrCell(r.spearman)))))));
  }
  if (!rootC && !nrows.length) box.append(el("p", { class: "muted small" }, "Not computed for this circuit."));

  // Stability over a prompt set.
  const stab = fid.stability;
  const block = $("stability");
  if (stab) {
    block.hidden = false;
    const count = (list) => list.reduce((m, r) => { m[r.label] = (m[r.label] || 0) + 1; return m; }, {});
    const gCount = count(stab.groups || []);
    const nCount = count(stab.neurons || []);
    const pills = (c) => el("span", { class: "stab-pills" }, ["stable", "mixed", "specific", "weak"].filter((k) => c[k]).map((k) =>
      el("span", { class: `stab-badge stab-${k}`, title: STABILITY_TEXT[k] }, `${c[k]} ${k}`)));
    const groupsBy = (label) => (stab.groups || []).filter((r) => r.label === label).map((r) => r.id);
    const chips = (ids) => (ids.length ? el("div", { class: "flow-list" }, ids.map((id) => el("button", {
      type: "button", class: "gchip", on: { click: () => openGroup(id) },
    }, el("span", { class: "mono" }, id)))) : el("span", { class: "muted small" }, "none"));
    block.append(
      el("h3", { class: "panel-h" }, `Stability across ${stab.prompts} prompts`, el("span", { class: "panel-h-sub" }, stab.rule || "")),
      el("div", { class: "stab-grid" },
        el("div", { class: "stab-row" }, el("span", { class: "flow-label" }, "groups"), pills(gCount)),
        el("div", { class: "stab-row" }, el("span", { class: "flow-label" }, "neurons"), pills(nCount)),
        el("div", { class: "stab-row" }, el("span", { class: "flow-label" }, "stable groups"), chips(groupsBy("stable"))),
        el("div", { class: "stab-row" }, el("span", { class: "flow-label" }, "prompt-specific"), chips(groupsBy("specific")))));
  }
}

function corrStat(label, v) {
  return el("div", { class: "stat" }, el("span", { class: "stat-label" }, label), el("span", { class: "stat-value" }, corrCell(v)));
}

function corrCell(v) {
  return v === null || v === undefined ? "—" : Number(v).toFixed(2);
}

try {
  main();
} catch (err) {
  console.error(err);
  showError(err, { title: "This page failed to start" });
}
