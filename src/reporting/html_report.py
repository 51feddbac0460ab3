"""One self-contained HTML page from `collect_report`'s data: inline CSS and JS, plots drawn as SVG in the page.

Every string from the registry or a run directory is HTML-escaped where it enters markup; the data the script
reads is JSON inside <script type="application/json"> with `<`, `>`, `&`, U+2028 and U+2029 escaped, so no value
can close the script element or start markup. A Content-Security-Policy forbids loading anything from anywhere.
"""

import html
import importlib
import json
from typing import Any, Dict, List, Optional

from src.reporting.html_assets import CSS, JS

CSP = "default-src 'none'; style-src 'unsafe-inline'; script-src 'unsafe-inline'; img-src data:"
_JSON_ESCAPES = {"<": "\\u003c", ">": "\\u003e", "&": "\\u0026", "\u2028": "\\u2028", "\u2029": "\\u2029"}
_SHOWN_METRICS = 6  # registry metric columns per leaderboard


def esc(value: Any) -> str:
    return html.escape("-" if value is None else str(value), quote=True)


def script_json(data: Any) -> str:
    """JSON that is inert inside a <script> element (cannot contain `</script>`, `<!--` or raw line separators)."""
    text = json.dumps(data, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
    for char, escaped in _JSON_ESCAPES.items():  # `&` first is not needed: escapes hold no raw `&`, `<` or `>`
        text = text.replace(char, escaped)
    return text


def render_report(data: Dict[str, Any]) -> str:
    runs = data["runs"]
    index = {run["id"]: i for i, run in enumerate(runs)}
    parts = ["<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">",
             f"<meta http-equiv=\"Content-Security-Policy\" content=\"{CSP}\">",
             "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">",
             "<title>street-scene model report</title><style>", CSS, "</style></head><body>", _header(data),
             "<main>"]
    if not runs:
        scope = f" for subtask {esc(data['subtask'])}" if data.get("subtask") else ""
        parts.append(f"<p class=\"empty\" id=\"empty\">The registry <code>{esc(data['registry'])}</code> has no "
                     f"entries{scope}: train a model (street-scene train) and build the report again.</p>")
    for group in data["subtasks"]:
        parts.append(_subtask_section(group, [r for r in runs if r["subtask"] == group["name"]], index))
    parts += ["</main><script type=\"application/json\" id=\"report-data\">", script_json(data), "</script><script>",
              JS, "</script></body></html>\n"]
    return "".join(parts)


def _header(data: Dict[str, Any]) -> str:
    count = len(data["runs"])
    scope = f", subtask {esc(data['subtask'])}" if data.get("subtask") else ""
    return (f"<header><h1>street-scene model report</h1><p>Generated {esc(data['generated_at'])} from registry "
            f"<code>{esc(data['registry'])}</code>{scope}: {count} run{'s' if count != 1 else ''} in "
            f"{len(data['subtasks'])} subtask{'s' if len(data['subtasks']) != 1 else ''}. Click a column to sort, "
            "a run to open it (<a href=\"#all\">open all runs</a>).</p></header>")


def _subtask_section(group: Dict[str, Any], runs: List[Dict[str, Any]], index: Dict[str, int]) -> str:
    metrics = group["metric_names"][:_SHOWN_METRICS]
    test_metric = _test_metric(runs)
    tests = group["test_sets"]
    head = ["<th data-num=\"1\">#</th><th>run</th><th>status</th>"]
    head += [f"<th data-num=\"1\">{esc(m)}</th>" for m in metrics]
    head += [f"<th data-num=\"1\" title=\"leaderboard result on {esc(t['path'])} (test data sha256 "
             f"{esc(t['sha256'])})\">{esc(test_metric)} @ {esc(_short_path(t['path']))} "
             f"({esc(t['sha256'][:8])})</th>" for t in tests]
    head.append("<th>verify</th><th>config</th><th>commit</th><th>finished</th>")
    rows = [_board_row(n, run, metrics, tests, test_metric, group["best_run"], index[run["id"]])
            for n, run in enumerate(runs, 1)]
    best = f"best run: <span class=\"rid\">{esc(group['best_run'])}</span> by best_val_metric" \
        if group["best_run"] else "no run has a best_val_metric"
    runs_html = "".join(_run_details(run, index[run["id"]], group["best_run"]) for run in runs)
    return (f"<section class=\"subtask\"><h2>{esc(group['name'])}</h2><p>{len(runs)} runs; {best}.</p>"
            f"<table class=\"board\"><thead><tr>{''.join(head)}</tr></thead><tbody>{''.join(rows)}</tbody></table>"
            f"<h3>Runs</h3>{runs_html}</section>")


def _board_row(n, run, metrics, tests, test_metric, best_id, i) -> str:
    cells = [_num_cell(n), f"<td data-v=\"{esc(run['id'])}\"><a class=\"rid\" href=\"#run-{i}\">{esc(run['id'])}"
             "</a></td>", _text_cell(_state(run)[0])]
    cells += [_num_cell(run["metrics"].get(m)) for m in metrics]
    cells += [_num_cell(_latest_test_value(run, t["sha256"], test_metric)) for t in tests]
    cells += [_text_cell(_verify_text(run)), _text_cell(run.get("config_hash")),
              _text_cell(_commit(run.get("provenance") or {})), _text_cell((run.get("timestamp") or "")[:19])]
    cls = " class=\"best\"" if run["id"] == best_id else ""
    return f"<tr{cls}>{''.join(cells)}</tr>"


def _run_details(run: Dict[str, Any], i: int, best_id: Optional[str]) -> str:
    state, good = _state(run)
    verify = _verify_text(run)
    value = run["metrics"].get("best_val_metric")
    shown = f" best_val_metric {value:.4f}" if isinstance(value, (int, float)) else ""
    best = "<span class=\"badge ok\">best</span>" if run["id"] == best_id else ""
    return (f"<details class=\"run\" id=\"run-{i}\" data-run=\"{i}\"><summary><span class=\"rid\">{esc(run['id'])}"
            f"</span>{esc(shown)}{best}<span class=\"badge {'ok' if good else 'bad'}\">{esc(state)}</span>"
            f"<span class=\"badge {'ok' if verify == 'verified' else 'warn'}\">{esc(verify)}</span></summary>"
            "<div class=\"body\"></div></details>")


def _state(run) -> tuple:
    if run["missing"]:
        return "missing", False
    return str(run.get("status") or "-"), run.get("status") == "completed" and not run["problems"]


def _verify_text(run) -> str:
    verify = run.get("verify") or {}
    if run["missing"]:
        return "missing"
    return "verified" if verify and all(v == "ok" for v in verify.values()) else "NOT verified"


def _commit(provenance) -> str:
    commit = provenance.get("git_commit")
    return "-" if not commit else str(commit)[:8] + ("+dirty" if provenance.get("git_dirty") else "")


def _num_cell(value) -> str:
    if type(value) in (int, float):
        text = f"{value:.4f}" if isinstance(value, float) else str(value)
        return f"<td class=\"num\" data-v=\"{value!r}\">{text}</td>"
    return "<td class=\"num\" data-v=\"\">-</td>"


def _text_cell(value) -> str:
    return f"<td data-v=\"{esc(value)}\">{esc(value)}</td>"


def _short_path(path) -> str:
    return str(path).rstrip("/").rsplit("/", 2)[-1] if path else "?"


def _test_metric(runs) -> str:
    from src.tasks import TASKS

    family = next((r.get("family") for r in runs if r.get("family") in TASKS), None)
    if family is None:  # no run directory left, or a task family this checkout does not have
        return "test metric"
    best = importlib.import_module(f"src.tasks.{family}.task").BEST_METRIC
    return "test/" + best.split("/", 1)[1]


def _latest_test_value(run, sha, metric):
    found = [e for e in run.get("evaluations", []) if e.get("kind") == "leaderboard" and e.get("test_sha256") == sha]
    if not found:
        return None
    latest = max(found, key=lambda e: str(e.get("evaluated_at") or ""))
    return (latest.get("metrics") or {}).get(metric)
