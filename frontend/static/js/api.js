// Fetch wrapper for the CircuitScope JSON API, and the page-level error banner / toast.
//
// Every API error is JSON `{"error": {"code", "message"}}`; ApiError carries both, plus the HTTP
// status and Retry-After, and showError() renders it as a readable banner (text only, never HTML).

export class ApiError extends Error {
  constructor(status, code, message, retryAfter = null) {
    super(message);
    this.name = "ApiError";
    this.status = status;
    this.code = code;
    this.retryAfter = retryAfter;
  }
}

function messageFrom(data, res) {
  const err = data && typeof data === "object" ? data.error : null;
  if (err && typeof err === "object" && err.message) return [err.code || `http_${res.status}`, String(err.message)];
  if (typeof err === "string") return [`http_${res.status}`, err];
  if (data && typeof data.detail === "string") return [`http_${res.status}`, data.detail];
  if (data && Array.isArray(data.detail)) {
    const parts = data.detail.map((d) => {
      const where = Array.isArray(d.loc) ? d.loc.filter((x) => x !== "body").join(".") : "";
      return where ? `${where}: ${d.msg}` : String(d.msg);
    });
    return ["invalid_request", parts.join("; ")];
  }
  const statusText = res.statusText ? ` ${res.statusText}` : "";
  return [`http_${res.status}`, `The server answered ${res.status}${statusText}. Try again in a moment.`];
}

/**
 * Call the API. Resolves to {status, data}; rejects with ApiError on a non-2xx answer or a network
 * failure (status 0). `body` is sent as JSON.
 */
export async function api(path, { method = "GET", body, signal } = {}) {
  const opts = { method, headers: { Accept: "application/json" }, signal };
  if (body !== undefined) {
    opts.headers["Content-Type"] = "application/json";
    opts.body = JSON.stringify(body);
  }
  let res;
  try {
    res = await fetch(path, opts);
  } catch (e) {
    if (e && e.name === "AbortError") throw e;
    throw new ApiError(0, "network_error",
      "Could not reach the CircuitScope server. Check that it is running and try again.");
  }
  const text = await res.text();
  let data = null;
  if (text) {
    try { data = JSON.parse(text); } catch { data = null; }
  }
  if (!res.ok) {
    const [code, message] = messageFrom(data, res);
    throw new ApiError(res.status, code, message, res.headers.get("Retry-After"));
  }
  return { status: res.status, data };
}

/** api() that resolves to the JSON body only. */
export async function apiJSON(path, opts) {
  return (await api(path, opts)).data;
}

const TITLES = {
  network_error: "Server unreachable",
  prompt_too_long: "Prompt too long",
  bad_input: "Invalid input",
  invalid_request: "Invalid request",
  target_not_single_token: "Target is not a single token",
  neuron_out_of_range: "No such neuron",
  unknown_model: "Unknown model",
  unsupported_architecture: "Unsupported architecture",
  not_found: "Not found",
  queue_full: "Server busy",
  overloaded: "Server busy",
  cancelled: "Cancelled",
};

function humanize(code) {
  if (!code) return "Error";
  if (TITLES[code]) return TITLES[code];
  const s = String(code).replace(/^http_/, "HTTP ").replace(/_/g, " ");
  return s.charAt(0).toUpperCase() + s.slice(1);
}

let bannerBound = false;

/** Show an error (ApiError, Error, string, or {code, message}) in the page banner. */
export function showError(err, { title } = {}) {
  const banner = document.getElementById("banner");
  if (!banner) { console.error(err); return; }
  let code = null;
  let message = "";
  if (typeof err === "string") message = err;
  else if (err && typeof err === "object") {
    code = err.code || null;
    message = err.message || String(err);
  }
  if (err && err.retryAfter) message += ` Try again in ${err.retryAfter} s.`;
  banner.querySelector(".banner-title").textContent = title || humanize(code);
  banner.querySelector(".banner-message").textContent = message;
  banner.dataset.code = code || "";
  banner.hidden = false;
  if (!bannerBound) {
    bannerBound = true;
    banner.querySelector(".banner-close").addEventListener("click", clearError);
  }
}

export function clearError() {
  const banner = document.getElementById("banner");
  if (banner) banner.hidden = true;
}

let toastTimer = null;

/** A short, self-dismissing status message at the bottom of the page. */
export function toast(message, ms = 2600) {
  const el = document.getElementById("toast");
  if (!el) return;
  el.textContent = message;
  el.hidden = false;
  el.classList.add("show");
  clearTimeout(toastTimer);
  toastTimer = setTimeout(() => {
    el.classList.remove("show");
    setTimeout(() => { el.hidden = true; }, 250);
  }, ms);
}

/** Read a `<script type="application/json">` data block; null when absent or empty. */
export function readJSON(id) {
  const el = document.getElementById(id);
  if (!el) return null;
  const text = el.textContent.trim();
  if (!text) return null;
  try { return JSON.parse(text); } catch (e) { console.error(`bad JSON in #${id}`, e); return null; }
}
