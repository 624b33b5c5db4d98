// Home page: the analysis form. POST /api/analyses -> 200 (cached: go to the permalink) or 202 (a job:
// follow /api/jobs/{id}/events with EventSource, showing phase, progress and queue position, with
// Cancel = DELETE /api/jobs/{id}; on `done`, go to the permalink).

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
};

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
  submitBtn.querySelector(".btn-label").textContent = busy ? "Analyzing…" : "Analyze";
  form.classList.toggle("busy", busy);
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
  $("job-message").textContent = j.message || (j.status === "queued" ? "Another analysis is running; yours starts next." : "");
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
    cancelled("It finished before it could be cancelled; it is in Recent analyses.");
    return;
  }
  stopFollowing();
  const url = (j && (j.url || (j.result && j.result.url))) || (job && job.url);
  if (url) {
    showJob({ ...(job || {}), ...(j || {}), status: "done", phase: "done", progress: 1, message: "Opening the analysis…" });
    window.location.assign(url);
  } else if (j && j.result_id) {
    window.location.assign(`/a/${encodeURIComponent(j.result_id)}`);
  } else {
    fail({ message: "The analysis finished but the server gave no link to it. Reload the home page and open it from Recent analyses." });
  }
}

function fail(j, title = "Analysis failed") {
  stopFollowing();
  const err = j && j.error;
  let message = "The analysis did not finish.";
  let code = null;
  if (err && typeof err === "object") { message = err.message || message; code = err.code || null; }
  else if (typeof err === "string" && err) message = err;
  else if (j && j.message) message = j.message;
  jobCard.hidden = true;
  setBusy(false);
  showError(new ApiError(0, code, message), { title });
}

function cancelled(message = "Analysis cancelled") {
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

form.addEventListener("submit", async (e) => {
  e.preventDefault();
  clearError();
  const prompt = $("prompt").value;
  if (!prompt.trim()) {
    showError("Type a prompt to analyze, for example “The capital of France is”.", { title: "The prompt is empty" });
    $("prompt").focus();
    return;
  }
  const method = (form.querySelector('input[name="method"]:checked') || {}).value || "attribution";
  const k = Math.round(Number($("k").value));
  if (!Number.isFinite(k) || k < 1 || k > 50) {
    showError("K is the number of neurons kept per layer; choose a whole number from 1 to 50.", { title: "Invalid K" });
    $("k").focus();
    return;
  }
  const body = { prompt, method, k };
  const target = $("target").value;
  const contrast = $("contrast").value;
  if (target) body.target = target;
  if (contrast) body.contrast = contrast;
  const model = $("model").value;
  if (model) body.model = model;
  if (method === "ig") body.ig_steps = Math.round(Number($("ig_steps").value)) || 16;

  setBusy(true);
  try {
    const { status, data } = await api("/api/analyses", { method: "POST", body });
    if (data && data.analysis && data.analysis.url) {
      window.location.assign(data.analysis.url);
    } else if (data && data.job) {
      follow(data.job);
    } else if (status === 200 && data && data.url) {
      window.location.assign(data.url);
    } else {
      throw new ApiError(status, "unexpected_answer", "The server's answer had neither an analysis nor a job.");
    }
  } catch (err) {
    setBusy(false);
    showError(err);
  }
});

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
window.addEventListener("pageshow", (e) => { if (e.persisted) { setBusy(false); jobCard.hidden = true; } });
document.body.dataset.ready = "1";
