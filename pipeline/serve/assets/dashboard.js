// personaflow's dashboard: reads the API of the server that served it and draws SVG charts.
// No libraries and nothing from elsewhere: the server's Content-Security-Policy allows this
// server only. The page is ready for a reader (and for the test that opens it) when
// <body data-ready="true">.
"use strict";

const SVG = "http://www.w3.org/2000/svg";
const POINTS = 360;
const REFRESH_MS = 10000;
const PALETTE = [
  "#4e79a7", "#f28e2b", "#e15759", "#76b7b2", "#59a14f",
  "#edc948", "#b07aa1", "#ff9da7", "#9c755f", "#bab0ac",
];
const ACTION_COLOURS = { scale_out: "#e15759", scale_in: "#4e79a7", hold: "#9c755f" };

const state = {
  token: null,
  measure: "mean_probability",
  timeline: null,
  drift: null,
  colours: new Map(),
};

function byId(id) {
  return document.getElementById(id);
}

function colour(name) {
  if (!state.colours.has(name)) {
    state.colours.set(name, PALETTE[state.colours.size % PALETTE.length]);
  }
  return state.colours.get(name);
}

function el(tag, attrs, text) {
  const ns = ["svg", "g", "path", "line", "rect", "circle", "text", "title"].includes(tag);
  const e = ns ? document.createElementNS(SVG, tag) : document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v !== undefined && v !== null) e.setAttribute(k, String(v));
  }
  if (text !== undefined) e.textContent = String(text);
  return e;
}

function utc(ms) {
  if (ms === null || ms === undefined) return "–";
  return new Date(ms).toISOString().slice(0, 16).replace("T", " ");
}

function shortTime(ms, span) {
  const iso = new Date(ms).toISOString();
  return span > 2 * 86400000 ? iso.slice(5, 16).replace("T", " ") : iso.slice(11, 16);
}

function fmt(v) {
  if (v === null || v === undefined || Number.isNaN(v)) return "–";
  const a = Math.abs(v);
  if (a >= 1e9) return (v / 1e9).toFixed(1) + "G";
  if (a >= 1e6) return (v / 1e6).toFixed(1) + "M";
  if (a >= 1e4) return (v / 1e3).toFixed(0) + "k";
  if (a >= 100) return v.toFixed(0);
  if (a >= 1) return v.toFixed(2);
  return v.toFixed(3);
}

// --- the API -------------------------------------------------------------------------------

class Unauthorized extends Error {}

async function api(path) {
  const headers = { Accept: "application/json" };
  if (state.token) headers.Authorization = "Bearer " + state.token;
  const r = await fetch(path, { headers });
  if (r.status === 401) throw new Unauthorized("a token is needed");
  const body = await r.json();
  if (!r.ok) {
    const e = new Error(body.error ? body.error.message : r.statusText);
    e.status = r.status;
    throw e;
  }
  return body;
}

function takeToken() {
  const m = /(?:^#|&)token=([^&]+)/.exec(location.hash);
  if (m) {
    sessionStorage.setItem("personaflow-token", decodeURIComponent(m[1]));
    history.replaceState(null, "", location.pathname + location.search);
  }
  state.token = sessionStorage.getItem("personaflow-token");
}

// --- charts ----------------------------------------------------------------------------------

const MARGIN = { top: 12, right: 16, bottom: 42, left: 56 };

function frame(container, name, height, left) {
  container.replaceChildren();
  const width = Math.max(320, Math.round(container.clientWidth || 560));
  const svg = el("svg", {
    class: "plot", "data-chart": name, width, height,
    viewBox: `0 0 ${width} ${height}`, role: "img",
  });
  container.append(svg);
  return { svg, width, height,
    x0: left || MARGIN.left, x1: width - MARGIN.right, y0: height - MARGIN.bottom, y1: MARGIN.top };
}

function ticks(lo, hi, n) {
  if (!(hi > lo)) return [lo];
  const step0 = (hi - lo) / n;
  const mag = Math.pow(10, Math.floor(Math.log10(step0)));
  const step = [1, 2, 5, 10].map((m) => m * mag).find((s) => s >= step0);
  const out = [];
  for (let t = Math.ceil(lo / step) * step; t <= hi + step * 1e-9; t += step) out.push(t);
  return out;
}

function scale(d0, d1, r0, r1) {
  const span = d1 - d0 || 1;
  return (v) => r0 + ((v - d0) / span) * (r1 - r0);
}

function axes(f, sx, sy, xDomain, yDomain, xLabel, yLabel, xTime) {
  const g = el("g", { class: "axes" });
  for (const t of ticks(yDomain[0], yDomain[1], 5)) {
    const y = sy(t);
    g.append(el("line", { class: "grid", x1: f.x0, x2: f.x1, y1: y, y2: y }));
    g.append(el("text", { class: "tick", x: f.x0 - 6, y: y + 4, "text-anchor": "end" }, fmt(t)));
  }
  const span = xDomain[1] - xDomain[0];
  const xt = xTime ? timeTicks(xDomain[0], xDomain[1]) : ticks(xDomain[0], xDomain[1], 5);
  for (const t of xt) {
    const x = sx(t);
    g.append(el("line", { class: "tick-mark", x1: x, x2: x, y1: f.y0, y2: f.y0 + 4 }));
    g.append(el("text", { class: "tick", x, y: f.y0 + 16, "text-anchor": "middle" },
      xTime ? shortTime(t, span) : fmt(t)));
  }
  g.append(el("line", { class: "axis", x1: f.x0, x2: f.x1, y1: f.y0, y2: f.y0 }));
  g.append(el("line", { class: "axis", x1: f.x0, x2: f.x0, y1: f.y0, y2: f.y1 }));
  g.append(el("text", { class: "axis-label", "data-axis": "x",
    x: (f.x0 + f.x1) / 2, y: f.height - 6, "text-anchor": "middle" }, xLabel));
  g.append(el("text", { class: "axis-label", "data-axis": "y",
    transform: `translate(14 ${(f.y0 + f.y1) / 2}) rotate(-90)`, "text-anchor": "middle" }, yLabel));
  f.svg.append(g);
}

function timeTicks(lo, hi) {
  const steps = [60e3, 300e3, 900e3, 1800e3, 3600e3, 3 * 3600e3, 6 * 3600e3, 12 * 3600e3,
    86400e3, 2 * 86400e3, 7 * 86400e3, 30 * 86400e3];
  const step = steps.find((s) => (hi - lo) / s <= 6) || steps[steps.length - 1];
  const out = [];
  for (let t = Math.ceil(lo / step) * step; t <= hi; t += step) out.push(t);
  return out.length ? out : [lo];
}

function legend(container, names) {
  const ul = el("ul", { class: "legend" });
  for (const n of names) {
    const li = el("li", { class: "legend-item", "data-series": n });
    const swatch = el("span", { class: "swatch" });
    swatch.style.background = colour(n);
    li.append(swatch, document.createTextNode(n));
    ul.append(li);
  }
  container.append(ul);
}

function empty(container, name, message) {
  container.replaceChildren(el("p", { class: "empty", "data-chart": name }, message));
}

// A line per series over shared x values; a null value breaks the line.
function lineChart(container, name, x, series, xLabel, yLabel) {
  const values = series.flatMap((s) => s.values).filter((v) => v !== null);
  if (!x.length || !values.length) return empty(container, name, "No data yet.");
  const f = frame(container, name, 260);
  const xDomain = [x[0], x[x.length - 1] === x[0] ? x[0] + 1 : x[x.length - 1]];
  const yMax = Math.max(...values);
  const yDomain = [Math.min(0, ...values), yMax > 0 ? yMax * 1.05 : 1];
  const sx = scale(xDomain[0], xDomain[1], f.x0, f.x1);
  const sy = scale(yDomain[0], yDomain[1], f.y0, f.y1);
  axes(f, sx, sy, xDomain, yDomain, xLabel, yLabel, true);
  for (const s of series) {
    let d = "";
    let pen = "M";
    s.values.forEach((v, i) => {
      if (v === null) { pen = "M"; return; }
      d += `${pen}${sx(x[i]).toFixed(1)},${sy(v).toFixed(1)}`;
      pen = "L";
    });
    f.svg.append(el("path", { class: "series", "data-series": s.name, d, stroke: colour(s.name) }));
  }
  hover(f, x, series, sx);
  legend(container, series.map((s) => s.name));
}

// A rule and the values at the nearest point, under the pointer.
function hover(f, x, series, sx) {
  const rule = el("line", { class: "rule", y1: f.y0, y2: f.y1, visibility: "hidden" });
  const catcher = el("rect", { class: "catcher", x: f.x0, y: f.y1,
    width: f.x1 - f.x0, height: f.y0 - f.y1 });
  f.svg.append(rule, catcher);
  const tip = byId("tooltip");
  catcher.addEventListener("mousemove", (ev) => {
    const box = f.svg.getBoundingClientRect();
    const px = ((ev.clientX - box.left) / box.width) * f.width;
    let best = 0;
    x.forEach((t, i) => { if (Math.abs(sx(t) - px) < Math.abs(sx(x[best]) - px)) best = i; });
    rule.setAttribute("x1", sx(x[best]));
    rule.setAttribute("x2", sx(x[best]));
    rule.setAttribute("visibility", "visible");
    tip.replaceChildren(el("div", { class: "tip-time" }, utc(x[best]) + " UTC"));
    for (const s of series) {
      const row = el("div", { class: "tip-row" });
      const swatch = el("span", { class: "swatch" });
      swatch.style.background = colour(s.name);
      row.append(swatch, document.createTextNode(`${s.name}: ${fmt(s.values[best])}`));
      tip.append(row);
    }
    tip.hidden = false;
    tip.style.left = ev.pageX + 14 + "px";
    tip.style.top = ev.pageY + 14 + "px";
  });
  catcher.addEventListener("mouseleave", () => {
    rule.setAttribute("visibility", "hidden");
    tip.hidden = true;
  });
}

function drawResonance() {
  const r = state.timeline.resonance;
  const series = r.series.map((s) => ({ name: s.name, values: s[state.measure] }));
  lineChart(byId("chart-resonance"), "resonance", r.window_end, series, "window end (UTC)",
    state.measure === "mean_probability" ? "mean resonance probability" : "share of top segments");
}

function drawSizes() {
  const s = state.timeline.segment_sizes;
  lineChart(byId("chart-sizes"), "segment-sizes", s.window_end,
    s.series.map((x) => ({ name: x.name, values: x.values })), "window end (UTC)", "profiles");
}

function drawForecast() {
  const s = state.timeline.forecast_error;
  lineChart(byId("chart-forecast"), "forecast-error", s.window_end,
    s.series.map((x) => ({ name: x.name, values: x.values })), "target window end (UTC)",
    "mean absolute error (requests)");
}

// Each drift event as a bar from onset to detection on its scope's row, coloured by the
// scaling action; the latest events listed with their recommendation below.
function drawDrift() {
  const container = byId("chart-drift");
  const table = byId("drift-table");
  const { drift, scaling } = state.drift;
  table.replaceChildren();
  if (!drift.length) {
    empty(container, "drift", "No drift detected.");
    return;
  }
  const key = (e) => `${e.scope}:${e.scope_id}`;
  const scopes = [...new Set(drift.map(key))].sort();
  const rowHeight = 22;
  const left = Math.max(MARGIN.left, 12 + 7 * Math.max(...scopes.map((k) => k.length)));
  const f = frame(container, "drift", MARGIN.top + MARGIN.bottom + rowHeight * scopes.length + 8,
    left);
  const times = drift.flatMap((e) => [e.onset_window_end, e.window_end]);
  const x = state.timeline.resonance.window_end;
  let lo = Math.min(...times, ...(x.length ? [x[0]] : []));
  let hi = Math.max(...times, ...(x.length ? [x[x.length - 1]] : []));
  if (hi === lo) hi = lo + 60000;
  const sx = scale(lo, hi, f.x0, f.x1);
  const sy = (k) => f.y1 + 4 + rowHeight * scopes.indexOf(k) + rowHeight / 2;
  const g = el("g", { class: "axes" });
  for (const t of timeTicks(lo, hi)) {
    g.append(el("line", { class: "grid", x1: sx(t), x2: sx(t), y1: f.y1, y2: f.y0 }));
    g.append(el("text", { class: "tick", x: sx(t), y: f.y0 + 16, "text-anchor": "middle" },
      shortTime(t, hi - lo)));
  }
  for (const k of scopes) {
    g.append(el("text", { class: "tick scope", x: f.x0 - 6, y: sy(k) + 4, "text-anchor": "end" }, k));
  }
  g.append(el("line", { class: "axis", x1: f.x0, x2: f.x1, y1: f.y0, y2: f.y0 }));
  g.append(el("text", { class: "axis-label", "data-axis": "x",
    x: (f.x0 + f.x1) / 2, y: f.height - 6, "text-anchor": "middle" }, "window end (UTC)"));
  f.svg.append(g);
  const plan = new Map(scaling.map((s) => [`${s.window_end}|${key(s)}`, s]));
  for (const e of drift) {
    const s = plan.get(`${e.window_end}|${key(e)}`);
    const c = ACTION_COLOURS[e.action] || "#555";
    const y = sy(key(e));
    const mark = el("g", { class: "drift-event", "data-scope": key(e), "data-action": e.action });
    mark.append(el("line", { class: "drift-span", x1: sx(e.onset_window_end), x2: sx(e.window_end),
      y1: y, y2: y, stroke: c }));
    mark.append(el("circle", { cx: sx(e.window_end), cy: y, r: 5, fill: c }));
    mark.append(el("title", {}, `${key(e)} drifted (score ${fmt(e.score)}, p ${fmt(e.p_value)}); ` +
      `moved: ${e.moved_features.join(", ")}; ${e.action}` +
      (s ? `: ${s.current_instances} → ${s.recommended_instances} instances` : "")));
    f.svg.append(mark);
  }
  const head = el("tr");
  for (const h of ["detected (UTC)", "scope", "score", "moved features", "users", "action",
    "instances"]) head.append(el("th", {}, h));
  table.append(head);
  for (const e of drift.slice(-12).reverse()) {
    const s = plan.get(`${e.window_end}|${key(e)}`);
    const tr = el("tr", { "data-action": e.action });
    for (const v of [utc(e.window_end), key(e), fmt(e.score), e.moved_features.join(", "),
      e.users, e.action, s ? `${s.current_instances} → ${s.recommended_instances}` : "–"]) {
      tr.append(el("td", {}, v));
    }
    table.append(tr);
  }
}

function drawPersonas() {
  const container = byId("chart-personas");
  const m = state.timeline.persona_map;
  if (!m.personas.length) return empty(container, "persona-map", "No personas yet.");
  const f = frame(container, "persona-map", 300);
  const xs = m.personas.map((p) => p.x);
  const ys = m.personas.map((p) => p.y);
  const pad = (lo, hi) => { const d = (hi - lo) * 0.15 || 1; return [lo - d, hi + d]; };
  const xDomain = pad(Math.min(...xs), Math.max(...xs));
  const yDomain = pad(Math.min(...ys), Math.max(...ys));
  const sx = scale(xDomain[0], xDomain[1], f.x0, f.x1);
  const sy = scale(yDomain[0], yDomain[1], f.y0, f.y1);
  const pct = (v) => (100 * v).toFixed(0) + "%";
  axes(f, sx, sy, xDomain, yDomain, `first principal axis (${pct(m.explained[0])} of variance)`,
    `second axis (${pct(m.explained[1])})`, false);
  const maxSize = Math.max(1, ...m.personas.map((p) => p.size));
  for (const p of m.personas) {
    const name = `persona ${p.persona_id}`;
    const g = el("g", { class: "persona", "data-persona": p.persona_id });
    g.append(el("circle", { cx: sx(p.x), cy: sy(p.y), r: 4 + 22 * Math.sqrt(p.size / maxSize),
      fill: colour(name), "fill-opacity": 0.55, stroke: colour(name) }));
    g.append(el("text", { class: "persona-label", x: sx(p.x), y: sy(p.y) + 4,
      "text-anchor": "middle" }, p.persona_id));
    g.append(el("title", {}, `${name}: ${p.size} users; ${p.top_features.join(", ")}`));
    f.svg.append(g);
  }
  container.append(el("p", { class: "caption" }, `Window ending ${utc(m.window_end)} UTC.`));
}

// --- the user lookup -------------------------------------------------------------------------

function kv(rows) {
  const t = el("table", { class: "kv" });
  for (const [k, v] of rows) {
    const tr = el("tr");
    tr.append(el("th", {}, k), el("td", {}, v));
    t.append(tr);
  }
  return t;
}

function bars(name, items) {
  const rowH = 20;
  const width = 320;
  const label = 120;
  const svg = el("svg", { class: "plot bars", "data-chart": name, width,
    height: rowH * items.length + 4, viewBox: `0 0 ${width} ${rowH * items.length + 4}` });
  items.forEach((it, i) => {
    const y = i * rowH + 2;
    svg.append(el("text", { class: "tick", x: label - 6, y: y + 13, "text-anchor": "end" }, it.name));
    svg.append(el("rect", { class: "bar", "data-segment": it.name, x: label, y,
      width: Math.max(1, (width - label - 48) * it.value), height: rowH - 5, fill: colour(it.name) }));
    svg.append(el("text", { class: "tick", x: label + (width - label - 48) * it.value + 6,
      y: y + 13 }, (100 * it.value).toFixed(1) + "%"));
  });
  return svg;
}

async function lookUp(id) {
  const out = byId("user-result");
  out.replaceChildren(el("p", { class: "hint" }, "looking up…"));
  let u;
  try {
    u = await api("/v1/users/" + encodeURIComponent(id));
  } catch (e) {
    out.replaceChildren(el("p", { class: "error", "data-user-missing": id },
      e.status === 404 ? `No user ${id} in the store.` : `Lookup failed: ${e.message}`));
    return;
  }
  const box = el("div", { "data-user": u.user_id });
  box.append(el("h3", { class: "user-title" }, u.user_id),
    el("p", { class: "hint" }, `latest window ${utc(u.window_end)} UTC`));
  if (u.resonance) {
    box.append(el("h4", {}, `Resonance — top segment ${u.resonance.top_segment || "none"}`));
    const items = u.resonance.segments
      .map((s) => ({ name: s.segment, value: s.probability || 0 }))
      .sort((a, b) => b.value - a.value);
    box.append(bars("user-resonance", items));
  }
  if (u.persona) {
    const p = u.persona;
    box.append(el("h4", {}, `Persona ${p.persona_id}`));
    box.append(kv(p.persona_ids.map((id, i) => [`persona ${id}`,
      (100 * p.probabilities[i]).toFixed(1) + "%"])));
  }
  if (u.policy) {
    const p = u.policy;
    box.append(el("h4", {}, "Policy"));
    box.append(kv([
      ["class", `${p.diffserv_class} (DSCP ${p.dscp})`],
      ["endpoint", p.endpoint_class],
      ["allocated", fmt(p.allocated_bps) + " bit/s"],
      ["floor – ceiling", `${fmt(p.floor_bps)} – ${fmt(p.ceiling_bps)} bit/s`],
      ["latency target", fmt(p.latency_target_ms) + " ms"],
      ["request limit", fmt(p.request_limit_rps) + " /s"],
    ]));
  }
  if (u.socket_profile) {
    box.append(el("h4", {}, "Socket profile"));
    const rows = Object.entries(u.socket_profile)
      .filter(([, v]) => typeof v !== "object")
      .map(([k, v]) => [k.replaceAll("_", " "), typeof v === "number" ? fmt(v) : String(v)]);
    box.append(kv(rows));
  }
  out.replaceChildren(box);
}

// --- the page --------------------------------------------------------------------------------

function drawAll() {
  drawResonance();
  drawSizes();
  drawForecast();
  drawDrift();
  drawPersonas();
}

async function refresh() {
  try {
    const [timeline, drift] = await Promise.all([
      api(`/v1/timeline?points=${POINTS}`),
      api("/v1/drift"),
    ]);
    state.timeline = timeline;
    state.drift = drift;
    byId("token-form").hidden = true;
    byId("status").textContent = `latest window ${utc(timeline.latest_window_end)} UTC · ` +
      `${timeline.users.toLocaleString("en")} users · ${timeline.windows} windows` +
      (timeline.bucket_windows > 1 ? ` (${timeline.bucket_windows} per point)` : "");
    const input = byId("user-id");
    if (!input.placeholder.startsWith("e.g.") && timeline.example_user) {
      input.placeholder = "e.g. " + timeline.example_user;
    }
    drawAll();
    document.body.dataset.ready = "true";
  } catch (e) {
    if (e instanceof Unauthorized) {
      byId("status").textContent = "This server needs a bearer token.";
      byId("token-form").hidden = false;
    } else {
      byId("status").textContent = "Could not load: " + e.message;
    }
  }
}

function start() {
  takeToken();
  byId("token-form").addEventListener("submit", (ev) => {
    ev.preventDefault();
    state.token = byId("token").value.trim();
    sessionStorage.setItem("personaflow-token", state.token);
    refresh();
  });
  byId("user-form").addEventListener("submit", (ev) => {
    ev.preventDefault();
    const id = byId("user-id").value.trim();
    if (id) lookUp(id);
  });
  for (const [id, measure] of [["resonance-mean", "mean_probability"], ["resonance-top", "top_share"]]) {
    byId(id).addEventListener("click", () => {
      state.measure = measure;
      byId("resonance-mean").classList.toggle("on", measure === "mean_probability");
      byId("resonance-top").classList.toggle("on", measure === "top_share");
      if (state.timeline) drawResonance();
    });
  }
  let width = window.innerWidth;
  window.addEventListener("resize", () => {
    if (state.timeline && Math.abs(window.innerWidth - width) > 40) {
      width = window.innerWidth;
      drawAll();
    }
  });
  refresh();
  setInterval(refresh, REFRESH_MS);
}

start();
