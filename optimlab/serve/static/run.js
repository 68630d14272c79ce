// One comparison: recommendation, ranking with ties, per-problem tables, curves, and the trials
// as they land (polls /api/run/trials?since=… while `optimlab compare` writes; no reload).
"use strict";
const $ = (id) => document.getElementById(id);
const esc = (s) => String(s ?? "—").replace(/[&<>"]/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;" })[c]);
const num = (v, d = 4) => (v === null || v === undefined ? "—" : typeof v === "number" ? Number(v.toPrecision(d)).toString() : esc(v));
const PATH = new URLSearchParams(location.search).get("path") || "";
const q = (extra = "") => `path=${encodeURIComponent(PATH)}${extra}`;
let since = null, summary = null, trials = [], started = Date.now() / 1000, progress = null;

// "42 s", "3 min 05 s", "1 h 02 min" (as the terminal's progress line says it)
function duration(seconds) {
  const s = Math.max(0, Math.round(seconds));
  if (s < 60) return `${s} s`;
  const m = Math.floor(s / 60);
  if (m < 60) return `${m} min ${String(s % 60).padStart(2, "0")} s`;
  return `${Math.floor(m / 60)} h ${String(m % 60).padStart(2, "0")} min`;
}
// progress.json as the server read it (counts, rate and ETA computed there), or "" without one
function progressText() {
  const p = progress;
  if (!p || p.finished) return "";
  const share = p.share === null ? "" : ` (${Math.round(100 * p.share)}%)`;
  const rate = p.rate === null ? "" : `, ${num(p.rate, 2)} trials/s`;
  const eta = p.eta_seconds === null ? "ETA —" : `ETA ${duration(p.eta_seconds)}`;
  let text = `running: ${p.done}/${p.planned} trials${share}${rate}, ${eta}`;
  if (p.failed) text += `, ${p.failed} failed`;
  // no write for a while although trials were expected: say so, and how to resume
  const expected = p.rate ? 3 / p.rate : 0;
  if (p.since_update > Math.max(60, expected)) text += ` — no update for ${duration(p.since_update)}: interrupted? resume with: ${p.command}`;
  return text;
}

async function getJSON(url) {
  const response = await fetch(url);
  const body = await response.json();
  if (!response.ok) throw new Error(body.detail || response.statusText);
  return body;
}
function table(headers, rows) {
  return "<table><tr>" + headers.map((h) => `<th>${esc(h)}</th>`).join("") + "</tr>" +
    rows.map((r) => "<tr>" + r.map((c) => `<td>${c}</td>`).join("") + "</tr>").join("") + "</table>";
}
function drawSummary() {
  if (!summary) {
    $("recommendation").innerHTML = "<p><i>The comparison has not finished: the ranking appears when it writes summary.json. Trials and curves below update as they land.</i></p>";
    return;
  }
  const rec = summary.recommendations || {};
  $("recommendation").innerHTML = `<h3>recommendation</h3><p><b>${esc(rec.overall)}</b></p>` +
    (rec.problems ? "<ul>" + Object.values(rec.problems).map((t) => `<li>${esc(t)}</li>`).join("") + "</ul>" : "");
  const ranking = summary.ranking || [];
  const counts = {};
  for (const r of ranking) counts[r.rank] = (counts[r.rank] || 0) + 1;
  $("ranking").innerHTML = "<h3>overall ranking (performance profile)</h3>" +
    table(["rank", "optimizer", "profile score", "mean per-problem rank"],
      ranking.map((r) => [`${r.rank}${counts[r.rank] > 1 ? " (tie)" : ""}`, esc(r.optimizer), num(r.profile_score, 3), num(r.mean_rank, 3)])) +
    ((summary.unranked || []).length ? "<p>not ranked: " + summary.unranked.map((u) => esc(u.optimizer ? `${u.optimizer} (${u.reason})` : u)).join("; ") + "</p>" : "");
  const blocks = [];
  for (const [problem, entries] of Object.entries(summary.problems || {})) {
    const info = (summary.problem_info || {})[problem] || {};
    const metric = info.metric || { key: "final_test_loss", label: "test loss" };
    const order = (summary.per_problem_ranking || {})[problem] || Object.keys(entries);
    const tol = String(summary.target_tolerance ?? 0.01);
    const rows = order.filter((o) => entries[o]).map((o) => {
      const e = entries[o];
      // seeds that diverged or failed count as untrained models in the ranking: show what was ranked
      const shown = e.seeds_counted_untrained
        ? `${num(e.ranked_mean)} ± ${num(e.ranked_std, 2)} (${e.seeds_ok} of ${e.seeds} seeds ok)`
        : `${num(e[metric.key + "_mean"])} ± ${num(e[metric.key + "_std"], 2)}`;
      return [esc(o), num(e.rank ?? null), num(e.best_lr), esc(e.status), shown,
        num(e.final_train_loss_mean), num((e.steps_to_targets || {})[tol])];
    });
    blocks.push(`<h4>${esc(problem)} <small>${esc(info.learned_reason || "")}</small></h4>` +
      table(["optimizer", "rank", "best lr", "status", metric.label || metric.key, "train loss", `steps to target (tol ${tol})`], rows));
  }
  $("problems").innerHTML = "<h3>per problem</h3>" + blocks.join("");
}
function drawCurves(series) {
  // series: {problem: [{label, step, mean, low, high}]}
  const box = $("curves");
  for (const [problem, lines] of Object.entries(series)) {
    let div = document.getElementById("curve-" + problem);
    if (!div) { div = document.createElement("div"); div.id = "curve-" + problem; div.style.height = "360px"; box.append(div); }
    const traces = [];
    lines.forEach((line, i) => {
      const color = `hsl(${(i * 67) % 360}, 65%, 45%)`;
      traces.push({ x: line.step, y: line.high, mode: "lines", line: { width: 0 }, showlegend: false, hoverinfo: "skip", legendgroup: line.label });
      traces.push({ x: line.step, y: line.low, mode: "lines", line: { width: 0 }, fill: "tonexty", fillcolor: color.replace("hsl", "hsla").replace(")", ", 0.15)"), showlegend: false, hoverinfo: "skip", legendgroup: line.label });
      traces.push({ x: line.step, y: line.mean, mode: "lines", name: `${line.label} (${line.seeds} seed${line.seeds > 1 ? "s" : ""})`, line: { color }, legendgroup: line.label });
    });
    Plotly.react(div, traces, { title: { text: `${problem}: training loss`, font: { size: 13 } }, margin: { l: 50, r: 10, t: 30, b: 40 },
      xaxis: { title: "step", type: $("logx").checked ? "log" : "linear" }, yaxis: { type: $("logy").checked ? "log" : "linear" }, uirevision: problem }, { displayModeBar: false });
  }
}
function summaryCurves() {
  const out = {};
  for (const [problem, byOpt] of Object.entries(summary.curves || {})) {
    out[problem] = Object.entries(byOpt).filter(([, c]) => c.train_loss).map(([label, c]) => {
      const t = c.train_loss;
      return { label, seeds: summary.run?.seeds ?? 1, step: t.step, mean: t.mean,
        low: t.mean.map((m, i) => (m === null ? null : m - (t.std?.[i] || 0))), high: t.mean.map((m, i) => (m === null ? null : m + (t.std?.[i] || 0))) };
    });
  }
  return out;
}
function drawTrials() {
  $("trial-count").textContent = `(${trials.length} stored)`;
  const shown = trials.slice(-200).reverse();
  $("trials").innerHTML = table(["finished", "problem", "optimizer", "lr", "seed", "status", "final train loss", "test loss", "test accuracy"],
    shown.map((t) => [new Date(t.finished_at * 1000).toLocaleTimeString(), esc(t.problem), esc(t.optimizer), num(t.hyperparameters.lr, 3), t.seed, esc(t.status),
      num(t.metrics.final_train_loss), num(t.metrics.final_test_loss), num(t.metrics.test_accuracy)]));
  const newest = trials.length ? trials[trials.length - 1].finished_at : null;
  const rate = trials.filter((t) => t.finished_at >= started - 60).length;
  const live = progressText();
  $("progress").textContent = summary ? `finished: ${summary.run?.trials ?? trials.length} trials in ${num(summary.run?.seconds, 3)} s` :
    (live ? `${live}; the last trial ${newest ? (Date.now() / 1000 - newest).toFixed(0) + " s ago" : "—"}` :
    `running or interrupted: ${trials.length} trials stored, the last ${newest ? (Date.now() / 1000 - newest).toFixed(0) + " s ago" : "—"}` +
    (rate ? `; ${rate} in the last minute` : ""));
}
async function poll() {
  try {
    const fresh = await getJSON(`/api/run/trials?${q(since === null ? "" : "&since=" + since)}`);
    if (fresh.trials.length) {
      trials.push(...fresh.trials);
      since = trials[trials.length - 1].finished_at;
    }
    if (!summary) {
      const run = await getJSON(`/api/run?${q()}`);
      progress = run.progress;
      if (run.summary) { summary = run.summary; drawSummary(); drawCurves(summaryCurves()); }
      else if (fresh.trials.length || !$("curves").children.length) drawCurves(await getJSON(`/api/run/curves?${q()}`));
    }
    drawTrials();
    $("error").textContent = "";
  } catch (error) { $("error").textContent = String(error.message || error); }
}
async function main() {
  $("title").textContent = PATH || ".";
  const run = await getJSON(`/api/run?${q()}`);
  summary = run.summary;
  progress = run.progress;
  drawSummary();
  await poll();
  if (summary) drawCurves(summaryCurves());
  const redraw = () => drawCurves(summary ? summaryCurves() : {});
  $("logx").addEventListener("change", async () => (summary ? redraw() : drawCurves(await getJSON(`/api/run/curves?${q()}`))));
  $("logy").addEventListener("change", async () => (summary ? redraw() : drawCurves(await getJSON(`/api/run/curves?${q()}`))));
  document.body.dataset.ready = "1";
  setInterval(poll, 1000);
}
main().catch((error) => { $("error").textContent = String(error.message || error); });
