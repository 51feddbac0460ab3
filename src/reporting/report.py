"""`street-scene report`: gather, render and write the HTML report (refusing to overwrite without force)."""

from pathlib import Path
from typing import Optional

from src.common.atomic import atomic_write_text
from src.common.errors import UserError


def build_report(out: Path, registry_path: Optional[Path] = None, subtask: Optional[str] = None,
                 force: bool = False) -> dict:
    """Write the report to `out`; returns {"out", "runs", "bytes"}. Nothing is written when anything fails."""
    from src.reporting.html_report import render_report
    from src.reporting.report_data import collect_report

    out = Path(out)
    check_output(out, force)
    page = render_report(collect_report(registry_path, subtask))
    atomic_write_text(out, page)
    return {"out": str(out), "bytes": len(page.encode("utf-8")), "runs": page.count("<details class=\"run\"")}


def check_output(out: Path, force: bool) -> None:
    if out.is_dir():
        raise UserError(f"--out {out} is a folder; give a file name, e.g. {out / 'report.html'}")
    if out.exists() and not force:
        raise UserError(f"{out} already exists; pass --force to overwrite it or choose another --out")
    if not out.parent.is_dir():
        raise UserError(f"folder {out.parent} of --out does not exist; create it or choose another --out")
