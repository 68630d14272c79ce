// The list of comparisons and diagnoses under --results (polled: new ones appear).
"use strict";
const $ = (id) => document.getElementById(id);
const esc = (s) => String(s ?? "—").replace(/[&<>"]/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;" })[c]);
function ago(t) { if (!t) return "—"; const s = Date.now() / 1000 - t; return s < 90 ? `${s.toFixed(0)} s ago` : s < 5400 ? `${(s / 60).toFixed(0)} min ago` : new Date(t * 1000).toLocaleString(); }
async function refresh() {
  try {
    const [runs, diagnoses] = await Promise.all([fetch("/api/runs").then((r) => r.json()), fetch("/api/diagnoses").then((r) => r.json())]);
    $("comparisons").innerHTML = runs.length === 0 ? "<p>none yet under --results</p>" :
      "<table><tr><th>comparison</th><th>trials</th><th>last trial</th><th>state</th><th>report</th></tr>" +
      runs.map((r) => `<tr><td><a href="/run?path=${encodeURIComponent(r.path)}">${esc(r.path || ".")}</a></td><td>${r.trials}</td><td>${ago(r.last_trial_at)}</td>` +
        `<td>${r.finished ? "finished" : "running or interrupted"}</td><td>${r.report ? `<a href="/files/${r.path ? r.path + "/" : ""}index.html">report</a>` : "—"}</td></tr>`).join("") + "</table>";
    $("diagnoses").innerHTML = diagnoses.length === 0 ? "<p>none yet under --results</p>" :
      "<table><tr><th>diagnosis</th><th>problem</th></tr>" +
      diagnoses.map((d) => `<tr><td>${d.page ? `<a href="/files/${d.page}">${esc(d.path || ".")}</a>` : esc(d.path)}</td><td>${esc(d.problem)}</td></tr>`).join("") + "</table>";
    $("error").textContent = "";
  } catch (error) { $("error").textContent = String(error); }
}
refresh();
setInterval(refresh, 3000);
