// Home page: the form, for a neuron graph (POST /api/analyses) or a NeurFlow circuit (POST
// /api/circuits, with tau, k, layers, fast, an optional prompt set and an optional reference corpus read
// from a .txt/.jsonl file in the browser). 200 (cached: go to the permalink) or 202 (a job: follow
// /api/jobs/{id}/events with EventSource, showing phase, progress and queue position, with Cancel =
// DELETE /api/jobs/{id}; on `done`, go to the permalink). `/?kind=circuit&prompt=…&target=…` prefills it.

import { api, ApiError, showError, clearError, toast } from "./api.js";
import { relativeTime } from "./dom.js";

const $ = (id) => document.getElementById(id);
const form = $("analyze-form");
const submitBtn = $("submit");
const jobCard = $("job");

const PHASES = {
  queued: "Waiting in the queue",
  running: "Running",
  starting: "Starting",
  load: "Loading the model",
  loading: "Loading the model",
  tokenize: "Tokenizing",
  forward: "Scoring every neuron",
  backward: "Backward pass",
  impacts: "Scoring every neuron",
  "integrated gradients": "Integrated gradients",
  ig: "Integrated gradients",
  nag: "Building the graph",
  edges: "Computing edges",
  verify: "Verifying with exact ablations",
  store: "Saving",
  done: "Done",
  // circuits
  reference: "Reference corpus activations",
  trace: "Forward pass over the prompts",
  root: "Attributing the target",
  "core neurons": "Finding core neurons, layer by layer",
  groups: "Grouping sub-concepts",
  fidelity: "Checking fidelity against random neurons",
  writes: "Decoding what the groups write",
};

const LIMITS = { prompts: 16, corpusLines: 2000, corpusLineChars: 2000 };
let corpus = null; // list of texts read from the chosen file, or null (the shipped corpus)

function kind() {
  return (form.querySelector('input[name="kind"]:checked') || {}).value === "circuit" ? "circuit" : "analysis";
}

function noun() {
  return kind() === "circuit" ? "circuit" : "analysis";
}

function syncKind() {
  const k = kind();
  form.dataset.kind = k;
  $("circuit-options").hidden = k !== "circuit";
  if (!form.classList.contains("busy")) submitBtn.querySelector(".btn-label").textContent = k === "circuit" ? "Build circuit" : "Analyze";
}

const TERMINAL = new Set(["done", "failed", "cancelled"]);
let job = null;
let source = null;
let cancelRequested = false;
let pollTimer = null;
let finished = false;

function phaseLabel(j) {
  if (j.status === "queued") return PHASES.queued;
  const p = j.phase || j.status || "running";
  return PHASES[p] || p.charAt(0).toUpperCase() + p.slice(1).replace(/_/g, " ");
}

function setBusy(busy) {
  submitBtn.disabled = busy;
  const circuit = kind() === "circuit";
  submitBtn.querySelector(".btn-label").textContent = busy ? (circuit ? "Building…" : "Analyzing…") : (circuit ? "Build circuit" : "Analyze");
  form.classList.toggle("busy", busy);
  if (busy) $("job-kind").textContent = circuit ? "Circuit running" : "Analysis running";
}

function showJob(j) {
  job = j;
  const wasHidden = jobCard.hidden;
  jobCard.hidden = false;
  if (wasHidden) jobCard.scrollIntoView({ block: "nearest", behavior: "smooth" });
  jobCard.dataset.status = j.status || "";
  jobCard.dataset.jobId = j.id || "";
  $("job-phase").textContent = cancelRequested && !TERMINAL.has(j.status) ? "Cancelling…" : phaseLabel(j);
  const pct = Math.max(0, Math.min(100, Math.round((Number(j.progress) || 0) * 100)));
  $("job-bar").style.width = `${j.status === "queued" ? 0 : Math.max(pct, 3)}%`;
  $("job-progress").setAttribute("aria-valuenow", String(pct));
  $("job-progress").classList.toggle("indeterminate", j.status === "queued");
  $("job-message").textContent = j.message || (j.status === "queued" ? `Another job is running; your ${noun()} starts next.` : "");
  const q = $("job-queue");
  if (j.status === "queued" && j.queue_position !== null && j.queue_position !== undefined) {
    q.hidden = false;
    q.textContent = `Queue position ${j.queue_position}`;
  } else {
    q.hidden = true;
  }
}

function stopFollowing() {
  finished = true;
  if (source) { source.close(); source = null; }
  clearTimeout(pollTimer);
}

function done(j) {
  if (cancelRequested) {
    cancelled(`It finished before it could be cancelled; it is in Recent ${kind() === "circuit" ? "circuits" : "analyses"}.`);
    return;
  }
  stopFollowing();
  const url = (j && (j.url || (j.result && j.result.url))) || (job && job.url);
  if (url) {
    showJob({ ...(job || {}), ...(j || {}), status: "done", phase: "done", progress: 1, message: `Opening the ${noun()}…` });
    window.location.assign(url);
  } else if (j && j.result_id && kind() === "analysis") {
    window.location.assign(`/a/${encodeURIComponent(j.result_id)}`);
  } else {
    fail({ message: `The ${noun()} finished but the server gave no link to it. Reload the home page and open it from the recent list.` });
  }
}

function fail(j, title = kind() === "circuit" ? "Circuit failed" : "Analysis failed") {
  stopFollowing();
  const err = j && j.error;
  let message = `The ${noun()} did not finish.`;
  let code = null;
  if (err && typeof err === "object") { message = err.message || message; code = err.code || null; }
  else if (typeof err === "string" && err) message = err;
  else if (j && j.message) message = j.message;
  jobCard.hidden = true;
  setBusy(false);
  showError(new ApiError(0, code, message), { title });
}

function cancelled(message = kind() === "circuit" ? "Circuit cancelled" : "Analysis cancelled") {
  if (finished && jobCard.hidden) return;
  stopFollowing();
  cancelRequested = false;
  jobCard.hidden = true;
  setBusy(false);
  toast(message);
}

function parse(ev) {
  try { return JSON.parse(ev.data); } catch { return {}; }
}

function follow(j) {
  finished = false;
  cancelRequested = false;
  showJob(j);
  if (j.status === "done") return done(j);
  if (typeof EventSource === "undefined") return poll();
  source = new EventSource(`/api/jobs/${encodeURIComponent(j.id)}/events`);
  source.addEventListener("progress", (ev) => showJob({ ...job, ...parse(ev) }));
  source.addEventListener("done", (ev) => done(parse(ev)));
  source.addEventListener("failed", (ev) => fail(parse(ev)));
  source.addEventListener("cancelled", () => cancelled());
  source.addEventListener("error", () => {
    // The stream dropped (proxy, restart…): fall back to polling the job.
    if (finished) return;
    if (source) { source.close(); source = null; }
    poll();
  });
}

async function poll() {
  if (finished || !job) return;
  try {
    const { data } = await api(`/api/jobs/${encodeURIComponent(job.id)}`);
    if (data.status === "done") return done(data);
    if (data.status === "failed") return fail(data);
    if (data.status === "cancelled") return cancelled();
    showJob(data);
  } catch (err) {
    if (err instanceof ApiError && err.status === 404) return fail({ error: err.message });
  }
  pollTimer = setTimeout(poll, 600);
}

$("job-cancel").addEventListener("click", async () => {
  if (!job) return;
  const btn = $("job-cancel");
  btn.disabled = true;
  cancelRequested = true;
  $("job-phase").textContent = "Cancelling…";
  try {
    // The server answers once the job has stopped (or after a bounded wait); until a terminal
    // status arrives, keep following the job's events.
    const { data } = await api(`/api/jobs/${encodeURIComponent(job.id)}`, { method: "DELETE" });
    if (data && data.status === "done") done(data);
    else if (data && TERMINAL.has(data.status)) cancelled();
    else if (data) showJob({ ...job, ...data });
  } catch (err) {
    cancelRequested = false;
    showError(err, { title: "Could not cancel" });
  } finally {
    btn.disabled = false;
  }
});

/** The analysis request from the form, or null after showing what is wrong. */
function analysisBody(prompt) {
  const method = (form.querySelector('input[name="method"]:checked') || {}).value || "attribution";
  const k = Math.round(Number($("k").value));
  if (!Number.isFinite(k) || k < 1 || k > 50) {
    showError("K is the number of neurons kept per layer; choose a whole number from 1 to 50.", { title: "Invalid K" });
    $("k").focus();
    return null;
  }
  const body = { prompt, method, k };
  if (method === "ig") body.ig_steps = Math.round(Number($("ig_steps").value)) || 16;
  return body;
}

function intField(id, low, high, title, what) {
  const v = Number($(id).value);
  if (!Number.isInteger(v) || v < low || v > high) {
    showError(`${what}; choose a whole number from ${low} to ${high}.`, { title });
    $(id).focus();
    return null;
  }
  return v;
}

/** The circuit request from the form, or null after showing what is wrong. */
function circuitBody(prompt) {
  const tau = intField("tau", 1, 64, "Invalid τ", "τ is the number of core neurons kept per critical neuron");
  if (tau === null) return null;
  const k = intField("ck", 2, 200, "Invalid k", "k is the number of samples that define a neuron's concept");
  if (k === null) return null;
  const body = { prompt, tau, k, fast: $("fast").checked };
  const layers = $("layers").value.trim();
  if (layers) {
    if (!/^\d{1,4}(\s*-\s*\d{1,4})?$/.test(layers)) {
      showError(`“${layers}” is not a layer window; write LO-HI (e.g. 24-29) or a number of last layers (e.g. 6).`, { title: "Invalid layers" });
      $("layers").focus();
      return null;
    }
    body.layers = layers.replace(/\s+/g, "");
  }
  const more = $("prompt-set").value.split(/\r?\n/).filter((line) => line.trim() && line !== prompt);
  const unique = [...new Set(more)];
  if (unique.length + 1 > LIMITS.prompts) {
    showError(`A prompt set holds at most ${LIMITS.prompts} prompts in all; this one has ${unique.length + 1}.`, { title: "Too many prompts" });
    $("prompt-set").focus();
    return null;
  }
  if (unique.length) body.prompts = unique;
  if (corpus) body.corpus = corpus;
  return body;
}

form.addEventListener("submit", async (e) => {
  e.preventDefault();
  clearError();
  const prompt = $("prompt").value;
  const circuit = kind() === "circuit";
  if (!prompt.trim()) {
    showError(`Type a prompt to ${circuit ? "explain" : "analyze"}, for example “The capital of France is”.`, { title: "The prompt is empty" });
    $("prompt").focus();
    return;
  }
  const body = circuit ? circuitBody(prompt) : analysisBody(prompt);
  if (!body) return;
  const target = $("target").value;
  const contrast = $("contrast").value;
  if (target) body.target = target;
  if (contrast) body.contrast = contrast;
  const model = $("model").value;
  if (model) body.model = model;

  setBusy(true);
  try {
    const { status, data } = await api(circuit ? "/api/circuits" : "/api/analyses", { method: "POST", body });
    const done = data && (data.analysis || data.circuit);
    if (done && done.url) {
      window.location.assign(done.url);
    } else if (data && data.job) {
      follow(data.job);
    } else if (status === 200 && data && data.url) {
      window.location.assign(data.url);
    } else {
      throw new ApiError(status, "unexpected_answer", `The server's answer had neither ${circuit ? "a circuit" : "an analysis"} nor a job.`);
    }
  } catch (err) {
    setBusy(false);
    showError(err);
  }
});

// Reference corpus: read in the browser into a list of texts (one per line of a .txt; the "text" field,
// or the string, of each line of a .jsonl).
function parseCorpus(name, text) {
  const lines = text.split(/\r?\n/);
  const jsonl = /\.jsonl?$/i.test(name);
  const texts = [];
  lines.forEach((line, i) => {
    if (!line.trim()) return;
    let t = line;
    if (jsonl) {
      let obj;
      try { obj = JSON.parse(line); } catch {
        throw new Error(`line ${i + 1} of ${name} is not JSON; a .jsonl file holds one JSON string or {"text": …} object per line.`);
      }
      t = typeof obj === "string" ? obj : obj && typeof obj === "object" ? (obj.text ?? obj.prompt ?? obj.content) : null;
      if (typeof t !== "string") throw new Error(`line ${i + 1} of ${name} has no "text" field.`);
    }
    if (t.trim()) texts.push(t);
  });
  if (!texts.length) throw new Error(`${name} holds no text.`);
  if (texts.length > LIMITS.corpusLines) throw new Error(`${name} has ${texts.length} texts; a corpus holds at most ${LIMITS.corpusLines}.`);
  const long = texts.findIndex((t) => t.length > LIMITS.corpusLineChars);
  if (long >= 0) throw new Error(`text ${long + 1} of ${name} is ${texts[long].length} characters long; split texts longer than ${LIMITS.corpusLineChars}.`);
  return texts;
}

function setCorpus(texts, name = "") {
  corpus = texts;
  $("corpus-info").textContent = texts
    ? `${texts.length} text${texts.length === 1 ? "" : "s"} from ${name}`
    : "Default: the shipped corpus of a few hundred English sentences.";
  $("corpus-info").classList.toggle("muted", !texts);
  $("corpus-clear").hidden = !texts;
  $("corpus-file").dataset.texts = texts ? String(texts.length) : "";
}

$("corpus-file").addEventListener("change", async () => {
  const file = $("corpus-file").files[0];
  clearError();
  if (!file) { setCorpus(null); return; }
  try {
    if (file.size > 4 * 1024 * 1024) throw new Error(`${file.name} is ${(file.size / 1048576).toFixed(1)} MB; a corpus file may be up to 4 MB.`);
    setCorpus(parseCorpus(file.name, await file.text()), file.name);
  } catch (err) {
    $("corpus-file").value = "";
    setCorpus(null);
    showError(err.message || String(err), { title: "Could not use this corpus" });
  }
});
$("corpus-clear").addEventListener("click", () => { $("corpus-file").value = ""; setCorpus(null); });

for (const r of form.querySelectorAll('input[name="kind"]')) r.addEventListener("change", syncKind);

// `/?kind=circuit&prompt=…&target=…&contrast=…`: prefilled from another page ("Build circuit for this prompt").
{
  const q = new URLSearchParams(window.location.search);
  if (q.get("kind") === "circuit") {
    const radio = form.querySelector('input[name="kind"][value="circuit"]');
    if (radio) radio.checked = true;
  }
  for (const key of ["prompt", "target", "contrast"]) if (q.has(key)) $(key).value = q.get(key);
  syncKind();
}

$("prompt").addEventListener("keydown", (e) => {
  if (e.key === "Enter" && (e.ctrlKey || e.metaKey)) {
    e.preventDefault();
    form.requestSubmit();
  }
});

for (const btn of document.querySelectorAll(".chip-btn[data-prompt]")) {
  btn.addEventListener("click", () => {
    $("prompt").value = btn.dataset.prompt;
    $("target").value = btn.dataset.target || "";
    $("contrast").value = btn.dataset.contrast || "";
    $("prompt").focus();
  });
}

for (const t of document.querySelectorAll("time.reltime")) {
  const iso = t.getAttribute("datetime");
  t.title = iso;
  t.textContent = relativeTime(iso);
}

// Coming back with the browser's back button: don't leave the form disabled.
window.addEventListener("pageshow", (e) => { if (e.persisted) { setBusy(false); jobCard.hidden = true; syncKind(); } });
document.body.dataset.ready = "1";
