"""`street-scene diff RUN_A RUN_B`: what differs between two runs (config, metadata, environment, metrics).

A report, not a check: it exits 0 whether or not the runs differ (2 on bad input). Scripts read `identical`
from `--json`.
"""

import argparse

HELP = "show config, metadata and metric differences between two runs"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.description = ("Compare two run directories (paths or run ids under STREET_SCENE_OUTPUT_DIR, default "
                          "./outputs). Exits 0 even when they differ; run ids and timestamps are not compared.")
    parser.add_argument("run_a", metavar="RUN_A", help="run dir or run id")
    parser.add_argument("run_b", metavar="RUN_B", help="run dir or run id")
    parser.add_argument("--json", action="store_true", help="print the full diff as JSON")


def run(args: argparse.Namespace) -> int:
    from src.common.run_diff import diff_runs, format_diff, to_json

    diff = diff_runs(args.run_a, args.run_b)
    print(to_json(diff) if args.json else format_diff(diff))
    return 0
