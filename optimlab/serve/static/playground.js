// The playground: draws what the server computes (/api/*). The whole state lives in the URL.
"use strict";
const COLORS = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2",
  "#7f7f7f", "#bcbd22", "#17becf", "#393b79", "#637939", "#8c6d31", "#843c39", "#7b4173", "#3182bd"];
const $ = (id) => document.getElementById(id);
let REGISTRY = {}, FUNCTIONS = {}, SCENARIOS = {};
let plotlyLoaded;
const plotlyReady = new Promise((resolve) => { plotlyLoaded = resolve; });
// Plotly (4.6 MB) is fetched only once the first view is drawn on a canvas: parsing and running
// it takes the main thread for a second or more, which would otherwise come before anything.
function loadPlotly() {
  if (window.Plotly) { plotlyLoaded(); return; }
  const script = document.createElement("script");
  script.src = "/vendor/plotly.min.js";
  script.async = true;
  script.onload = () => plotlyLoaded();
  document.body.append(script);
}
// the charts: Plotly's once it is there, else the canvas sketch of the contour and the paths
const render = () => (window.Plotly ? draw() : drawQuick());
let state = null, surface = null, result = null, timer = null, sequence = 0;

// ---- spec strings (the CLI's syntax: name:key=value:key=value, items comma-separated) ----------
function parseValue(text) {
  if (text === "true" || text === "false") return text === "true";
  if (text.includes("/")) return text.split("/").map(Number);
  const number = Number(text);
  return text !== "" && !Number.isNaN(number) ? number : text;
}
function formatValue(value) {
  if (Array.isArray(value)) return value.map(formatValue).join("/");
  if (typeof value === "number") return String(Number(value.toPrecision(4)));
  return String(value);
}
function parseSpec(spec) {
  return spec.split(",").filter((s) => s.trim()).map((item) => {
    const [name, ...pairs] = item.split(":");
    const values = {};
    for (const pair of pairs) { const [k, v] = pair.split("="); values[k] = parseValue(v); }
    return { name, values };
  });
}
function same(a, b) { return JSON.stringify(a) === JSON.stringify(b); }
function optimizerSpec(opt) {
  const info = REGISTRY[opt.name];
  const parts = [opt.name];
  for (const h of info.hyperparameters) {
    const value = opt.values[h.name];
    if (value === undefined) continue;
    if (h.name === "lr" || !same(value, h.default)) parts.push(`${h.name}=${formatValue(value)}`);
  }
  return parts.join(":");
}
function functionSpec() {
  const parts = [state.function];
  for (const [k, v] of Object.entries(state.fopts)) parts.push(`${k}=${formatValue(v)}`);
  return parts.join(":");
}

// ---- state <-> URL -------------------------------------------------------------------------
function defaults() {
  return { scenario: "", function: "rosenbrock", fopts: {}, steps: 200, noise: 0, seed: 0,
    start: null, theory: false, frame: null, view3d: false,
    optimizers: [{ name: "sgd", values: { lr: 0.002 } }, { name: "momentum", values: { lr: 0.002 } }, { name: "adam", values: { lr: 0.05 } }]
      .map((o) => withDefaults(o)) };
}
function withDefaults(opt) {
  const values = {};
  for (const h of REGISTRY[opt.name].hyperparameters) values[h.name] = h.default;
  return { name: opt.name, values: { ...values, ...opt.values } };
}
function fromURL() {
  const q = new URLSearchParams(location.search);
  const s = defaults();
  if (q.has("sc")) s.scenario = q.get("sc");
  if (q.has("f")) {
    const [{ name, values }] = parseSpec(q.get("f"));
    if (name in FUNCTIONS) { s.function = name; s.fopts = values; }
  }
  if (q.has("s")) s.steps = Number(q.get("s"));
  if (q.has("n")) s.noise = Number(q.get("n"));
  if (q.has("seed")) s.seed = Number(q.get("seed"));
  if (q.has("x") && q.has("y")) s.start = [Number(q.get("x")), Number(q.get("y"))];
  if (q.has("th")) s.theory = q.get("th") === "1";
  if (q.has("t")) s.frame = Number(q.get("t"));
  if (q.has("v3")) s.view3d = q.get("v3") === "1";
  if (q.has("o")) s.optimizers = parseSpec(q.get("o")).filter((o) => o.name in REGISTRY).map(withDefaults);
  return s;
}
function toURL() {
  const q = new URLSearchParams();
  if (state.scenario) q.set("sc", state.scenario);
  q.set("f", functionSpec());
  q.set("o", state.optimizers.map(optimizerSpec).join(","));
  q.set("s", state.steps);
  if (state.noise) { q.set("n", state.noise); q.set("seed", state.seed); }
  if (state.start) { q.set("x", round(state.start[0])); q.set("y", round(state.start[1])); }
  if (state.theory) q.set("th", "1");
  if (state.frame !== null && state.frame < state.steps) q.set("t", state.frame);
  if (state.view3d) q.set("v3", "1");
  history.replaceState(null, "", "?" + q.toString());
}
const round = (v) => Number(v.toPrecision(5));

// ---- controls --------------------------------------------------------------------------------
function sliderControl(label, h, value, onChange) {
  const row = document.createElement("div");
  row.className = "control";
  const name = document.createElement("span");
  name.textContent = label;
  const input = document.createElement("input");
  input.type = "range";
  input.name = label;
  const out = document.createElement("output");
  const { min, max, log } = h.slider;
  if (log) {
    input.min = 0; input.max = 1000; input.step = 1;
    const lo = Math.log10(min), hi = Math.log10(max);
    input.value = Math.round(((Math.log10(Math.max(value, min)) - lo) / (hi - lo)) * 1000);
    input.addEventListener("input", () => {
      const v = Number((10 ** (lo + (hi - lo) * input.value / 1000)).toPrecision(3));
      out.textContent = formatValue(v); onChange(v);
    });
  } else {
    input.min = min; input.max = max; input.step = (max - min) / 1000; input.value = value;
    input.addEventListener("input", () => { const v = Number(input.value); out.textContent = formatValue(v); onChange(v); });
  }
  out.textContent = formatValue(value);
  row.append(name, input, out);
  return row;
}
function controlFor(opt, h) {
  const set = (v) => { opt.values[h.name] = v; changed(); };
  const value = opt.values[h.name];
  if (h.kind === "number") return sliderControl(h.name, h, value, set);
  const row = document.createElement("div");
  row.className = "control";
  const name = document.createElement("span");
  name.textContent = h.name;
  row.append(name);
  if (h.kind === "flag") {
    const box = document.createElement("input");
    box.type = "checkbox"; box.checked = value; box.name = h.name;
    box.addEventListener("change", () => set(box.checked));
    row.append(box);
  } else if (h.kind === "pair") {
    const wrap = document.createElement("span");
    value.forEach((v, i) => {
      const input = document.createElement("input");
      input.type = "number"; input.step = "0.001"; input.min = 0; input.max = 0.9999; input.value = v;
      input.style.width = "70px";
      input.addEventListener("change", () => { const pair = [...opt.values[h.name]]; pair[i] = Number(input.value); set(pair); });
      wrap.append(input);
    });
    row.append(wrap);
  } else if (h.kind === "choice") {
    const select = document.createElement("select");
    for (const c of h.choices) select.append(new Option(c, c, false, c === value));
    select.addEventListener("change", () => set(select.value));
    row.append(select);
  }
  return row;
}
function renderOptimizers() {
  const box = $("optimizers");
  box.innerHTML = "";
  state.optimizers.forEach((opt, index) => {
    const card = document.createElement("div");
    card.className = "opt";
    card.style.borderLeft = `4px solid ${COLORS[index % COLORS.length]}`;
    const head = document.createElement("div");
    head.className = "head";
    const title = document.createElement("b");
    title.textContent = `${opt.name} — ${REGISTRY[opt.name].title}`;
    const remove = document.createElement("button");
    remove.textContent = "remove";
    remove.addEventListener("click", () => { state.optimizers.splice(index, 1); renderOptimizers(); changed(); });
    head.append(title, remove);
    card.append(head);
    for (const h of REGISTRY[opt.name].hyperparameters) card.append(controlFor(opt, h));
    box.append(card);
  });
}
function renderFunctionOptions() {
  const box = $("function-options");
  box.innerHTML = "";
  const info = FUNCTIONS[state.function];
  for (const key of info.takes_options) {
    const label = document.createElement("label");
    label.textContent = key + " ";
    const input = document.createElement("input");
    input.type = "number"; input.name = key;
    input.value = state.fopts[key] ?? info.options[key];
    input.addEventListener("change", () => { state.fopts[key] = Number(input.value); state.start = null; loadSurface(); changed(); });
    label.append(input);
    box.append(label);
  }
  $("formula").textContent = "f(x, y) = " + info.formula;
  $("theory").disabled = !info.is_quadratic;
  if (!info.is_quadratic) state.theory = false;
}
function syncInputs() {
  $("scenario").value = state.scenario;
  $("function").value = state.function;
  $("steps").value = state.steps;
  $("noise").value = state.noise; $("noise-out").textContent = state.noise;
  $("seed").value = state.seed;
  $("theory").checked = state.theory;
  $("view3d").checked = state.view3d;
  renderFunctionOptions();
  renderOptimizers();
}

// ---- server calls ------------------------------------------------------------------------------
async function getJSON(url, options) {
  const response = await fetch(url, options);
  const body = await response.json();
  if (!response.ok) throw new Error(`${body.field ? body.field + ": " : ""}${body.detail}`);
  return body;
}
let surfaceLoading = null;
function loadSurface() {
  surfaceLoading = getJSON(`/api/surface?function=${encodeURIComponent(functionSpec())}&points=80`).then((s) => { surface = s; });
  return surfaceLoading;
}
let pending = null;
function changed() {
  toURL();
  clearTimeout(pending);
  pending = setTimeout(run, 60);
}
async function run() {
  const mine = ++sequence;
  const body = { function: functionSpec(), optimizers: state.optimizers.map(optimizerSpec).join(","),
    steps: state.steps, noise: state.noise, seed: state.seed, theory: state.theory };
  if (state.start) body.start = state.start;
  $("status").textContent = "computing…";
  try {
    if (!body.optimizers) throw new Error("add an optimizer");
    const answer = await getJSON("/api/landscape", { method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body) });
    if (mine !== sequence) return;
    result = answer;
    $("error").textContent = "";
    if (state.frame === null || state.frame > state.steps) state.frame = state.steps;
    await surfaceLoading;
    if (mine !== sequence) return;
    render();
    $("status").textContent = `${answer.runs.length} trajectories`;
  } catch (error) {
    if (mine !== sequence) return;
    $("error").textContent = String(error.message || error);
    $("status").textContent = "";
  }
}

// ---- drawing -----------------------------------------------------------------------------------
function contourLevels(z) {
  let low = Infinity;
  for (const row of z) for (const v of row) if (v !== null && v < low) low = v;
  return z.map((row) => row.map((v) => (v === null ? null : Math.log10(v - low + 1e-3))));
}
function pathTraces(t, three) {
  return result.runs.map((run, i) => {
    const n = Math.min(t + 1, run.x.length);
    const trace = { x: run.x.slice(0, n), y: run.y.slice(0, n), name: run.legend, mode: "lines+markers",
      marker: { size: 3 }, line: { color: COLORS[i % COLORS.length], width: 2 } };
    if (three) { trace.type = "scatter3d"; trace.z = run.loss.slice(0, n); trace.marker = { size: 2 }; }
    return trace;
  });
}
const VIRIDIS = [[68, 1, 84], [59, 82, 139], [33, 145, 140], [94, 201, 98], [253, 231, 37]];
function viridis(u) {
  const k = Math.min(VIRIDIS.length - 2, Math.floor(u * (VIRIDIS.length - 1))), f = u * (VIRIDIS.length - 1) - k;
  return VIRIDIS[k].map((c, i) => Math.round(c + f * (VIRIDIS[k + 1][i] - c)));
}
// the plot area, in the margins Plotly's contour uses, so a click means the same point in both
const QUICK_MARGIN = { l: 40, r: 10, t: 30, b: 82 };  // b: room for the legend
function quickFrame() {
  const gd = $("contour"), W = gd.clientWidth || 600, H = gd.clientHeight || 460, m = QUICK_MARGIN;
  const [xmin, xmax, ymin, ymax] = result ? result.function.box : surface.function.box;
  const w = W - m.l - m.r, h = H - m.t - m.b;
  return { W, H, w, h, px: (x) => m.l + ((x - xmin) / (xmax - xmin)) * w, py: (y) => m.t + ((ymax - y) / (ymax - ymin)) * h,
    x: (px) => xmin + ((px - m.l) / w) * (xmax - xmin), y: (py) => ymax - ((py - m.t) / h) * (ymax - ymin) };
}
// A first view without Plotly: the surface's log levels as an image, the paths up to the frame,
// the start and the minima. Plotly replaces it (draw) once loaded.
function drawQuick() {
  const gd = $("contour");
  let canvas = $("quick");
  if (!canvas) { canvas = document.createElement("canvas"); canvas.id = "quick"; gd.append(canvas); }
  const f = quickFrame(), m = QUICK_MARGIN, ctx = canvas.getContext("2d");
  canvas.width = f.W; canvas.height = f.H;
  const levels = contourLevels(surface.z), rows = levels.length, cols = levels[0].length;
  let low = Infinity, high = -Infinity;
  for (const row of levels) for (const v of row) if (v !== null) { low = Math.min(low, v); high = Math.max(high, v); }
  const image = new ImageData(cols, rows);
  levels.forEach((row, j) => row.forEach((v, i) => {
    const at = 4 * ((rows - 1 - j) * cols + i), rgb = v === null ? [255, 255, 255] : viridis((v - low) / (high - low || 1));
    image.data.set([...rgb, 255], at);
  }));
  const grid = document.createElement("canvas");
  grid.width = cols; grid.height = rows;
  grid.getContext("2d").putImageData(image, 0, 0);
  ctx.drawImage(grid, m.l, m.t, f.w, f.h);
  ctx.save();
  ctx.beginPath(); ctx.rect(m.l, m.t, f.w, f.h); ctx.clip();
  result.runs.forEach((run, i) => {
    ctx.strokeStyle = COLORS[i % COLORS.length]; ctx.lineWidth = 2; ctx.beginPath();
    for (let k = 0; k <= Math.min(state.frame, run.x.length - 1); k++) {
      if (run.x[k] === null || run.y[k] === null) break;
      ctx[k ? "lineTo" : "moveTo"](f.px(run.x[k]), f.py(run.y[k]));
    }
    ctx.stroke();
  });
  ctx.strokeStyle = "red"; ctx.lineWidth = 3; ctx.beginPath();
  ctx.arc(f.px(result.start[0]), f.py(result.start[1]), 5, 0, 2 * Math.PI); ctx.stroke();
  ctx.fillStyle = "white";
  for (const minimum of result.function.minima) { ctx.beginPath(); ctx.arc(f.px(minimum.point[0]), f.py(minimum.point[1]), 4, 0, 2 * Math.PI); ctx.fill(); }
  ctx.restore();
  ctx.fillStyle = "#222"; ctx.font = "13px sans-serif"; ctx.fillText(`${result.function.title} (loading the charts…)`, m.l, 18);
  $("frame-out").textContent = state.frame;
  drawTables();
}
function draw() {
  $("quick")?.remove();
  const t = state.frame;
  $("frame-out").textContent = t;
  const [xmin, xmax, ymin, ymax] = result.function.box;
  const start = result.start;
  const contour = { type: "contour", x: surface.x, y: surface.y, z: contourLevels(surface.z),
    colorscale: "Viridis", showscale: false, ncontours: 30, hoverinfo: "skip", contours: { coloring: "heatmap" } };
  const minima = { x: result.function.minima.map((m) => m.point[0]), y: result.function.minima.map((m) => m.point[1]),
    mode: "markers", name: "minima", marker: { symbol: "star", size: 12, color: "white", line: { color: "black", width: 1 } } };
  const startMarker = { x: [start[0]], y: [start[1]], mode: "markers", name: "start", marker: { size: 11, color: "red", symbol: "circle-open", line: { width: 3 } } };
  const layout = { margin: { l: 40, r: 10, t: 30, b: 30 }, dragmode: false, showlegend: true,
    legend: { orientation: "h", y: -0.12 }, title: { text: result.function.title, font: { size: 13 } },
    xaxis: { range: [xmin, xmax] }, yaxis: { range: [ymin, ymax] }, uirevision: "keep" };
  Plotly.react("contour", [contour, minima, startMarker, ...pathTraces(t, false)], layout, { displayModeBar: false });
  const positive = result.runs.every((run) => run.loss.every((v) => v === null || v > 0));
  const lossTraces = result.runs.map((run, i) => ({ x: [...run.loss.keys()].slice(0, t + 1), y: run.loss.slice(0, t + 1),
    name: run.legend, mode: "lines", line: { color: COLORS[i % COLORS.length] } }));
  Plotly.react("loss", lossTraces, { margin: { l: 50, r: 10, t: 30, b: 40 }, title: { text: "loss vs step", font: { size: 13 } },
    xaxis: { title: "step", range: [0, state.steps] }, yaxis: { type: positive ? "log" : "linear" }, showlegend: false }, { displayModeBar: false });
  $("surface3d").style.display = state.view3d ? "" : "none";
  $("contour").style.display = state.view3d ? "none" : "";
  if (state.view3d) {
    Plotly.react("surface3d", [{ type: "surface", x: surface.x, y: surface.y, z: surface.z, colorscale: "Viridis", showscale: false, opacity: 0.85 },
      ...pathTraces(t, true)], { margin: { l: 0, r: 0, t: 0, b: 0 }, showlegend: false, uirevision: "keep" }, { displayModeBar: false });
  }
  drawTables();
}
const fmt = (v, digits = 3) => (v === null || v === undefined ? "—" : typeof v === "number" ? Number(v.toPrecision(digits)).toString() : String(v));
function table(headers, rows) {
  const head = "<tr>" + headers.map((h) => `<th>${h}</th>`).join("") + "</tr>";
  return "<table>" + head + rows.map((r) => "<tr>" + r.map((c) => `<td>${escapeHTML(c)}</td>`).join("") + "</tr>").join("") + "</table>";
}
const escapeHTML = (s) => String(s).replace(/[&<>"]/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;" })[c]);
function drawTables() {
  $("runs-table").innerHTML = table(["optimizer", "lr", "status", "final loss", "distance to min", "steps to ε"],
    result.runs.map((r) => [r.label, fmt(r.hyperparameters.lr), statusText(r.metrics), fmt(r.metrics.final_loss), fmt(r.metrics.distance_to_min), fmt(r.metrics.steps_to_eps)]));
  const th = result.theory;
  $("theory-table").innerHTML = !th ? "" :
    `<p>theory: λmin=${fmt(th.lambda_min, 4)}, λmax=${fmt(th.lambda_max, 4)}, κ=${fmt(th.condition, 4)}; GD best lr 2/(λmin+λmax)=${fmt(th.gd_lr, 4)}, stability limit 2/λmax=${fmt(th.stability_limit, 4)}; heavy ball α*=${fmt(th.heavy_ball_lr, 4)}, β*=${fmt(th.heavy_ball_momentum, 4)}</p>` +
    table(["optimizer", "role", "ρ theory", "ρ achieved", "steps theory", "steps achieved"],
      th.runs.map((r) => [r.label, r.role, fmt(r.predicted_rate, 4), fmt(r.achieved_rate, 4), fmt(r["predicted_steps_to_1e-6"]), fmt(r["steps_to_1e-6"])]));
}
function statusText(m) {
  if (m.status === "diverged") return `diverged (step ${m.diverged_step})`;
  if (m.status === "left") return `left the plotted region (step ${m.left_step})`;
  return "inside";
}

// ---- the start point: click or drag on the contour --------------------------------------------
function dataPoint(event) {
  const gd = $("contour");
  const full = gd._fullLayout;
  const rect = gd.getBoundingClientRect();
  if (!full) {  // Plotly not there yet: the canvas sketch's frame
    if (!$("quick")) return null;
    const f = quickFrame(), px = event.clientX - rect.left, py = event.clientY - rect.top;
    if (px < QUICK_MARGIN.l || py < QUICK_MARGIN.t || px > QUICK_MARGIN.l + f.w || py > QUICK_MARGIN.t + f.h) return null;
    return [f.x(px), f.y(py)];
  }
  const px = event.clientX - rect.left - full._size.l, py = event.clientY - rect.top - full._size.t;
  if (px < 0 || py < 0 || px > full.xaxis._length || py > full.yaxis._length) return null;
  return [full.xaxis.p2l(px), full.yaxis.p2l(py)];
}
function setupDrag() {
  const gd = $("contour");
  let dragging = false;
  const move = (event) => {
    const point = dataPoint(event);
    if (!point) return;
    state.start = point.map(round);
    $("start-out").textContent = `(${fmt(state.start[0])}, ${fmt(state.start[1])})`;
    state.frame = state.steps;
    changed();
  };
  gd.addEventListener("mousedown", (e) => { dragging = true; move(e); e.preventDefault(); });
  window.addEventListener("mousemove", (e) => { if (dragging) move(e); });
  window.addEventListener("mouseup", () => { dragging = false; });
}

// ---- animation ---------------------------------------------------------------------------------
function setFrame(t) { state.frame = Math.max(0, Math.min(state.steps, t)); toURL(); if (result) render(); }
function play() {
  clearInterval(timer);
  if (state.frame >= state.steps) state.frame = 0;
  const stride = Math.max(1, Math.round(state.steps / 150));
  timer = setInterval(() => { if (state.frame >= state.steps) { clearInterval(timer); return; } setFrame(state.frame + stride); }, 40);
}

// ---- scenarios ---------------------------------------------------------------------------------
async function showLesson(name) {
  const box = $("lesson");
  if (!name) { box.style.display = "none"; return; }
  const s = SCENARIOS[name];
  box.style.display = "block";
  box.innerHTML = `<b>${escapeHTML(s.title)}</b><p>${s.explanation.map(escapeHTML).join(" ")}</p><p><i>measuring…</i></p>`;
  const outcome = await getJSON(`/api/scenarios/${encodeURIComponent(name)}`);
  if (state.scenario !== name) return;
  box.innerHTML = `<b>${escapeHTML(s.title)}</b><p>${s.explanation.map(escapeHTML).join(" ")}</p>` +
    `<p>measured (${s.seeds} seed${s.seeds > 1 ? "s" : ""}, ${s.steps} steps):</p><ul>` +
    outcome.checks.map((c) => `<li class="${c.holds ? "holds" : "fails"}">${c.holds ? "✓" : "✗"} ${escapeHTML(c.claim)}</li>`).join("") + "</ul>";
}
function applyScenario(name) {
  const s = SCENARIOS[name];
  const [{ name: fn, values }] = parseSpec(s.function);
  Object.assign(state, { scenario: name, function: fn, fopts: values, steps: s.steps, noise: s.noise, seed: 0,
    start: s.starts[0], theory: s.theory, frame: null });
  state.optimizers = parseSpec(s.optimizers).map(withDefaults);
}

// ---- start -------------------------------------------------------------------------------------
async function main() {
  const [registry, functions, scenarios] = await Promise.all([getJSON("/api/registry"), getJSON("/api/functions"), getJSON("/api/scenarios")]);
  for (const o of registry) REGISTRY[o.name] = o;
  for (const f of functions) FUNCTIONS[f.name] = f;
  for (const s of scenarios) SCENARIOS[s.name] = s;
  for (const f of functions) $("function").append(new Option(f.name, f.name));
  for (const s of scenarios) $("scenario").append(new Option(`${s.name} — ${s.title}`, s.name));
  for (const o of registry) $("add-name").append(new Option(o.name, o.name));
  state = fromURL();
  $("scenario").addEventListener("change", async () => {
    const name = $("scenario").value;
    if (name) applyScenario(name); else state.scenario = "";
    syncInputs(); await loadSurface(); changed(); showLesson(name);
  });
  $("function").addEventListener("change", async () => {
    Object.assign(state, { function: $("function").value, fopts: {}, start: null, scenario: "" });
    showLesson(""); syncInputs(); await loadSurface(); changed();
  });
  $("steps").addEventListener("change", () => { state.steps = Number($("steps").value); state.frame = state.steps; changed(); });
  $("noise").addEventListener("input", () => { state.noise = Number($("noise").value); $("noise-out").textContent = state.noise; changed(); });
  $("seed").addEventListener("change", () => { state.seed = Number($("seed").value); changed(); });
  $("theory").addEventListener("change", () => { state.theory = $("theory").checked; changed(); });
  $("view3d").addEventListener("change", () => { state.view3d = $("view3d").checked; toURL(); if (result) render(); });
  $("add").addEventListener("click", () => { state.optimizers.push(withDefaults({ name: $("add-name").value, values: {} })); renderOptimizers(); changed(); });
  $("play").addEventListener("click", play);
  $("pause").addEventListener("click", () => clearInterval(timer));
  $("step").addEventListener("click", () => { clearInterval(timer); setFrame(state.frame + 1); });
  $("reset").addEventListener("click", () => { clearInterval(timer); setFrame(0); });
  setupDrag();
  syncInputs();
  if (state.start) $("start-out").textContent = `(${fmt(state.start[0])}, ${fmt(state.start[1])})`;
  if (state.scenario in SCENARIOS) showLesson(state.scenario);
  await Promise.all([loadSurface(), run()]);
  // interactive: every control wired and the first trajectories drawn (on the canvas sketch);
  // benchmarks/serve_latency.py measures the time to this mark
  document.body.dataset.interactive = "1";
  performance.mark("optimlab:interactive");
  loadPlotly();
  await plotlyReady;
  if (result && surface) draw();
  document.body.dataset.ready = "1";  // the full view: Plotly's contour, loss chart (and 3-D)
  performance.mark("optimlab:ready");
}
main().catch((error) => { $("error").textContent = String(error.message || error); });
