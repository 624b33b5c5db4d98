// Small DOM helpers. Text always goes in through textContent, never innerHTML, so anything a user
// typed (or a token the model produced) is shown as text.

/** el("div", {class: "x", title: "t", dataset: {a: 1}, on: {click: fn}}, child, "text", ...) */
export function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === null || value === undefined || value === false) continue;
    if (key === "class") node.className = value;
    else if (key === "text") node.textContent = String(value);
    else if (key === "dataset") Object.assign(node.dataset, value);
    else if (key === "style" && typeof value === "object") Object.assign(node.style, value);
    else if (key === "on") for (const [ev, fn] of Object.entries(value)) node.addEventListener(ev, fn);
    else if (value === true) node.setAttribute(key, "");
    else node.setAttribute(key, String(value));
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined || child === false) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

export function clear(node) {
  while (node.firstChild) node.removeChild(node.firstChild);
  return node;
}

/** Make whitespace in a token visible: newlines and tabs get symbols, spaces stay (CSS white-space: pre). */
export function tokenText(tok) {
  if (tok === null || tok === undefined) return "";
  const s = String(tok);
  if (s === "") return "∅";
  if (/^[ \u00a0]+$/.test(s)) return s.replace(/[ \u00a0]/g, "␣");
  return s.replace(/\r/g, "␍").replace(/\n/g, "↵").replace(/\t/g, "⇥");
}

/** A token chip. */
export function tokenChip(tok, extraClass = "") {
  return el("span", { class: `tok ${extraClass}`.trim(), title: JSON.stringify(String(tok ?? "")) }, tokenText(tok));
}

export function fmtProb(p) {
  if (p === null || p === undefined || Number.isNaN(p)) return "—";
  const pct = p * 100;
  if (pct === 0) return "0%";
  if (pct < 0.01) return "<0.01%";
  if (pct < 1) return `${pct.toFixed(2)}%`;
  if (pct < 10) return `${pct.toFixed(1)}%`;
  return `${pct.toFixed(1)}%`;
}

export function fmtDeltaProb(d) {
  if (d === null || d === undefined || Number.isNaN(d)) return "—";
  const pts = d * 100;
  const sign = pts > 0 ? "+" : pts < 0 ? "−" : "±";
  const a = Math.abs(pts);
  return `${sign}${a < 0.1 && a > 0 ? a.toFixed(3) : a.toFixed(1)} pts`;
}

export function fmtNum(x, digits = 3) {
  if (x === null || x === undefined || Number.isNaN(Number(x))) return "—";
  const v = Number(x);
  const a = Math.abs(v);
  if (a === 0) return "0";
  if (a < 1e-3 || a >= 1e5) return v.toExponential(2);
  return String(parseFloat(v.toPrecision(digits)));
}

/** Diverging colour for a value in [-1, 1]: red (negative) → light grey → blue (positive). */
export function divergingColor(v) {
  const t = Math.max(-1, Math.min(1, Number(v) || 0));
  const mid = [246, 246, 248];
  const pos = [33, 102, 172];
  const neg = [178, 24, 43];
  const end = t >= 0 ? pos : neg;
  const a = Math.abs(t);
  const c = mid.map((m, i) => Math.round(m + (end[i] - m) * a));
  return `rgb(${c[0]}, ${c[1]}, ${c[2]})`;
}

/** Text colour that stays readable on divergingColor(v). */
export function inkOn(v) {
  return Math.abs(v) > 0.55 ? "#fff" : "#1b2130";
}

export function relativeTime(iso) {
  const t = Date.parse(iso);
  if (Number.isNaN(t)) return iso;
  const s = Math.round((Date.now() - t) / 1000);
  if (s < 45) return "just now";
  const m = Math.round(s / 60);
  if (m < 60) return `${m} min ago`;
  const h = Math.round(m / 60);
  if (h < 24) return `${h} h ago`;
  const d = Math.round(h / 24);
  if (d < 30) return `${d} d ago`;
  return new Date(t).toLocaleDateString();
}

/** A function that runs ``draw`` at most once per animation frame (slider drags fire many events). */
export function frameScheduler(draw) {
  let pending = false;
  return () => {
    if (pending) return;
    pending = true;
    requestAnimationFrame(() => {
      pending = false;
      draw();
    });
  };
}

/** After a plotly render started at ``t0``: record its time, mark the graph ready, tell the page. */
export function afterRender(graph, t0, rendered) {
  return Promise.resolve(rendered).then(() => {
    graph.el.dataset.renderMs = String(Math.round(performance.now() - t0));
    graph.el.dataset.ready = "1";
    if (graph.handlers.onRender) graph.handlers.onRender(graph.shown);
  });
}
