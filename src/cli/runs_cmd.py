"""`street-scene runs`: list run directories with their state; `runs finalize RUN` settles a run whose process
died (see src.pipelines.run_status)."""

import argparse

HELP = "list run directories and their state (running, stale, failed, ...); finalize runs whose process died"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.description = ("List every run directory under STREET_SCENE_OUTPUT_DIR (default ./outputs): completed, "
                          "failed, running, stale (status running but its process is gone) or empty, and what can "
                          "be done about it. `runs finalize RUN` registers a stale run that trained every epoch "
                          "(or a completed one missing from the registry), and marks other stale runs failed.")
    parser.add_argument("--json", action="store_true", help="print the list as JSON")
    parser.add_argument("--status", help="only runs in this state (e.g. stale)")
    sub = parser.add_subparsers(dest="runs_command", metavar="COMMAND")
    fin = sub.add_parser("finalize", help="complete and register a stale run that finished training, or mark it "
                                          "failed", description="Holding the run's lock: remove files half-written "
                                                                "by the dead process, then complete it from its "
                                                                "final checkpoint and register it, or mark it failed.")
    fin.add_argument("run", metavar="RUN", help="run id or run directory")


def run(args: argparse.Namespace) -> int:
    if getattr(args, "runs_command", None) == "finalize":
        from src.pipelines.run_status import finalize_run

        state = finalize_run(args.run)
        verb = "completed and registered" if state.status == "completed" else f"marked {state.status}"
        print(f"Run {state.run_id} {verb}" + (f": {state.note}" if state.note else ""))
        return 0
    return _list(args)


def _list(args) -> int:
    import json

    from src.cli.registry_cmd import format_table
    from src.pipelines.run_status import list_runs

    states = [s for s in list_runs() if args.status in (None, s.status)]
    if args.json:
        print(json.dumps([s.as_dict() for s in states], indent=2))
        return 0
    if not states:
        print("no run directories" + (f" with status {args.status}" if args.status else ""))
        return 0
    rows = [(s.run_id, s.status, s.subtask or "", s.epochs, s.heartbeat or "", s.note) for s in states]
    print(format_table(("RUN ID", "STATUS", "SUBTASK", "EPOCHS", "LAST HEARTBEAT", "WHAT TO DO"), rows))
    return 0
