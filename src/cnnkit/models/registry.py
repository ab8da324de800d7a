"""A small model registry: register_model, get_model, list_models (torchvision's `_api.py` pattern).

The families register themselves here when they are imported, as torchvision's and timm's do. The registry
imports them itself on its first lookup, not when it is imported: the families import torch (1-2 s), which
`cnnkit models`, `--help` and the light modules never need, and a lookup through any path (`cnnkit.models` or
this module) still sees every built-in model.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib import import_module
from typing import TYPE_CHECKING

from cnnkit.core.arithmetic import pair
from cnnkit.core.errors import CnnkitError

if TYPE_CHECKING:
    from torch import nn

FIXED_ARGUMENTS = ("num_classes", "in_channels", "input_size")  # every builder takes these; the rest are options
FAMILIES = ("alexnet", "digits", "googlenet", "lenet", "resnet", "vgg")  # modules of cnnkit.models that register


def sgd_recipe(lr: float, **changes: object) -> dict:
    """The zoo's natural-image training recipe: SGD with Nesterov momentum 0.9, weight decay 5e-4, a one-epoch
    warm-up into a cosine decay, batch 128, 30 epochs, 2-pixel shifts, label smoothing 0.1 (the papers' recipes,
    shortened for small data sets); `lr` follows the normalisation (BN nets take 0.1, plain ones 0.01)."""
    return {"optimizer": "sgd", "lr": lr, "momentum": 0.9, "nesterov": True, "weight_decay": 5e-4,
            "schedule": "cosine", "warmup_epochs": 1.0, "batch_size": 128, "epochs": 30, "shift": 2,
            "label_smoothing": 0.1, **changes}


@dataclass(frozen=True)
class ModelInfo:
    """What the registry knows of a model: its builder, source, defaults and a small size for tests."""

    name: str
    builder: Callable[..., nn.Module]
    paper: str
    input_size: tuple[int, int, int]  # default (C, H, W)
    num_classes: int
    min_size: int = 1  # smallest H and W the model accepts
    test_size: tuple[int, int, int] = (3, 32, 32)  # a small (C, H, W) it takes, for registry-driven tests
    recipe: dict = field(default_factory=dict)  # training defaults for this model (TrainConfig field -> value)

    @property
    def options(self) -> dict[str, inspect.Parameter]:
        """The builder's options (its keyword arguments beyond the fixed ones), by name."""
        parameters = inspect.signature(self.builder, eval_str=True).parameters
        return {name: p for name, p in parameters.items() if name not in FIXED_ARGUMENTS}


_MODELS: dict[str, ModelInfo] = {}
_families_loading = False  # True once the built-in families have started importing (a family's own import too)


def load_families() -> None:
    """Import every built-in family once, so that its models are registered (a no-op afterwards)."""
    global _families_loading
    if _families_loading:
        return
    _families_loading = True
    for family in FAMILIES:
        import_module(f"cnnkit.models.{family}")


def registered_names() -> list[str]:
    """Sorted names registered so far, without importing any family (list_models imports them)."""
    return sorted(_MODELS)


def register_model(
    name: str, *, paper: str, input_size: tuple[int, int, int], num_classes: int = 1000, min_size: int = 1,
    test_size: tuple[int, int, int] | None = None, recipe: dict | None = None,
) -> Callable[[Callable[..., nn.Module]], Callable[..., nn.Module]]:
    """Decorator adding a builder `fn(num_classes, in_channels, input_size, **options)` under `name`."""

    def add(builder: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        load_families()  # a name of the zoo is refused whichever is registered first
        if name in _MODELS:
            raise CnnkitError(f"a model named {name!r} is already registered")
        small = test_size or (input_size[0], *(min(s, 32) for s in input_size[1:]))
        _MODELS[name] = ModelInfo(name, builder, paper, input_size, num_classes, min_size, small, dict(recipe or {}))
        return builder

    return add


def model_info(name: str) -> ModelInfo:
    """The registry entry for `name`; unknown names list the known ones."""
    load_families()
    if name not in _MODELS:
        raise CnnkitError(f"unknown model {name!r}; known models: {', '.join(sorted(_MODELS))}")
    return _MODELS[name]


def list_models() -> list[str]:
    """Sorted names of every registered model."""
    load_families()
    return sorted(_MODELS)


def resolved_options(name: str, options: dict) -> dict:
    """The builder's option defaults overridden by `options`: what a checkpoint records, so that a later change
    of a default (say digits_cnn's width) cannot break rebuilding an old model."""
    defaults = {k: p.default for k, p in model_info(name).options.items() if p.default is not inspect.Parameter.empty}
    return {**defaults, **check_options(name, options)}


def check_options(name: str, options: dict) -> dict:
    """Refuse option names the builder does not take and values of the wrong type, naming both."""
    known = model_info(name).options
    for key, value in options.items():
        if key not in known:
            listed = ", ".join(known) or "none"
            raise CnnkitError(f"{name} has no option {key!r}; its options: {listed}")
        expected = known[key].annotation
        if expected in (int, float, bool) and not _fits_type(value, expected):
            raise CnnkitError(f"{name} option {key} must be {expected.__name__}; received {key}={value!r}")
    return dict(options)


def _fits_type(value: object, expected: type) -> bool:
    if expected is bool:
        return isinstance(value, bool)
    if isinstance(value, bool):
        return False
    return isinstance(value, (int, float)) if expected is float else isinstance(value, int)


def input_shape(name: str, in_channels: int | None = None,
                input_size: int | tuple[int, int] | None = None) -> tuple[int, int, int]:
    """The (C, H, W) a model is built for: the paper's sizes unless given; sizes that are no whole numbers refused."""
    info = model_info(name)
    if in_channels is not None and (isinstance(in_channels, bool) or not isinstance(in_channels, int)):
        raise CnnkitError(f"in_channels must be a whole number of 1 or more; received {in_channels!r}")
    channels = info.input_size[0] if in_channels is None else in_channels
    size = info.input_size[1:] if input_size is None else pair(input_size, "input_size")
    return channels, *size


def get_model(
    name: str, num_classes: int | None = None, in_channels: int | None = None,
    input_size: int | tuple[int, int] | None = None, **options,
) -> nn.Module:
    """Build a registered model; sizes default to the paper's, and a too-small input size names the minimum."""
    info = model_info(name)
    shape = input_shape(name, in_channels, input_size)
    channels, size = shape[0], shape[1:]
    if num_classes is not None and (isinstance(num_classes, bool) or not isinstance(num_classes, int)):
        raise CnnkitError(f"num_classes must be a whole number of 1 or more; received {num_classes!r}")
    classes = info.num_classes if num_classes is None else num_classes
    if min(size) < info.min_size:
        raise CnnkitError(f"{name} needs inputs of at least {info.min_size}x{info.min_size}; received input_size="
                          f"{size[0]}x{size[1]}")
    if classes < 1 or channels < 1:
        raise CnnkitError(f"num_classes and in_channels must be positive; received {classes} and {channels}")
    model = info.builder(num_classes=classes, in_channels=channels, input_size=size, **check_options(name, options))
    model.model_name = name
    model.input_shape = (channels, *size)
    return model
