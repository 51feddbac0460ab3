"""`street-scene registry ...`: list, query, export, remove, rebuild and verify the model registry."""

import argparse
import json
import sys

HELP = "List, query, export, verify or rebuild the model registry"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--registry", metavar="PATH",
                        help="registry file (default: $STREET_SCENE_REGISTRY, else registry/model_registry.json)")
    sub = parser.add_subparsers(dest="registry_command", metavar="COMMAND", required=True)

    p = sub.add_parser("list", parents=[common], help="show registered models as a table")
    p.add_argument("--task", metavar="TASK", help="only this task (subtask name, e.g. vehicle_detection)")
    p.add_argument("--sort", metavar="METRIC", help="order by this metric, best first (entries without it last)")
    p.add_argument("--mode", choices=("max", "min"), default="max", help="for --sort: is higher better (max)?")
    p.add_argument("--json", action="store_true", help="print the entries as JSON instead of a table")
    p.set_defaults(registry_handler=_list)

    p = sub.add_parser("best", parents=[common], help="the best model of a task by one metric")
    p.add_argument("--task", required=True, metavar="TASK", help="subtask name, e.g. vehicle_detection")
    p.add_argument("--metric", required=True, metavar="METRIC", help="metric name, e.g. best_val_metric")
    p.add_argument("--mode", choices=("max", "min"), default="max", help="is higher better (max) or lower (min)?")
    p.add_argument("--json", action="store_true", help="print the whole entry as JSON")
    p.set_defaults(registry_handler=_best)

    p = sub.add_parser("show", parents=[common], help="one entry, with the exports of its run (exports.json)")
    p.add_argument("run_id", metavar="RUN_ID")
    p.add_argument("--json", action="store_true", help="print the entry (with `exports`) as JSON")
    p.set_defaults(registry_handler=_show)

    p = sub.add_parser("export", parents=[common], help="write the registry as CSV, one row per model")
    p.add_argument("--csv", required=True, metavar="PATH", help="CSV file to write")
    p.set_defaults(registry_handler=_export)

    p = sub.add_parser("remove", parents=[common], help="remove one entry (its run directory is kept)")
    p.add_argument("run_id", metavar="RUN_ID")
    p.set_defaults(registry_handler=_remove)

    p = sub.add_parser("rebuild", parents=[common],
                       help="rebuild the registry from run directories (a corrupt file is moved aside)")
    p.add_argument("--outputs", metavar="DIR",
                   help="folder holding the run directories (default: $STREET_SCENE_OUTPUT_DIR, else outputs)")
    p.set_defaults(registry_handler=_rebuild)

    p = sub.add_parser("verify", parents=[common],
                       help="check every entry's checkpoint (exists, sha256) and config hash; exit 1 on problems")
    p.set_defaults(registry_handler=_verify)


def run(args: argparse.Namespace) -> int:
    return args.registry_handler(args)


def _checked(command: str, call, *args, **kwargs):
    """The registry API answers bad arguments (an empty run id, a task name with a '/') with ValueError."""
    from src.common.errors import UserError

    try:
        return call(*args, **kwargs)
    except ValueError as exc:
        raise UserError(f"registry {command}: {exc}") from None


def _registry(args):
    from src.common.model_registry import ModelRegistry

    return ModelRegistry(args.registry)


def _list(args) -> int:
    from src.common.registry_format import format_value

    registry = _registry(args)
    if args.json:  # whole entries
        entries = _checked("list", registry.find_entries_by_task, args.task) if args.task is not None \
            else registry.list_entries()
    else:  # what the table shows, from the index: no whole entry is read
        entries = _checked("list", registry.list_summaries, args.task, metrics=bool(args.sort))
    if args.sort:
        entries = _sorted_by_metric(entries, args.sort, args.mode)
    if args.json:
        print(json.dumps(entries, indent=2, ensure_ascii=False))
        return 0
    if not entries:
        print(f"no entries in {registry.path}" + (f" for task {args.task}" if args.task else ""))
        return 0
    headers = ["RUN_ID", "TASK", "STATUS", "FINISHED", "CONFIG"] + ([args.sort.upper()] if args.sort else []) + \
        ["METRICS"]
    if args.sort:
        rows = [(e["run_id"], e["task"], e["status"] or "-", e["timestamp"][:19], e["config_hash"],
                 format_value(e["metrics"].get(args.sort)), e["metrics_line"]) for e in entries]
    else:
        rows = [(e["run_id"], e["task"], e["status"] or "-", e["timestamp"][:19], e["config_hash"],
                 e["metrics_line"]) for e in entries]
    print(format_table(headers, rows))
    print(f"{len(entries)} entr{'y' if len(entries) == 1 else 'ies'} in {registry.path}")
    return 0


def _best(args) -> int:
    from src.common.registry_format import format_value

    registry = _registry(args)
    entry = _checked("best", registry.find_best_entry_by_metric, task=args.task, metric_name=args.metric,
                     mode=args.mode)
    if entry is None:
        print(f"no {args.task} entry in {registry.path} has a numeric metric {args.metric!r}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(entry, indent=2, ensure_ascii=False))
    else:
        print(f"run_id:     {entry['run_id']}\n{args.metric}: {format_value(entry['metrics'][args.metric])}\n"
              f"checkpoint: {entry['checkpoint_path']}\nconfig:     {entry.get('config_path') or '-'}")
    return 0


def _show(args) -> int:
    from pathlib import Path

    from src.common.errors import UserError
    from src.common.registry_format import format_value, metrics_line
    from src.inference.exports_record import read_exports

    registry = _registry(args)
    entry = _checked("show", registry.get_entry, args.run_id)
    if entry is None:
        raise UserError(f"run {args.run_id!r} is not in registry {registry.path}; "
                        "see `street-scene registry list` for the run ids")
    run_dir = Path(entry.get("run_dir") or Path(entry["checkpoint_path"]).parent)
    exports = read_exports(run_dir) if run_dir.is_dir() else []
    if args.json:
        print(json.dumps({**entry, "exports": exports}, indent=2, ensure_ascii=False))
        return 0
    print(f"run_id:     {entry['run_id']}\ntask:       {entry['task']}\nconfig:     {entry['config_hash']}\n"
          f"checkpoint: {entry['checkpoint_path']}\nsha256:     {entry.get('checkpoint_sha256') or '-'}\n"
          f"metrics:    {metrics_line(entry['metrics'])}")
    if not exports:
        print("exports:    none (street-scene export --checkpoint RUN_ID --format onnx)")
        return 0
    rows = [(e.get("format", "-"), e.get("created_at", "-"), "dynamic" if e.get("dynamic") else
             "x".join(map(str, e.get("imgsz") or [])), format_value((e.get("parity") or {}).get("max_rel_diff")),
             e.get("path", "-")) for e in exports]
    print(format_table(["FORMAT", "CREATED", "INPUT", "PARITY_REL", "PATH"], rows))
    return 0


def _export(args) -> int:
    registry = _registry(args)
    count = registry.export_to_csv(args.csv)
    print(f"exported {count} entr{'y' if count == 1 else 'ies'} from {registry.path} to {args.csv}")
    return 0


def _remove(args) -> int:
    from src.common.errors import UserError

    registry = _registry(args)
    if not _checked("remove", registry.remove_entry, args.run_id):
        raise UserError(f"run {args.run_id!r} is not in registry {registry.path}; "
                        "see `street-scene registry list` for the run ids")
    print(f"removed {args.run_id} from {registry.path} (its run directory was not touched)")
    return 0


def _rebuild(args) -> int:
    registry = _registry(args)
    report = registry.rebuild(args.outputs)
    if report.moved_aside:
        print(f"moved the corrupt registry aside to {report.moved_aside}")
    from src.pipelines.run_status import EMPTY, STALE, run_state

    for run_dir, why in report.skipped:
        state = run_state(run_dir)
        print(f"skipped {run_dir.name}: " + (f"{state.status}: {state.note}" if state.status == STALE else why))
    empty = [p for p in sorted(report.outputs_dir.iterdir()) if p.is_dir() and not p.name.startswith(".")
             and run_state(p).status == EMPTY]
    for run_dir in empty:
        print(f"skipped {run_dir.name}: empty (killed before it recorded anything); nothing to keep, delete it")
    for run_id in report.dropped:
        print(f"dropped {run_id}: no completed run directory for it under {report.outputs_dir}")
    print(f"rebuilt {registry.path}: {len(report.entries)} entries from {report.outputs_dir}, "
          f"{len(report.skipped) + len(empty)} run directories skipped")
    return 0


def _verify(args) -> int:
    registry = _registry(args)
    results = registry.verify()
    if not results:
        print(f"no entries in {registry.path}")
        return 0
    rows = [[r.run_id, r.checkpoint, r.sha256, r.config_hash, "ok" if r.ok else "PROBLEM"] for r in results]
    print(format_table(["RUN_ID", "CHECKPOINT", "SHA256", "CONFIG_HASH", "RESULT"], rows))
    bad = sum(not r.ok for r in results)
    print(f"{len(results) - bad} of {len(results)} entries ok" + (f", {bad} with problems" if bad else ""))
    return 1 if bad else 0


def _sorted_by_metric(entries, metric, mode):
    def key(e):
        value = e["metrics"].get(metric)
        usable = type(value) in (int, float) and value == value
        return (not usable, (-value if mode == "max" else value) if usable else 0, e["timestamp"], e["run_id"])

    return sorted(entries, key=key)


def format_table(headers, rows) -> str:
    table = [tuple(map(str, headers)), *(tuple(map(str, row)) for row in rows)]
    widths = [max(map(len, col)) for col in zip(*table)]
    pad = widths[:-1] + [0]  # the last column is not padded (lines are right-stripped anyway)
    lines = ["  ".join(map(str.ljust, cells, pad)).rstrip() for cells in table]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)
