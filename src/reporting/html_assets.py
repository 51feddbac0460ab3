"""The report page's inline CSS and JavaScript (no fonts, images or scripts are ever fetched).

The script builds every run's details from the embedded JSON only when the run is opened, and only with
textContent / createElementNS: a run name or config value can never become markup.
"""

CSS = """
body{font:14px/1.4 system-ui,-apple-system,"Segoe UI",sans-serif;margin:0;color:#1d2330;background:#f6f7f9}
header{background:#1d2330;color:#fff;padding:14px 24px}header h1{margin:0 0 4px;font-size:20px}
header p{margin:0;color:#c9d1e0}main{padding:8px 24px 40px}h2{margin:24px 0 8px}
code,pre{font-family:ui-monospace,Menlo,Consolas,monospace;font-size:12px}
pre{background:#eef0f4;padding:8px;white-space:pre-wrap;word-break:break-all}
table{border-collapse:collapse;background:#fff;margin:4px 0 12px}
th,td{border:1px solid #d9dde5;padding:3px 8px;text-align:left;vertical-align:top}
table.board th{cursor:pointer;background:#e8ebf1;user-select:none;white-space:nowrap}
table.board th.asc:after{content:" \\25B2"}table.board th.desc:after{content:" \\25BC"}
td.num{text-align:right;font-variant-numeric:tabular-nums}tr.best td{background:#eaf6ea}
.badge{display:inline-block;padding:0 6px;border-radius:8px;font-size:12px;margin-left:6px}
.ok{background:#d9f2dc;color:#185c22}.bad{background:#fbdada;color:#8a1c1c}.warn{background:#fdf0c9;color:#6b4e00}
details.run{background:#fff;border:1px solid #d9dde5;margin:3px 0;padding:2px 8px}
details.run summary{cursor:pointer;padding:3px 0}details.run[open]{padding-bottom:10px}
.rid{font-family:ui-monospace,Menlo,Consolas,monospace}.body h4{margin:12px 0 4px}
.charts{display:flex;flex-wrap:wrap;gap:8px}.chart{background:#fafbfc;border:1px solid #e3e6ec}
.chart text{font-size:10px;fill:#444}.empty{color:#666;font-style:italic}
"""

JS = r"""
"use strict";
const DATA = JSON.parse(document.getElementById("report-data").textContent);
const RUNS = DATA.runs;
const SVG = "http://www.w3.org/2000/svg";

function el(tag, text, cls) {
  const node = document.createElement(tag);
  if (text !== undefined && text !== null) node.textContent = String(text);
  if (cls) node.className = cls;
  return node;
}
function fmt(v) {
  if (v === null || v === undefined) return "-";
  if (typeof v === "number") return Number.isInteger(v) ? String(v) : v.toPrecision(5);
  if (typeof v === "object") return JSON.stringify(v);
  return String(v);
}
function table(headers, rows) {
  const t = el("table"), head = t.insertRow();
  for (const h of headers) head.appendChild(el("th", h));
  for (const row of rows) {
    const tr = t.insertRow();
    for (const cell of row) tr.appendChild(el("td", fmt(cell)));
  }
  return t;
}
function section(body, title, content) {
  body.appendChild(el("h4", title));
  body.appendChild(content);
}

function chart(name, xs, ys) {
  const W = 220, H = 120, L = 34, B = 16, T = 24;
  const svg = document.createElementNS(SVG, "svg");
  svg.setAttribute("width", W); svg.setAttribute("height", H); svg.setAttribute("class", "chart");
  const pts = [];
  xs.forEach((x, i) => { if (typeof ys[i] === "number" && typeof x === "number") pts.push([x, ys[i]]); });
  const title = document.createElementNS(SVG, "text");
  title.setAttribute("x", 4); title.setAttribute("y", 11); title.textContent = name;
  svg.appendChild(title);
  if (!pts.length) return svg;
  const x0 = Math.min(...pts.map(p => p[0])), x1 = Math.max(...pts.map(p => p[0]));
  const y0 = Math.min(...pts.map(p => p[1])), y1 = Math.max(...pts.map(p => p[1]));
  const sx = x => L + (x1 > x0 ? (x - x0) / (x1 - x0) : 0.5) * (W - L - 6);
  const sy = y => H - B - (y1 > y0 ? (y - y0) / (y1 - y0) : 0.5) * (H - B - T);
  const line = document.createElementNS(SVG, "polyline");
  line.setAttribute("fill", "none"); line.setAttribute("stroke", "#2a6fdb"); line.setAttribute("stroke-width", "1.5");
  line.setAttribute("points", pts.map(p => sx(p[0]).toFixed(1) + "," + sy(p[1]).toFixed(1)).join(" "));
  svg.appendChild(line);
  for (const p of pts) {
    const dot = document.createElementNS(SVG, "circle");
    dot.setAttribute("cx", sx(p[0]).toFixed(1)); dot.setAttribute("cy", sy(p[1]).toFixed(1));
    dot.setAttribute("r", 2); dot.setAttribute("fill", "#2a6fdb");
    const tip = document.createElementNS(SVG, "title");
    tip.textContent = name + " @ epoch " + p[0] + ": " + fmt(p[1]);
    dot.appendChild(tip); svg.appendChild(dot);
  }
  for (const [y, v] of [[H - B, y0], [T, y1]]) {
    const label = document.createElementNS(SVG, "text");
    label.setAttribute("x", 2); label.setAttribute("y", y + 3); label.textContent = fmt(v);
    svg.appendChild(label);
  }
  const xl = document.createElementNS(SVG, "text");
  xl.setAttribute("x", W - 60); xl.setAttribute("y", H - 3); xl.textContent = "epoch " + x0 + "-" + x1;
  svg.appendChild(xl);
  return svg;
}

function curves(run) {
  const box = el("div", null, "charts");
  const cols = {};
  if (run.curves) DATA.shared[run.curves.columns].forEach((name, i) => { cols[name] = run.curves.values[i]; });
  const xs = cols.epoch || (Object.values(cols)[0] || []).map((_, i) => i + 1);
  const names = Object.keys(cols).filter(n => n !== "epoch");
  if (!names.length) return el("p", "no metrics.csv rows", "empty");
  for (const n of names) box.appendChild(chart(n, xs, cols[n]));
  return box;
}

function configDiff(run, best) {
  if (run.diff === null || run.diff === undefined) return el("p", "config not available for this run or the best run", "empty");
  if (run.id === best) return el("p", "this is the subtask's best run (by best_val_metric)", "empty");
  if (!run.diff.length) return el("p", "same config as the best run " + best, "empty");
  return table(["key", "best run " + best, "this run"], run.diff);
}

function provenance(p) {
  const shared = k => (typeof p[k] === "number" ? DATA.shared[p[k]] : p[k]) || {};
  const rows = [
    ["seed", fmt(p.seed) + (p.seed_source ? " (from " + p.seed_source + ")" : "")],
    ["git commit", fmt(p.git_commit) + (p.git_dirty ? " (dirty: uncommitted changes, see git.diff)" : p.git_dirty === false ? " (clean)" : "")],
    ["git branch", p.git_branch],
    ["started / finished", fmt(p.started_at) + " / " + fmt(p.finished_at)],
  ];
  for (const [k, v] of Object.entries(shared("versions"))) rows.push([k, v]);
  for (const [k, v] of Object.entries(shared("host"))) rows.push([k, v]);
  for (const [split, fp] of Object.entries(shared("datasets"))) {
    rows.push(["data " + split, fp && typeof fp === "object"
      ? fmt(fp.sha256) + " (" + fmt(fp.files) + " files, " + fmt(fp.bytes) + " bytes; classes " + fmt(fp.names) + ")"
      : fmt(fp)]);
  }
  for (const [k, v] of Object.entries(shared("determinism"))) rows.push(["determinism " + k, v]);
  return table(["what", "value"], rows);
}

function exportsTable(run) {
  if (!run.exports || !run.exports.length) return el("p", "no exports (street-scene export writes exports.json)", "empty");
  return table(["format", "path", "sha256", "created", "imgsz", "dynamic", "max abs diff", "max rel diff",
                "torch p50 ms", "runtime p50 ms", "images"],
    run.exports.map(e => {
      const par = (e.parity && typeof e.parity === "object") ? e.parity : {};
      return [e.format, e.path, typeof e.sha256 === "string" ? e.sha256.slice(0, 16) : e.sha256, e.created_at,
              e.imgsz, e.dynamic, par.max_abs_diff, par.max_rel_diff, par.torch_p50_ms, par.runtime_p50_ms, par.images];
    }));
}

function evaluationsTable(run) {
  if (!run.evaluations || !run.evaluations.length) return el("p", "no saved evaluations", "empty");
  return table(["file", "kind", "evaluated", "test data", "test data sha256", "metrics"],
    run.evaluations.map(e => [e.file, e.problem ? "unreadable: " + e.problem : e.kind, e.evaluated_at, e.test_data,
      typeof e.test_sha256 === "string" ? e.test_sha256.slice(0, 12) : e.test_sha256,
      Object.entries(e.metrics || {}).map(([k, v]) => k + "=" + fmt(v)).join("  ")]));
}

function renderRun(details) {
  const run = RUNS[Number(details.dataset.run)];
  const group = DATA.subtasks.find(g => g.name === run.subtask);
  const body = details.querySelector(".body");
  body.textContent = "";
  if (run.problems.length) section(body, "Problems", table(["problem"], run.problems.map(p => [p])));
  const v = run.verify || {};
  section(body, "Verify (checkpoint sha256, config hash)", table(["check", "result"], Object.entries(v)));
  section(body, "Registry metrics", table(["metric", "value"], Object.entries(run.metrics)));
  if (run.missing) return;
  section(body, "Training curves (metrics.csv)", curves(run));
  section(body, "Config difference against the best run", configDiff(run, group.best_run));
  section(body, "Provenance", provenance(run.provenance || {}));
  section(body, "Exports", exportsTable(run));
  section(body, "Evaluations", evaluationsTable(run));
  const pre = el("pre", (run.reproduce || []).join("\n"));
  section(body, "Reproduce", pre);
}

function renderIfNeeded(d) {
  if (d.open && !d.dataset.rendered) { renderRun(d); d.dataset.rendered = "1"; }
}
document.querySelectorAll("details.run").forEach(d => d.addEventListener("toggle", () => renderIfNeeded(d)));

function sortBy(th) {
  const tbl = th.closest("table"), body = tbl.tBodies[0], idx = th.cellIndex;
  const asc = !th.classList.contains("asc");
  tbl.querySelectorAll("th").forEach(h => h.classList.remove("asc", "desc"));
  th.classList.add(asc ? "asc" : "desc");
  const key = tr => tr.cells[idx].dataset.v;
  const numeric = th.dataset.num === "1";
  const rows = Array.from(body.rows);
  rows.sort((a, b) => {
    let x = key(a), y = key(b);
    if (x === undefined || x === "") return 1;
    if (y === undefined || y === "") return -1;
    if (numeric) { x = Number(x); y = Number(y); }
    return (x < y ? -1 : x > y ? 1 : 0) * (asc ? 1 : -1);
  });
  for (const r of rows) body.appendChild(r);
}
document.querySelectorAll("table.board th").forEach(th => th.addEventListener("click", () => sortBy(th)));

function openFromHash() {  // #run-N opens that run (the leaderboard links), #all opens every run
  const hash = window.location.hash.slice(1);
  const targets = hash === "all" ? document.querySelectorAll("details.run")
    : /^run-[0-9]+$/.test(hash) ? [document.getElementById(hash)] : [];
  for (const d of targets) if (d) { d.open = true; renderIfNeeded(d); }
  if (hash !== "all" && targets[0]) targets[0].scrollIntoView();
}
window.addEventListener("hashchange", openFromHash);
openFromHash();
document.body.dataset.ready = "1";
"""
