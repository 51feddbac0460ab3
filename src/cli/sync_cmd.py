"""`street-scene sync mlflow|wandb RUN... [--all]`: copy run directories into an experiment tracker.

Idempotent: syncing a run again updates the tracker's run instead of creating another. Nothing in the run
directory is changed. mlflow / wandb are imported only when a sync actually runs.
"""

import argparse
import sys
from typing import Callable, List

HELP = "sync run directories into MLflow or Weights & Biases (idempotent; safe to repeat)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("runs", nargs="*", metavar="RUN", help="run id (under $STREET_SCENE_OUTPUT_DIR, else "
                        "outputs) or run directory; a running run can be synced now and again later")
    common.add_argument("--all", action="store_true", help="every run in the model registry")
    common.add_argument("--registry", metavar="PATH", help="registry file for --all (default: "
                        "$STREET_SCENE_REGISTRY, else registry/model_registry.json)")
    common.add_argument("--log-checkpoint", action="store_true",
                        help="also upload best_model.pth (skipped by default: it can be large)")
    sub = parser.add_subparsers(dest="sync_target", metavar="TARGET", required=True)

    p = sub.add_parser("mlflow", parents=[common], help="sync into MLflow (one MLflow run per street-scene run)")
    p.add_argument("--tracking-uri", metavar="URI", help="e.g. http://127.0.0.1:5000 or sqlite:///mlflow.db "
                   "(default: the run's tracking.mlflow.tracking_uri, else $MLFLOW_TRACKING_URI, else MLflow's)")
    p.add_argument("--experiment", metavar="NAME", help="MLflow experiment (default: the run's "
                   "tracking.mlflow.experiment, else $MLFLOW_EXPERIMENT_NAME, else street-scene)")
    p.add_argument("--register-model", metavar="NAME", help="also register the run's model as a version of this "
                   "MLflow registered model: an mlflow.pyfunc model holding best_model.pth (and the ONNX export, if "
                   "any), tagged with run id, config hash, task, subtask, checkpoint sha256 (completed runs only; "
                   "a name holds models of one task and subtask)")
    p.add_argument("--mlflow-artifact-location", metavar="PATH_OR_URI", help="where an experiment this sync "
                   "creates stores its artifacts (<this>/<experiment>); an existing experiment must already store "
                   "them there (default: $STREET_SCENE_MLFLOW_ARTIFACTS, else mlartifacts/ beside a sqlite "
                   "database, else the store's or server's own choice)")
    p.add_argument("--timeout", type=float, default=5.0, metavar="SECONDS",
                   help="give up on an unreachable tracking server after this long (default 5)")
    p.set_defaults(sync_handler=_sync_mlflow)

    p = sub.add_parser("wandb", parents=[common], help="sync into Weights & Biases (offline by default)")
    p.add_argument("--project", help="W&B project (default: the run's tracking.wandb.project, else "
                   "$WANDB_PROJECT, else street-scene)")
    p.add_argument("--entity", help="W&B entity (team or user; default: yours)")
    p.add_argument("--mode", choices=("offline", "online"), help="offline writes a folder to upload later with "
                   "`wandb sync`; online needs `wandb login` (default: the run's tracking.wandb.mode, else "
                   "$WANDB_MODE, else offline)")
    p.set_defaults(sync_handler=_sync_wandb)


def run(args: argparse.Namespace) -> int:
    from src.common.errors import UserError

    refs = _run_refs(args)
    if not refs:
        raise UserError(f"nothing to sync: name runs (street-scene sync {args.sync_target} RUN...) or pass --all")
    return args.sync_handler(args, refs)


def _run_refs(args) -> List[str]:
    refs = list(args.runs)
    if args.all:
        from src.common.model_registry import ModelRegistry

        refs += [e.get("run_dir") or e["run_id"] for e in ModelRegistry(args.registry).list_entries()]
    return list(dict.fromkeys(refs))  # a run named twice is synced once


def _sync_mlflow(args, refs: List[str]) -> int:
    from src.tracking.common import load_run, tracking_settings
    from src.tracking.mlflow_sync import MlflowTarget

    targets = {}  # (uri, experiment) -> MlflowTarget: connect once per destination

    def sync_one(ref: str) -> str:
        record = load_run(ref)
        settings, _ = tracking_settings(record.config)
        where = (args.tracking_uri or settings.tracking_uri, args.experiment or settings.experiment)
        if where not in targets:
            targets[where] = MlflowTarget(*where, timeout=args.timeout,  # unreachable: stops the whole command
                                          artifact_location=args.mlflow_artifact_location)
        r = targets[where].sync(record, log_checkpoint=args.log_checkpoint, register_model=args.register_model)
        model = f"; model {args.register_model} version {r.model_version}" if r.model_version else ""
        return (f"mlflow: {r.run_id} -> run {r.mlflow_run_id} ({'created' if r.created else 'updated'}) in "
                f"experiment {where[1]!r} at {r.tracking_uri}{model}")

    return _sync_each(refs, sync_one)


def _sync_wandb(args, refs: List[str]) -> int:
    from src.tracking.wandb_sync import check_mode, sync_wandb

    if args.mode:
        check_mode(args.mode)  # missing credentials fail once, before any run

    def sync_one(ref: str) -> str:
        r = sync_wandb(ref, project=args.project, mode=args.mode, entity=args.entity,
                       log_checkpoint=args.log_checkpoint)
        hint = f"; upload with: wandb sync {r.location}" if r.mode == "offline" else ""
        return f"wandb: {r.run_id} -> {r.project}/{r.wandb_run_id} ({r.mode}) {r.location}{hint}"

    try:
        return _sync_each(refs, sync_one)
    finally:
        if "wandb" in sys.modules:  # wandb-core may still be writing the offline logs: let it finish now
            sys.modules["wandb"].teardown()


def _sync_each(refs: List[str], sync_one: Callable[[str], str]) -> int:
    """Sync every run; one run's bad input is reported and the rest go on, but an unreachable tracker stops
    the command. A single run's error is raised as is (one line); with several, a summary error follows."""
    from src.common.errors import UserError
    from src.tracking.common import TrackerUnavailable

    if len(refs) == 1:
        print(sync_one(refs[0]))
        return 0
    failed = 0
    for ref in refs:
        try:
            print(sync_one(ref))
        except TrackerUnavailable:
            raise
        except UserError as exc:
            failed += 1
            print(f"error: {ref}: {exc}", file=sys.stderr)
    if failed:
        raise UserError(f"{failed} of {len(refs)} runs were not synced (see the errors above); the others were")
    return 0
