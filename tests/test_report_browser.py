"""The report in a real browser (Debian's chromium, headless, offline): it renders, every run id is in the DOM,
the page's script runs to its end and logs nothing, and a page with a script error fails the same check."""

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.test_report import write_registry, write_run

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
needs_chromium = pytest.mark.skipif(
    CHROMIUM is None and not os.environ.get("CI"),
    reason="chromium not installed (make test / .ci/run install it)")
# Offline: no proxy lookup, no background or component traffic, every host name unresolvable.
OFFLINE_FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--no-proxy-server", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--disable-extensions", "--disable-default-apps",
                 "--no-first-run", "--disable-domain-reliability", "--disable-client-side-phishing-detection",
                 "--host-resolver-rules=MAP * ~NOTFOUND", "--enable-logging=stderr", "--v=0")
CONSOLE = re.compile(r":CONSOLE[:(]\d*\)?\]? (.*)")


def render(page: Path, tmp: Path, fragment: str = "", screenshot: Path = None, size=(1280, 900)):
    """(DOM after scripts ran, console lines) of `page` in headless chromium; writes `screenshot` when given."""
    assert CHROMIUM, "chromium is not installed: run `apt-get install -y chromium` (make test does it)"
    base = [CHROMIUM, *OFFLINE_FLAGS, f"--user-data-dir={tmp / 'chromium-profile'}", f"--window-size={size[0]},{size[1]}"]
    url = page.resolve().as_uri() + fragment
    dom = subprocess.run([*base, "--dump-dom", url], capture_output=True, text=True, timeout=120)
    assert dom.returncode == 0, dom.stderr[-2000:]
    console = [m.group(1) for m in map(CONSOLE.search, dom.stderr.splitlines()) if m]
    if screenshot is not None:
        shot = subprocess.run([*base, f"--screenshot={screenshot}", url], capture_output=True, text=True, timeout=120)
        assert shot.returncode == 0 and screenshot.is_file(), shot.stderr[-2000:]
    return dom.stdout, console


def assert_page_ok(dom: str, console: list, run_ids) -> None:
    assert not console, f"the page logged: {console}"
    assert 'data-ready="1"' in dom, "the page's script did not run to its end"
    for run_id in run_ids:
        assert run_id in dom, run_id


@needs_chromium
def test_browser_check_catches_a_script_error(tmp_path):
    page = tmp_path / "broken.html"
    page.write_text('<!DOCTYPE html><html><body><p>run_x</p><script>undefinedFunction();'
                    'document.body.dataset.ready = "1";</script></body></html>')
    dom, console = render(page, tmp_path)
    assert any("Uncaught ReferenceError" in line for line in console), console
    with pytest.raises(AssertionError, match="the page logged"):
        assert_page_ok(dom, console, ["run_x"])


@needs_chromium
def test_report_renders_every_run_without_errors(tmp_path):
    from src.reporting.report import build_report

    outputs = tmp_path / "outputs"
    runs = [write_run(outputs, f"2025010{i}_000000_run{i}", lr=0.01 * (i + 1), best=0.1 * i) for i in range(3)]
    hostile = write_run(outputs, "20250109_000000_evil", lr="</script><script>alert(1)</script>", best=0.05,
                        exports=True)
    registry = write_registry(tmp_path, runs + [hostile])
    out = tmp_path / "report.html"
    build_report(out, registry)
    ids = [r.name for r in runs + [hostile]]
    dom, console = render(out, tmp_path, "#all", screenshot=tmp_path / "shot.png")
    assert_page_ok(dom, console, ids)
    # every run was opened and drawn: one curves block per run, the hostile value shown as text
    assert dom.count('class="charts"') == len(ids)
    assert "&lt;/script&gt;&lt;script&gt;alert(1)&lt;/script&gt;" in dom
    assert "<script>alert(1)" not in dom
    assert (tmp_path / "shot.png").stat().st_size > 10_000
