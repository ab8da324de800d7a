"""PyTorch state dicts into cnnkit models: cnnkit's own, or torchvision's through each family's name mapping.

A model family that can take torchvision's published weights says how, beside its definition:
`torchvision_names()` maps torchvision's module names to its own, and `torchvision_options(keys)` gives the
builder options under which those weights compute what they compute in torchvision (ResNet's stride in the 3x3
conv, GoogLeNet's layout). Every tensor is placed by name and checked by shape; nothing is left unplaced.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from cnnkit.core.errors import CnnkitError
from cnnkit.core.limits import check_limit
from cnnkit.models import get_model

COUNTERS = ("num_batches_tracked",)  # BN step counters: older torchvision files lack them


def read_torch_state(path: Path, trust: bool) -> dict[str, torch.Tensor]:
    """A pickled PyTorch state dict, only when the user trusts its source, and then with weights_only=True."""
    if not trust:
        raise CnnkitError(f"{path}: pickled files can run code when loaded; pass --trust if you trust its source "
                          "(it is then read with weights_only=True)")
    try:
        check_limit("file_bytes", path.stat().st_size, f"{path}: bytes")
        state = torch.load(path, map_location="cpu", weights_only=True)
    except CnnkitError:
        raise
    except FileNotFoundError:
        raise CnnkitError(f"{path}: no such file") from None
    except Exception as error:  # noqa: BLE001 - the unpickler refuses non-tensor content in many ways
        raise CnnkitError(f"{path}: not a plain tensor state dict ({type(error).__name__})") from None
    state = state.get("state_dict", state.get("model", state)) if isinstance(state, dict) else state
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CnnkitError(f"{path}: holds a {type(state).__name__} that is not a name -> tensor state dict")
    check_limit("parameters", sum(v.numel() for v in state.values()), f"{path}: values in all tensors")
    return state


def torch_state_model(
    state: dict[str, torch.Tensor], name: str, num_classes: int | None, input_shape: tuple[int, int, int] | None,
    options: dict,
) -> tuple[nn.Module, dict, str]:
    """(model holding `state`, the options it was built with, 'cnnkit' or 'torchvision')."""
    probe = meta_model(name, num_classes, input_shape, options)
    ours = probe.state_dict()
    if set(state) <= set(ours) and _covers(state, ours):
        layout, names = "cnnkit", {k: k for k in ours}
    elif hasattr(probe, "torchvision_names"):
        options = {**probe.torchvision_options(set(state)), **options}
        probe = meta_model(name, num_classes, input_shape, options)
        layout, names = "torchvision", expand_names(probe.torchvision_names(), probe.state_dict())
        _check_keys(state, names, name)
    else:
        unknown = sorted(set(state) - set(ours))
        raise CnnkitError(f"the state dict does not fit {name}: it has {unknown[0] if unknown else 'missing'!r} "
                          f"{'among its keys' if unknown else 'keys'}, and {name} has no torchvision mapping")
    if num_classes is None:
        classifier = [k for k, m in probe.named_modules() if isinstance(m, nn.Linear)][-1] + ".weight"
        source = next((theirs for theirs, mine in names.items() if mine == classifier), classifier)
        num_classes = state[source].shape[0] if source in state else None
    model = build(name, num_classes, input_shape, options)
    _place(model, state, names)
    return model, options, layout


def meta_model(name: str, num_classes: int | None, input_shape: tuple[int, int, int] | None,
               options: dict) -> nn.Module:
    """The model on the meta device (names and shapes only: no memory, no initialisation), within the caps."""
    if num_classes is not None:
        check_limit("classes", num_classes, f"{name}: classes")
    channels, size = (input_shape[0], input_shape[1:]) if input_shape else (None, None)
    with torch.device("meta"):
        model = get_model(name, num_classes=num_classes, in_channels=channels, input_size=size, **options)
    check_limit("parameters", sum(t.numel() for t in model.state_dict().values()), f"{name}: parameter values")
    return model


def build(name: str, num_classes: int | None, input_shape: tuple[int, int, int] | None, options: dict) -> nn.Module:
    """The model, built for real only after its shapes-only twin passed the caps (a width of 6000 in a flag must
    not allocate gigabytes)."""
    meta_model(name, num_classes, input_shape, options)
    channels, size = (input_shape[0], input_shape[1:]) if input_shape else (None, None)
    return get_model(name, num_classes=num_classes, in_channels=channels, input_size=size, **options)


def expand_names(modules: dict[str, str], ours: dict[str, torch.Tensor]) -> dict[str, str]:
    """Module name mapping -> tensor name mapping (weight, bias, running_mean, running_var, counters)."""
    theirs_of = {mine: theirs for theirs, mine in modules.items()}
    names = {}
    for key in ours:
        module, _, tensor = key.rpartition(".")
        if module in theirs_of:
            names[f"{theirs_of[module]}.{tensor}"] = key
    return names


def _covers(state: dict[str, torch.Tensor], ours: dict[str, torch.Tensor]) -> bool:
    """Whether `state` has every tensor of `ours` (step counters aside)."""
    return all(key in state for key in ours if key.rpartition(".")[2] not in COUNTERS)


def _check_keys(state: dict[str, torch.Tensor], names: dict[str, str], model: str) -> None:
    """Every tensor of a torchvision state dict has a place, and every place a tensor (step counters aside)."""
    unplaced = [key for key in state if key not in names]
    if unplaced:
        raise CnnkitError(f"the state dict fits neither cnnkit's {model} nor torchvision's: it holds {unplaced[0]!r} "
                          f"({len(unplaced)} such keys)")
    missing = [key for key in names if key not in state and key.rpartition(".")[2] not in COUNTERS]
    if missing:
        raise CnnkitError(f"the state dict lacks torchvision's {missing[0]!r} ({len(missing)} missing) for {model}")


def _place(model: nn.Module, state: dict[str, torch.Tensor], names: dict[str, str]) -> None:
    """Copy each tensor to its place, naming both names when shapes differ."""
    targets = model.state_dict()
    with torch.no_grad():
        for theirs, mine in names.items():
            if theirs not in state:
                continue
            value, target = state[theirs], targets[mine]
            if tuple(value.shape) != tuple(target.shape):
                hint = f" (torchvision's {theirs!r})" if theirs != mine else ""
                raise CnnkitError(f"shapes differ at {mine}{hint}: the file holds {tuple(value.shape)}, the model "
                                  f"{tuple(target.shape)}")
            if value.dtype != target.dtype and not (value.is_floating_point() and target.is_floating_point()):
                raise CnnkitError(f"{theirs}: the file holds {str(value.dtype).removeprefix('torch.')} values; "
                                  f"{mine} is {str(target.dtype).removeprefix('torch.')}")
            if value.is_floating_point() and not bool(torch.isfinite(value).all()):
                raise CnnkitError(f"{theirs}: holds NaN or infinite values")
            target.copy_(value.to(target.dtype))
