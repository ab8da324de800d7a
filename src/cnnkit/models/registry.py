"""A small model registry: register_model, get_model, list_models (torchvision's `_api.py` pattern)."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass

from torch import nn

from cnnkit.arithmetic import pair
from cnnkit.errors import CnnkitError


@dataclass(frozen=True)
class ModelInfo:
    """What the registry knows of a model: its builder, source and defaults."""

    name: str
    builder: Callable[..., nn.Module]
    paper: str
    input_size: tuple[int, int, int]  # default (C, H, W)
    num_classes: int
    min_size: int = 1  # smallest H and W the model accepts


_MODELS: dict[str, ModelInfo] = {}


def register_model(
    name: str, *, paper: str, input_size: tuple[int, int, int], num_classes: int = 1000, min_size: int = 1,
) -> Callable[[Callable[..., nn.Module]], Callable[..., nn.Module]]:
    """Decorator adding a builder `fn(num_classes, in_channels, input_size, **options)` under `name`."""

    def add(builder: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        if name in _MODELS:
            raise CnnkitError(f"a model named {name!r} is already registered")
        _MODELS[name] = ModelInfo(name, builder, paper, input_size, num_classes, min_size)
        return builder

    return add


def model_info(name: str) -> ModelInfo:
    """The registry entry for `name`; unknown names list the known ones."""
    _load_families()
    if name not in _MODELS:
        raise CnnkitError(f"unknown model {name!r}; known models: {', '.join(sorted(_MODELS))}")
    return _MODELS[name]


def list_models() -> list[str]:
    """Sorted names of every registered model."""
    _load_families()
    return sorted(_MODELS)


def resolved_options(name: str, options: dict) -> dict:
    """The builder's option defaults overridden by `options`: what a checkpoint records, so that a later change
    of a default (say digits_cnn's width) cannot break rebuilding an old model."""
    fixed = {"num_classes", "in_channels", "input_size"}
    signature = inspect.signature(model_info(name).builder)
    defaults = {k: p.default for k, p in signature.parameters.items()
                if k not in fixed and p.default is not inspect.Parameter.empty}
    return {**defaults, **options}


def get_model(
    name: str, num_classes: int | None = None, in_channels: int | None = None,
    input_size: int | tuple[int, int] | None = None, **options,
) -> nn.Module:
    """Build a registered model; sizes default to the paper's, and a too-small input size names the minimum."""
    info = model_info(name)
    channels = info.input_size[0] if in_channels is None else in_channels
    size = info.input_size[1:] if input_size is None else pair(input_size, "input_size")
    classes = info.num_classes if num_classes is None else num_classes
    if min(size) < info.min_size:
        raise CnnkitError(f"{name} needs inputs of at least {info.min_size}x{info.min_size}; received input_size="
                          f"{size[0]}x{size[1]}")
    if classes < 1 or channels < 1:
        raise CnnkitError(f"num_classes and in_channels must be positive; received {classes} and {channels}")
    try:
        model = info.builder(num_classes=classes, in_channels=channels, input_size=size, **options)
    except TypeError as error:
        raise CnnkitError(f"{name}: {error}") from None
    model.model_name = name
    model.input_shape = (channels, *size)
    return model


def _load_families() -> None:
    # Importing the family modules registers their models; done lazily to keep `import cnnkit` light.
    from cnnkit.models import alexnet, digits, googlenet, lenet, resnet, vgg  # noqa: F401
