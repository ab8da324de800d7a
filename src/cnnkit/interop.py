"""Enter cnnkit from TensorFlow / Keras: weight layout converters and a Keras 3 weights reader.

Keras stores conv kernels HWIO, dense kernels (in, out) and flattens NHWC feature maps; PyTorch wants OIHW,
(out, in) and flattens NCHW. BN carries over as gamma/beta/moving mean/moving variance, with TF's epsilon and
its momentum as a decay (PyTorch momentum = 1 - Keras momentum).
"""

from __future__ import annotations

import io
import json
import re
import zipfile
from pathlib import Path

import numpy as np
import torch
from torch import nn

from cnnkit.checkpoint import PICKLE_SUFFIXES, model_spec, save_checkpoint
from cnnkit.data.safety import read_bytes
from cnnkit.errors import CnnkitError
from cnnkit.layers import BatchNorm2d, Flatten
from cnnkit.models import get_model, model_info


def conv_kernel_from_tf(kernel: np.ndarray) -> torch.Tensor:
    """[h, w, in, out] -> (out, in, h, w)."""
    return torch.from_numpy(np.ascontiguousarray(np.transpose(kernel, (3, 2, 0, 1)))).float()


def dense_kernel_from_tf(kernel: np.ndarray, nhwc_shape: tuple[int, int, int] | None = None) -> torch.Tensor:
    """(in, out) -> (out, in); with `nhwc_shape` = (H, W, C) of the flattened maps, also reorder the inputs from
    TF's NHWC flatten order to PyTorch's NCHW order, so a cnnkit Flatten() (NCHW) gives identical outputs."""
    weight = np.asarray(kernel)
    if nhwc_shape is not None:
        h, w, c = nhwc_shape
        if weight.shape[0] != h * w * c:
            raise CnnkitError(f"dense kernel has {weight.shape[0]} inputs; {h}x{w}x{c} maps flatten to {h * w * c}")
        weight = weight.reshape(h, w, c, -1).transpose(2, 0, 1, 3).reshape(h * w * c, -1)
    return torch.from_numpy(np.ascontiguousarray(weight.T)).float()


def keras_momentum_to_torch(momentum: float) -> float:
    """Keras' moving-average decay (0.99) -> PyTorch's update weight (0.01)."""
    return 1.0 - momentum


def read_keras_weights(path: Path) -> dict[str, list[np.ndarray]]:
    """Layer name -> its variables in Keras order, from a Keras 3 `.weights.h5` or `.keras` archive.

    Layers keep the model's order when the archive's config.json lists it; otherwise names sort naturally
    (conv2d, conv2d_1, conv2d_2, ...).
    """
    try:
        import h5py
    except ImportError:
        raise CnnkitError("reading Keras weights needs h5py: pip install 'cnnkit[interop]'") from None
    data, order = read_bytes(path), None
    if path.suffix == ".keras":
        try:
            with zipfile.ZipFile(io.BytesIO(data)) as archive:
                data = archive.read("model.weights.h5")
                config = json.loads(archive.read("config.json"))
                order = [layer["config"]["name"] for layer in config.get("config", {}).get("layers", [])]
        except (zipfile.BadZipFile, KeyError, json.JSONDecodeError) as error:
            raise CnnkitError(f"{path}: not a readable .keras archive ({error})") from None
    try:
        with h5py.File(io.BytesIO(data), "r") as file:
            if "layers" not in file:
                raise CnnkitError(f"{path}: no 'layers' group: not a Keras 3 weights file")
            layers = {}
            for name, group in file["layers"].items():
                if "vars" in group and len(group["vars"]):
                    variables = group["vars"]
                    layers[name] = [np.asarray(variables[str(i)]) for i in range(len(variables))]
    except (OSError, KeyError, ValueError) as error:
        raise CnnkitError(f"{path}: not a readable Keras weights file ({error})") from None
    names = [n for n in order if n in layers] if order else sorted(layers, key=_natural)
    if any(re.fullmatch(r"conv\d+_block\d+_\d+_\w+", n) for n in names):  # keras.applications ResNet naming
        names = sorted(names, key=_natural)
    return {name: layers[name] for name in names}


def _natural(name: str) -> tuple:
    """Sort key: conv2d, conv2d_1, conv2d_2, ...; keras.applications ResNet names put the shortcut (_0_) last
    in its block, as cnnkit's blocks hold it (residual branch first, then the projection)."""
    resnet = re.fullmatch(r"conv(\d+)_block(\d+)_(\d+)_(\w+)", name)
    if resnet:
        stage, block, index, kind = resnet.groups()
        return ("conv", int(stage), int(block), int(index) or 99, kind)
    stem = re.fullmatch(r"conv(\d+)_(conv|bn)", name)
    if stem:
        return ("conv", int(stem.group(1)), 0, 0, stem.group(2))
    match = re.fullmatch(r"(.*?)(?:_(\d+))?", name)
    return (match.group(1), int(match.group(2) or 0))


def _kind(arrays: list[np.ndarray]) -> str:
    if len(arrays) in (1, 2) and arrays[0].ndim == 4:
        return "conv"
    if len(arrays) in (1, 2) and arrays[0].ndim == 2:
        return "dense"
    if len(arrays) in (2, 4) and all(a.ndim == 1 for a in arrays):
        return "bn"
    return "other"


def load_keras_into(model: nn.Module, layers: dict[str, list[np.ndarray]], bn_epsilon: float | None = None) -> int:
    """Copy Keras layer weights into a cnnkit model, kind by kind in order (convs, dense layers, batch norms).

    The first dense layer after a conv stack is reordered when the model flattens NCHW. A layer whose shapes
    differ is named in the error. Returns the number of layers loaded.
    """
    ours: dict[str, list[tuple[str, nn.Module]]] = {"conv": [], "dense": [], "bn": []}
    for name, module in model.named_modules():
        if isinstance(module, nn.Conv2d):
            ours["conv"].append((name, module))
        elif isinstance(module, nn.Linear):
            ours["dense"].append((name, module))
        elif isinstance(module, BatchNorm2d):
            ours["bn"].append((name, module))
    theirs: dict[str, list[tuple[str, list[np.ndarray]]]] = {"conv": [], "dense": [], "bn": []}
    for name, arrays in layers.items():
        kind = _kind(arrays)
        if kind == "other":
            raise CnnkitError(f"Keras layer {name!r} holds variables of shapes {[a.shape for a in arrays]} that "
                              "cnnkit cannot map")
        theirs[kind].append((name, arrays))
    for kind in ours:
        if len(ours[kind]) != len(theirs[kind]):
            raise CnnkitError(f"the Keras file has {len(theirs[kind])} {kind} layers, the model {len(ours[kind])}")
    flatten_shape = _flatten_shape(model)
    with torch.no_grad():
        for kind in ("conv", "dense", "bn"):
            for index, ((our_name, module), (their_name, arrays)) in enumerate(zip(ours[kind], theirs[kind],
                                                                                   strict=True)):
                if kind == "conv":
                    tensors = [conv_kernel_from_tf(arrays[0])] + [torch.from_numpy(a).float() for a in arrays[1:]]
                    targets = [module.weight] + ([module.bias] if module.bias is not None else [])
                elif kind == "dense":
                    order = flatten_shape if index == 0 else None
                    tensors = [dense_kernel_from_tf(arrays[0], order)] + [torch.from_numpy(a).float()
                                                                          for a in arrays[1:]]
                    targets = [module.weight] + ([module.bias] if module.bias is not None else [])
                else:
                    tensors = [torch.from_numpy(a).float() for a in arrays]
                    targets = [module.weight, module.bias, module.running_mean, module.running_var]
                    if bn_epsilon is not None:
                        module.eps = bn_epsilon
                for tensor, target in zip(tensors, targets, strict=False):
                    if tuple(tensor.shape) != tuple(target.shape):
                        raise CnnkitError(f"shapes differ at {our_name} (Keras layer {their_name!r}): Keras gives "
                                          f"{tuple(tensor.shape)} after conversion, the model holds "
                                          f"{tuple(target.shape)}")
                    target.copy_(tensor)
                if len(tensors) != len(targets):
                    raise CnnkitError(f"{our_name} (Keras layer {their_name!r}) has {len(targets)} variables, the "
                                      f"file {len(tensors)}")
    return sum(len(v) for v in theirs.values())


def _flatten_shape(model: nn.Module) -> tuple[int, int, int] | None:
    """(H, W, C) of the maps the first dense layer reads, when the model flattens them in NCHW order."""
    flatten = next((m for m in model.modules() if isinstance(m, Flatten)), None)
    if flatten is None or flatten.order == "NHWC" or not hasattr(model, "forward_features"):
        return None
    shape = getattr(model, "input_shape", None)
    if shape is None:
        return None
    with torch.no_grad():
        maps = model.eval().forward_features(torch.zeros(1, *shape))
    return (maps.shape[2], maps.shape[3], maps.shape[1]) if maps.dim() == 4 else None


def read_torch_state(path: Path, trust: bool) -> dict[str, torch.Tensor]:
    """A pickled PyTorch state dict, only when the user trusts its source, and then with weights_only=True."""
    if not trust:
        raise CnnkitError(f"{path}: pickled files can run code when loaded; pass --trust if you trust its source "
                          "(it is then read with weights_only=True)")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # noqa: BLE001 - the unpickler refuses non-tensor content in many ways
        raise CnnkitError(f"{path}: not a plain tensor state dict ({type(error).__name__})") from None
    state = state.get("state_dict", state.get("model", state)) if isinstance(state, dict) else state
    if not isinstance(state, dict):
        raise CnnkitError(f"{path}: holds a {type(state).__name__}, not a state dict")
    return state


def import_weights(
    weights: Path, model_name: str, out: Path, num_classes: int | None = None,
    input_shape: tuple[int, int, int] | None = None, bn_epsilon: float | None = None, trust: bool = False,
    overwrite: bool = False,
) -> dict:
    """Convert Keras 3 weights (or a trusted PyTorch state dict) for a registered model into a cnnkit checkpoint."""
    stem = out.with_suffix("") if out.suffix in (".json", ".safetensors") else out
    if stem.with_suffix(".json").exists() and not overwrite:
        raise CnnkitError(f"{stem.with_suffix('.json')} already exists; pass --overwrite to replace it")
    classes = model_info(model_name).num_classes if num_classes is None else num_classes
    model = get_model(model_name, num_classes=classes, in_channels=input_shape[0] if input_shape else None,
                      input_size=input_shape[1:] if input_shape else None)
    if weights.suffix in PICKLE_SUFFIXES:
        state = read_torch_state(weights, trust)
        try:
            model.load_state_dict(state)
        except (RuntimeError, TypeError, AttributeError) as error:
            raise CnnkitError(f"{weights}: weights do not fit {model_name}: "
                              f"{str(error).splitlines()[0] if str(error) else 'mismatch'}") from None
        loaded = len(state)
    else:
        loaded = load_keras_into(model, read_keras_weights(weights), bn_epsilon)
    spec = model_spec(model_name, {}, classes, model.input_shape[0], model.input_shape[1:])
    meta = {"model": spec, "class_names": [str(i) for i in range(classes)], "metrics": {}, "epoch": 0,
            "global_step": 0, "imported_from": str(weights), "data": {"pixel_max": 255.0}}
    save_checkpoint(stem, model, meta)
    return {"checkpoint": str(stem), "files": [str(stem.with_suffix(".json")), str(stem.with_suffix(".safetensors"))],
            "loaded": loaded, "source": str(weights)}
