"""Segmentation models from torchvision's zoo, built offline; forward returns logits (N, C, H, W)."""

from pathlib import Path
from typing import Optional

from src.common.errors import UserError
from src.common.report import note
# Names of torchvision.models.segmentation builders; the config schema owns the list. All are built with
# weights=None, weights_backbone=None: nothing is ever downloaded; pretrained weights come only from a local file.
from src.tasks.segmentation.schema import ARCHITECTURES


def build_model(architecture: str, num_classes: int, weights: Optional[Path] = None):
    """A fresh model (initialised from the current torch RNG; seed before calling) with optional local weights.

    `weights` may be a plain state dict (ours or torchvision's segmentation weights for the same architecture) or a
    checkpoint dict holding `model_state`. Auxiliary-head keys are ignored (we build without aux heads); classifier
    tensors whose shape differs (another class count) keep their fresh initialisation and are reported.
    """
    import torch.nn as nn
    from torchvision.models import segmentation

    if architecture not in ARCHITECTURES:
        raise UserError(f"unknown segmentation architecture {architecture!r}; choose one of {', '.join(ARCHITECTURES)}")
    if not isinstance(num_classes, int) or num_classes < 1:
        raise UserError(f"num_classes must be a positive integer, got {num_classes!r}; check the data yaml names")
    builder = getattr(segmentation, architecture)
    kwargs = {} if architecture.startswith("lraspp") else {"aux_loss": False}
    net = builder(weights=None, weights_backbone=None, num_classes=num_classes, **kwargs)
    if weights is not None:
        load_local_weights(net, Path(weights))

    class SegmentationNet(nn.Module):
        """Unwraps torchvision's {"out": logits} so callers (and DDP) see a plain tensor."""

        def __init__(self, inner):
            super().__init__()
            self.net = inner

        def forward(self, x):
            return self.net(x)["out"]

    model = SegmentationNet(net)
    model.architecture = architecture
    return model


def load_local_weights(net, path: Path) -> None:
    """Load a local weights file into a torchvision segmentation net (not the wrapper), weights_only."""
    import pickle

    import torch

    if not path.is_file():
        raise UserError(f"model weights file not found: {path}; give an existing local .pth path or leave it empty")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, ValueError) as exc:  # not a torch file / pickled classes
        raise UserError(f"cannot load model weights {path} with weights_only=True ({type(exc).__name__}); "
                        "give a plain state dict or a street-scene checkpoint") from exc
    if isinstance(state, dict) and isinstance(state.get("model_state"), dict):
        state = state["model_state"]
    if not isinstance(state, dict):
        raise UserError(f"model weights {path} hold a {type(state).__name__}, not a state dict")
    # Our checkpoints store the wrapper's keys ("net.backbone..."); torchvision files store the bare net's.
    state = {(k[4:] if k.startswith("net.") else k): v for k, v in state.items() if "aux_classifier" not in k}
    own = net.state_dict()
    kept, skipped = {}, []
    for key, value in state.items():
        if key in own and key.startswith("classifier") and tuple(value.shape) != tuple(own[key].shape):
            skipped.append(key)
        else:
            kept[key] = value
    missing, unexpected = net.load_state_dict(kept, strict=False)
    missing = [k for k in missing if k not in skipped]
    if missing or unexpected:
        raise UserError(f"model weights {path} do not match this architecture: {len(missing)} missing keys "
                        f"(e.g. {missing[:3]}), {len(unexpected)} unexpected (e.g. {unexpected[:3]}); "
                        "check the architecture in the config")
    if skipped:
        note(f"weights {path.name}: {len(skipped)} classifier tensors have another class count; kept fresh init")
