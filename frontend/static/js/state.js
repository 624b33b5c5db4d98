// View state <-> URL.
//
// The URL always holds the view: `sel` (comma list of neuron ids), `abl` (comma list of ablated
// neuron ids), `mode` + `factor` (the ablation), `thr` (graph threshold, 0..1). Changes are written
// with history.replaceState; a Share button turns the state into a server-side permalink
// (`/a/<slug>?v=<view>`), which the server hands back to the page as the `state` JSON.

import { apiJSON, showError, toast } from "./api.js";

const NEURON_RE = /^L\d{1,4}\.N\d{1,7}$/;
const MODES = ["zero", "mean", "scale"];

export function emptyState() {
  return { sel: [], abl: null, thr: 0 };
}

function idList(value) {
  if (value === null || value === undefined) return [];
  const parts = Array.isArray(value) ? value : String(value).split(",");
  const out = [];
  for (const p of parts) {
    const id = String(p).trim();
    if (NEURON_RE.test(id) && !out.includes(id)) out.push(id);
  }
  return out;
}

function clampThr(x) {
  const v = Number(x);
  if (!Number.isFinite(v)) return 0;
  return Math.max(0, Math.min(1, v));
}

function mkAbl(neurons, mode, factor) {
  const ids = idList(neurons);
  if (!ids.length) return null;
  const m = MODES.includes(mode) ? mode : "zero";
  const f = Number(factor);
  return { neurons: ids, mode: m, factor: m === "scale" && Number.isFinite(f) ? f : 0 };
}

/** Normalise a state object from the server (permalink or parsed query) to {sel, abl, thr}. */
export function normalizeState(raw) {
  const st = emptyState();
  if (!raw || typeof raw !== "object") return st;
  st.sel = idList(raw.sel);
  st.thr = clampThr(raw.thr ?? 0);
  const abl = raw.abl;
  if (abl && typeof abl === "object" && !Array.isArray(abl)) {
    st.abl = mkAbl(abl.neurons, abl.mode ?? raw.mode, abl.factor ?? raw.factor);
  } else if (abl) {
    st.abl = mkAbl(abl, raw.mode, raw.factor);
  }
  return st;
}

/** The view state written in the current URL's query, only for the keys present. */
export function stateFromQuery(search = window.location.search) {
  const q = new URLSearchParams(search);
  const out = {};
  if (q.has("sel")) out.sel = idList(q.get("sel"));
  if (q.has("thr")) out.thr = clampThr(q.get("thr"));
  if (q.has("abl")) out.abl = mkAbl(q.get("abl"), q.get("mode"), q.get("factor"));
  return out;
}

/** Server state (permalink) first, then any explicit query parameters on top. */
export function initialState(serverState, search = window.location.search) {
  const st = normalizeState(serverState);
  return { ...st, ...stateFromQuery(search) };
}

function fmtThr(t) {
  return String(Math.round(t * 1000) / 1000);
}

/** Query string (without '?') for a state. Neuron ids are URL-safe, so commas stay readable. */
export function queryFor(state) {
  const parts = [];
  if (state.sel && state.sel.length) parts.push(`sel=${state.sel.join(",")}`);
  if (state.abl && state.abl.neurons.length) {
    parts.push(`abl=${state.abl.neurons.join(",")}`);
    parts.push(`mode=${encodeURIComponent(state.abl.mode)}`);
    if (state.abl.mode === "scale") parts.push(`factor=${encodeURIComponent(String(state.abl.factor))}`);
  }
  if (state.thr > 0) parts.push(`thr=${fmtThr(state.thr)}`);
  return parts.join("&");
}

let writeTimer = null;

/** history.replaceState to the current path + `query` (a string without '?', or a function giving one;
 *  drops a stale `v`). Debounced unless `immediate`. */
export function writeQuery(query, { immediate = false } = {}) {
  const apply = () => {
    const q = typeof query === "function" ? query() : query;
    const url = window.location.pathname + (q ? `?${q}` : "") + window.location.hash;
    if (url !== window.location.pathname + window.location.search + window.location.hash) {
      window.history.replaceState(window.history.state, "", url);
    }
  };
  clearTimeout(writeTimer);
  if (immediate) apply();
  else writeTimer = setTimeout(apply, 120);
}

/** history.replaceState to the current path + the state's query (drops a stale `v`). Debounced. */
export function writeUrl(state, { immediate = false } = {}) {
  writeQuery(() => queryFor(state), { immediate });
}

/** The state as the permalink API wants it. */
export function permalinkState(state, method) {
  const out = { sel: [...state.sel], thr: state.thr, method };
  if (state.abl) out.abl = { neurons: [...state.abl.neurons], mode: state.abl.mode, factor: state.abl.factor };
  return out;
}

/** POST /api/permalinks for a stored result (an analysis or a circuit) and a view state already in the
 *  API's shape; resolves to the absolute URL of the new permalink. */
export async function postPermalink(resultId, state) {
  const data = await apiJSON("/api/permalinks", { method: "POST", body: { analysis_id: resultId, state } });
  return new URL(data.url, window.location.origin).href;
}

/** POST /api/permalinks; resolves to the absolute URL of the new permalink. */
export async function createPermalink(analysisId, state, method) {
  return postPermalink(analysisId, permalinkState(state, method));
}

/** Copy text to the clipboard; resolves to true on success (false when the browser refuses). */
export async function copyText(text, fallbackInput = null) {
  try {
    if (navigator.clipboard && window.isSecureContext) {
      await navigator.clipboard.writeText(text);
      return true;
    }
  } catch { /* fall through */ }
  if (fallbackInput) {
    fallbackInput.focus();
    fallbackInput.select();
    try { return document.execCommand("copy"); } catch { return false; }
  }
  return false;
}

/**
 * The Share button of a page: on click, `makeUrl()` (a promise of the permalink URL) fills the share
 * row's field, which is shown, selected and copied to the clipboard when the browser allows it.
 */
export function bindShare({ button, row, input, copyButton, makeUrl }) {
  button.addEventListener("click", async () => {
    button.disabled = true;
    try {
      const url = await makeUrl();
      input.value = url;
      row.hidden = false;
      input.select();
      toast((await copyText(url, input)) ? "Link copied to the clipboard" : "Link ready — copy it from the field");
    } catch (err) {
      showError(err, { title: "Could not create a link" });
    } finally {
      button.disabled = false;
    }
  });
  copyButton.addEventListener("click", async () => {
    toast((await copyText(input.value, input)) ? "Link copied to the clipboard" : "Select the link and copy it");
  });
}

export function sameNeuronSet(a, b) {
  if (!a || !b) return false;
  const sa = new Set(a);
  if (sa.size !== new Set(b).size) return false;
  for (const x of b) if (!sa.has(x)) return false;
  return true;
}

/** Whether an <Ablation> result (from the server) is for this ablation state. */
export function ablationMatches(result, abl) {
  if (!result || !abl || !result.ablation) return false;
  const r = result.ablation;
  if (!sameNeuronSet(r.neurons || [], abl.neurons)) return false;
  if ((r.mode || "zero") !== abl.mode) return false;
  if (abl.mode === "scale" && Math.abs(Number(r.factor) - Number(abl.factor)) > 1e-9) return false;
  return true;
}

// ---------------------------------------------------------------- circuit pages (/c/<slug>)
//
// The circuit view lives in the URL as `grp` (the group open in the side panel), `gabl` (comma list of
// ablated groups), `mode` + `factor` (the ablation). A permalink saves the same keys:
// {"grp": "G29.0" | null, "gabl": ["G29.0", …], "mode": "zero", "factor": 0}.

const GROUP_RE = /^G\d{1,4}\.\d{1,4}$/;
const ABLATABLE_RE = /^(root|G\d{1,4}\.\d{1,4})$/; // "root": the root's core neurons

/** Group ids (or "root") from a list, a comma string, or an ablation object {groups: […]}. */
export function groupList(value) {
  if (value === null || value === undefined) return [];
  if (typeof value === "object" && !Array.isArray(value)) return groupList(value.groups);
  const parts = Array.isArray(value) ? value : String(value).split(",");
  const out = [];
  for (const p of parts) {
    const id = String(p).trim();
    if (ABLATABLE_RE.test(id) && !out.includes(id)) out.push(id);
  }
  return out;
}

function oneGroup(value) {
  const v = Array.isArray(value) ? value[value.length - 1] : value;
  if (v === null || v === undefined) return null;
  const id = String(v).trim();
  return GROUP_RE.test(id) || id === "root" ? id : null;
}

function mkGroupAbl(groups, mode, factor) {
  const ids = groupList(groups);
  if (!ids.length) return null;
  const m = MODES.includes(mode) ? mode : "zero";
  const f = Number(factor);
  return { groups: ids, mode: m, factor: m === "scale" && Number.isFinite(f) ? f : 0 };
}

/** Normalise a circuit view state from the server (permalink or parsed query) to {grp, gabl}. */
export function normalizeCircuitState(raw) {
  const st = { grp: null, gabl: null };
  if (!raw || typeof raw !== "object") return st;
  st.grp = oneGroup(raw.grp);
  const g = raw.gabl;
  if (g && typeof g === "object" && !Array.isArray(g)) st.gabl = mkGroupAbl(g.groups, g.mode ?? raw.mode, g.factor ?? raw.factor);
  else if (g) st.gabl = mkGroupAbl(g, raw.mode, raw.factor);
  return st;
}

/** The circuit view state written in the current URL's query, only for the keys present. */
export function circuitStateFromQuery(search = window.location.search) {
  const q = new URLSearchParams(search);
  const out = {};
  if (q.has("grp")) out.grp = oneGroup(q.get("grp"));
  if (q.has("gabl")) out.gabl = mkGroupAbl(q.get("gabl"), q.get("mode"), q.get("factor"));
  return out;
}

/** Server state (permalink) first, then any explicit query parameters on top. */
export function initialCircuitState(serverState, search = window.location.search) {
  return { ...normalizeCircuitState(serverState), ...circuitStateFromQuery(search) };
}

/** Query string (without '?') for a circuit view state. */
export function circuitQuery(state) {
  const parts = [];
  if (state.grp) parts.push(`grp=${encodeURIComponent(state.grp)}`);
  if (state.gabl && state.gabl.groups.length) {
    parts.push(`gabl=${state.gabl.groups.join(",")}`);
    parts.push(`mode=${encodeURIComponent(state.gabl.mode)}`);
    if (state.gabl.mode === "scale") parts.push(`factor=${encodeURIComponent(String(state.gabl.factor))}`);
  }
  return parts.join("&");
}

/** The circuit view state as the permalink API wants it. */
export function circuitPermalinkState(state) {
  const g = state.gabl;
  return { grp: state.grp || null, gabl: g ? [...g.groups] : [], mode: g ? g.mode : "zero", factor: g ? g.factor : 0 };
}
