"""`leaderboard`: evaluate every registered run of a subtask on one test set and rank them."""

import argparse

HELP = "evaluate every registered run of a subtask on one test set and rank them (results cached per run)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.description = (HELP + ". Each run is evaluated with its own config.yaml; a result is cached beside the "
                           "run (evaluations/leaderboard-<key>.json) per checkpoint sha256, test-data fingerprint "
                           "and evaluation settings, so a second call evaluates only new or changed runs.")
    parser.add_argument("--subtask", required=True, help="registry task (subtask) to rank, e.g. vehicle_detection")
    parser.add_argument("--test-data", required=True, help="test split every run is evaluated on")
    parser.add_argument("--data-yaml", help="the test set's class names; runs trained on other class names are "
                        "marked and not evaluated (without it each run uses its own class names)")
    parser.add_argument("--metric", help="rank by this evaluation metric (default: test/mAP50-95 for detection, "
                        "test/mIoU for segmentation)")
    parser.add_argument("--mode", choices=("max", "min"), help="is higher better (default: min for losses, "
                        "else max)")
    parser.add_argument("--top", type=int, metavar="N", help="show only the N best runs (problems are always "
                        "listed)")
    parser.add_argument("--registry", metavar="PATH",
                        help="registry file (default: $STREET_SCENE_REGISTRY, else registry/model_registry.json)")
    parser.add_argument("--json", action="store_true", help="print the leaderboard as JSON on stdout")


def run(args: argparse.Namespace) -> int:
    import json
    from pathlib import Path

    from src.reporting.leaderboard import LeaderboardRequest, build_leaderboard

    board = build_leaderboard(LeaderboardRequest(
        subtask=args.subtask, test_data=args.test_data, data_yaml=args.data_yaml, metric=args.metric,
        mode=args.mode, top=args.top, registry_path=Path(args.registry) if args.registry else None))
    if args.json:
        print(json.dumps(board, indent=2, ensure_ascii=False, default=str))
    else:
        print(format_leaderboard(board))
    return 0


def format_leaderboard(board: dict) -> str:
    from src.cli.registry_cmd import format_table

    metric = board["metric"]
    headers = ["RANK", "RUN_ID", metric.upper(), "GAP", "CONFIG", "COMMIT", "CLASSES", "VERIFY", "RESULT"]
    rows = [[row["rank"] or "-", row["run_id"], _num(row["value"]), _gap(row["gap"]), row["config_hash"] or "-",
             _commit(row), _classes(row["same_classes"]), row["verify"],
             row["status"] + (f": {row['note']}" if row["note"] else "")] for row in board["rows"]]
    lines = [f"{board['subtask']} on {board['test_data']} (test data {board['test_fingerprint']['sha256'][:12]}, "
             f"{board['test_fingerprint']['files']} files), ranked by {metric} ({board['mode']})",
             format_table(headers, rows)]
    cached = sum(row["status"] == "cached" for row in board["rows"])
    lines.append(f"{len(board['rows'])} runs: {board['evaluated']} evaluated now, {cached} from cache")
    if board["test_class_names"] is None:
        lines.append("class names not checked: pass --data-yaml with the test set's classes")
    return "\n".join(lines)


def _num(value) -> str:
    return "-" if value is None else f"{value:.4f}"


def _gap(value) -> str:
    return "-" if value is None else f"{value:+.4f}"


def _commit(row) -> str:
    commit = row["git_commit"] or "-"
    return commit[:8] + ("+dirty" if row["git_dirty"] else "")


def _classes(same) -> str:
    return "unchecked" if same is None else "same" if same else "OTHER"
