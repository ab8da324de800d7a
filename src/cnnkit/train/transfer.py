"""Start training from another checkpoint's weights: a new classifier head when the classes differ, and frozen
features (weights fixed, batch norm on its population statistics) when asked."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from torch import nn

from cnnkit.core.errors import CnnkitError
from cnnkit.data.preprocess import Preprocessing
from cnnkit.layers.batchnorm import BatchNorm2d
from cnnkit.store.checkpoint import build_model, model_from_checkpoint
from cnnkit.train.config import Named, SettingError

FREEZE_CHOICES = ("none", "features")


def read_start(path: str | Path) -> tuple[nn.Module, Preprocessing | None, dict]:
    """The starting checkpoint: its model, the preprocessing its weights were trained with, and its metadata."""
    return model_from_checkpoint(path)


def adapt(start: tuple[nn.Module, Preprocessing | None, dict], spec: dict, class_names: list[str], path: str | Path,
          say: Callable[[str], None]) -> nn.Module:
    """The model `spec` describes (the new data's classes), initialised from the starting checkpoint.

    The architecture must be the checkpoint's (same model, options, channels and input size). When the classes
    differ in number or names the classifier's last layer starts fresh, and `say` reports it.
    """
    source, _, meta = start
    old = meta["model"]
    same = [old[k] == spec[k] for k in ("name", "options", "in_channels")] + [
        list(old["input_size"]) == list(spec["input_size"])]
    if not all(same):
        raise SettingError(Named("init_from", path), f" holds {old['name']} {old['options']} for "
                           f"{old['in_channels']}x{old['input_size'][0]}x{old['input_size'][1]} inputs; this run "
                           f"builds {spec['name']} {spec['options']} for {spec['in_channels']}x{spec['input_size'][0]}"
                           f"x{spec['input_size'][1]} (pass ", Named("model", old["name"]), " and ",
                           Named("image_size"), " to match)")
    model = build_model(spec)
    last = _classifier(model)
    same_classes = class_names == list(meta.get("class_names") or [])
    state, replaced = model.state_dict(), []
    for key, value in source.state_dict().items():
        if (not same_classes and key.startswith(f"{last}.")) or state[key].shape != value.shape:
            if not key.startswith(f"{last}."):
                raise SettingError(Named("init_from", path), f": {key} has shape {tuple(value.shape)}, the new "
                                   f"model {tuple(state[key].shape)}; only the classifier's last layer may differ")
            replaced.append(key)
            continue
        state[key] = value
    model.load_state_dict(state)
    if replaced:
        ours = _classes(class_names, len(class_names))
        theirs = _classes(meta.get("class_names") or [], old["num_classes"])
        say(f"init from {path}: a new classifier layer {last} for {ours} (the checkpoint had {theirs}); every other "
            "weight comes from the checkpoint")
    else:
        say(f"init from {path}: every weight comes from the checkpoint (the same classes)")
    return model


def _classifier(model: nn.Module) -> str:
    """The name of the model's last layer with weights: the one that maps features to classes."""
    names = [name for name, module in model.named_modules() if isinstance(module, (nn.Linear, nn.Conv2d))]
    if not names:
        raise CnnkitError("the model has no dense or conv layer to serve as its classifier")
    return names[-1]


def freeze_features(model: nn.Module) -> int:
    """Fix the feature extractor: no gradients for `model.features`, and its batch norms on their population
    statistics (never updated); returns how many parameter values stay fixed."""
    fixed = 0
    for parameter in model.features.parameters():
        parameter.requires_grad = False
        fixed += parameter.numel()
    for module in model.features.modules():
        if isinstance(module, BatchNorm2d):
            module.frozen = True
            module.eval()
    return fixed


def _classes(names: list[str], count: int, shown: int = 5) -> str:
    """'3 classes: 0, 1, 2' (the first `shown` names, then '...'); '10 classes' where no names are known."""
    if not names:
        return f"{count} classes"
    return f"{count} classes: " + ", ".join(names[:shown]) + (", ..." if len(names) > shown else "")
