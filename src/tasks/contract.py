"""The contract between a task family (src/tasks/<family>/task.py) and the shared lifecycle (src/pipelines).

A task is a module: `Task` lists what it must provide. What travels between the lifecycle's steps is typed here,
so that no step reads another's dict keys:

    prepare_train / prepare_eval  -> PreparedData  (checked before the run directory exists)
    train(ctx)                    -> TrainOutcome  (the lifecycle writes metadata, registry entry, curves)
    evaluate(ctx)                 -> EvalOutcome
"""

from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Protocol, Tuple, runtime_checkable


@dataclass
class PreparedData:
    """Data (and anything else) a task checked up front. `record` is what metadata.yaml / the evaluation record
    keep under `data`; `splits` and `extras` are the task's own (resolved splits, ignore index, a model)."""

    names: List[str]  # class names, index = class id
    record: Dict[str, Any]
    fingerprints: Optional[Dict[str, Any]] = None  # per split; recorded as dataset_fingerprints
    splits: Dict[str, Any] = field(default_factory=dict)
    extras: Dict[str, Any] = field(default_factory=dict)
    # An object built while checking that training can use instead of building a second one (detection: the
    # YOLO model). Handed out once: see take_prebuilt().
    prebuilt: Any = field(default=None, repr=False)

    def take_prebuilt(self) -> Any:
        value, self.prebuilt = self.prebuilt, None
        return value


@dataclass
class TrainOutcome:
    metrics: Dict[str, Any]  # what the registry records: the task's result_metrics(history, best_epoch)
    metadata: Dict[str, Any] = field(default_factory=dict)  # facts only known after training (e.g. determinism)


@dataclass
class EvalOutcome:
    metrics: Dict[str, Any]  # "test/<name>": value
    per_class: Dict[str, Dict[str, Any]] = field(default_factory=dict)  # class name -> {"test/<name>": value}
    details: Dict[str, Any] = field(default_factory=dict)  # task-specific extras (e.g. ultralytics' speed)


@runtime_checkable
class Task(Protocol):
    """What a task module provides. Every member is required; a task without legacy checkpoints says so with
    ACCEPTS_LEGACY_CHECKPOINTS = False and a before_legacy_load that does nothing."""

    BEST_METRIC: str  # the validation metric best_model.pth is chosen by (higher is better)
    RESUME_SAFE_KEYS: Tuple[str, ...]  # config keys a resumed run may change (where it runs, never what)
    ACCEPTS_LEGACY_CHECKPOINTS: bool

    def prepare_train(self, config: Dict[str, Any], subtask: str, train_data: Optional[str],
                      val_data: Optional[str], data_yaml: Optional[str], device: str) -> PreparedData: ...

    def train(self, ctx: Any) -> TrainOutcome: ...

    def result_metrics(self, history: List[Dict[str, Any]], best_epoch: int) -> Dict[str, Any]: ...

    def total_epochs(self, config: Dict[str, Any]) -> int: ...

    def check_model_spec(self, spec: Any, where: str) -> Dict[str, Any]: ...

    def before_legacy_load(self) -> None: ...

    def prepare_eval(self, config: Dict[str, Any], subtask: str, test_data: Optional[str],
                     data_yaml: Optional[str], ckpt: Dict[str, Any]) -> PreparedData: ...

    def evaluate(self, ctx: Any) -> EvalOutcome: ...
