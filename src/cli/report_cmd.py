"""`report`: one self-contained HTML file comparing the registry's runs (opens offline, no server)."""

import argparse

HELP = "write a self-contained HTML report of the registry's runs: leaderboards, curves, config diffs, provenance"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", default="report.html", help="HTML file to write (default: report.html)")
    parser.add_argument("--subtask", help="only the runs of this subtask, e.g. vehicle_detection")
    parser.add_argument("--registry", metavar="PATH",
                        help="registry file (default: $STREET_SCENE_REGISTRY, else registry/model_registry.json)")
    parser.add_argument("--force", action="store_true", help="overwrite --out if it exists")


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from src.reporting.report import build_report

    done = build_report(Path(args.out), Path(args.registry) if args.registry else None, args.subtask, args.force)
    print(f"wrote {done['out']}: {done['runs']} runs, {done['bytes'] / 1e6:.2f} MB")
    return 0
