"""Weights from elsewhere -> a cnnkit checkpoint that `evaluate` and `predict` feed as the model was trained.

The checkpoint records, beside the weights, the input the model expects: what white is in its images
(`meta["data"]["pixel_max"]`: 1 for x/255 inputs, 16 for scikit-learn's digits, 255 for raw bytes) and any
per-channel normalisation (x - mean) / std the model's author applied, as the checkpoint's preprocessing.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from pathlib import Path

import torch
from torch import nn

from cnnkit.core.errors import CnnkitError
from cnnkit.core.limits import check_limit
from cnnkit.core.outputs import refuse_run_files
from cnnkit.data.preprocess import Preprocessing
from cnnkit.interop.graph import Op
from cnnkit.interop.keras_file import KerasModel, read_keras
from cnnkit.interop.keras_load import load_keras
from cnnkit.interop.torch_state import build, read_torch_state, torch_state_model
from cnnkit.interop.traced import traced_ops
from cnnkit.models import model_info
from cnnkit.store.checkpoint import PICKLE_SUFFIXES, model_spec, save_checkpoint

MAX_CHANNELS = 64  # as checkpoint metadata allows


@dataclass
class ImportOptions:
    """What the user states beyond the file: the model's size and options, its input, and how to read the file."""

    num_classes: int | None = None  # default: the file's (its last dense layer), else the model's
    input_shape: tuple[int, int, int] | None = None  # (C, H, W); default: the Keras input, else the model's
    model_options: dict = field(default_factory=dict)
    white: float = 255.0  # the value of white in the images the model was trained on
    mean: tuple[float, ...] | None = None  # per-channel normalisation after scaling to `white`
    std: tuple[float, ...] | None = None
    bgr: bool = False  # the weights expect BGR images (Caffe, keras.applications 'caffe' mode)
    bn_epsilon: float | None = None  # for a bare .weights.h5 (a config records each BN's own)
    keras_config: Path | None = None  # the model config a bare .weights.h5 lacks
    trust: bool = False  # allow a pickled state dict (read with weights_only=True)
    overwrite: bool = False


def import_weights(weights: Path, model_name: str, out: Path, options: ImportOptions | None = None) -> dict:
    """Convert Keras 3 weights or a (trusted) PyTorch state dict for a registered model into a cnnkit checkpoint."""
    options = options or ImportOptions()
    stem = out.with_suffix("") if out.suffix in (".json", ".safetensors") else out
    files = [stem.with_suffix(".safetensors"), stem.with_suffix(".json")]
    refuse_run_files(files, "import-weights")
    for path in files:
        if path.exists() and not options.overwrite:
            raise CnnkitError(f"{path} already exists; pass --overwrite to replace it")
    model_info(model_name)
    if not (math.isfinite(options.white) and options.white > 0):
        raise CnnkitError(f"--white must be a positive number (the value of white in the training images); "
                          f"received {options.white}")
    if options.input_shape:
        _check_shape(options.input_shape, "--input-size")
    reader = _from_torch if weights.suffix in PICKLE_SUFFIXES else _from_keras
    model, options, report = reader(weights, model_name, options)
    if options.bgr:
        report["notes"].append(f"the weights expect BGR: {_reverse_input_channels(model)}'s input channels "
                               "reversed, so the model takes RGB")
    report["notes"].append(_input_note(options))
    classes = _output_classes(model)
    spec = model_spec(model_name, options.model_options, classes, model.input_shape[0], model.input_shape[1:])
    meta = {"model": spec, "class_names": [str(i) for i in range(classes)], "metrics": {}, "epoch": 0,
            "global_step": 0, "imported_from": str(weights), "data": {"pixel_max": float(options.white)},
            "import": {"format": report["format"], "notes": report["notes"]}}
    try:
        save_checkpoint(stem, model.eval(), meta, _stated(options, model.input_shape[0]))
    except OSError as error:
        raise CnnkitError(f"{stem}: cannot write the checkpoint ({error.strerror or error})") from None
    return {"checkpoint": str(stem), "files": [str(stem.with_suffix(".json")), str(stem.with_suffix(".safetensors"))],
            "source": str(weights), **report}


def _from_torch(weights: Path, model_name: str, options: ImportOptions) -> tuple[nn.Module, ImportOptions, dict]:
    """A PyTorch state dict (cnnkit's names or torchvision's) in a model; the options it was built with."""
    state = read_torch_state(weights, options.trust)
    model, model_options, layout = torch_state_model(state, model_name, options.num_classes, options.input_shape,
                                                     options.model_options)
    built = f" built with {_options_text(model_options)}" if model_options else ""
    notes = [f"torchvision names mapped onto {model_name}{built}"] if layout == "torchvision" else []
    report = {"format": f"{layout} state dict", "loaded": len(state), "rows": [], "notes": notes}
    return model, replace(options, model_options=model_options), report


def _from_keras(weights: Path, model_name: str, options: ImportOptions) -> tuple[nn.Module, ImportOptions, dict]:
    """A Keras file in a model, sized from its config unless stated; a Rescaling layer turned into options."""
    keras = read_keras(weights, options.keras_config)
    shape = options.input_shape or _keras_input(keras)
    model = build(model_name, options.num_classes or _keras_classes(keras), shape, options.model_options)
    loaded = load_keras(model, keras, options.bn_epsilon)
    kind = "model (config and weights)" if keras.has_graph else "weights without a config"
    report = {"format": f"Keras {kind}", "loaded": loaded.loaded, "rows": loaded.rows, "notes": loaded.notes}
    return model, _with_rescaling(options, loaded.rescaling), report


def _output_classes(model: nn.Module) -> int:
    """The number of logits the model gives (read from one forward pass: not every model ends in nn.Linear)."""
    with torch.no_grad():
        return int(model.eval()(torch.zeros(1, *model.input_shape)).shape[1])


def _keras_input(keras: KerasModel) -> tuple[int, int, int] | None:
    """(C, H, W) from the Keras input layer, when it fixes all three."""
    if keras.input_shape and all(isinstance(s, int) for s in keras.input_shape):
        h, w, c = keras.input_shape
        return _check_shape((c, h, w), f"{keras.source}: the Keras input")
    return None


def _check_shape(shape: tuple[int, int, int], what: str) -> tuple[int, int, int]:
    """Refuse input shapes no model here should be built for, before anything is allocated."""
    channels, h, w = shape
    if not 1 <= channels <= MAX_CHANNELS:
        raise CnnkitError(f"{what} has {channels} channels; cnnkit models take 1 to {MAX_CHANNELS}")
    for side in (h, w):
        check_limit("image_side", side, f"{what}: side")
    return shape


def _keras_classes(keras: KerasModel) -> int | None:
    """Units of the last dense layer (its kernel is (in, out))."""
    kernels = [layer.variables[0] for layer in keras.layers if layer.variables and layer.variables[0].ndim == 2]
    return int(kernels[-1].shape[1]) if kernels else None


def _with_rescaling(options: ImportOptions, rescaling: Op | None) -> ImportOptions:
    """A Keras Rescaling layer on the input (x * scale + offset) as the stated mean and std it amounts to."""
    if rescaling is None:
        return options
    scale, offset = rescaling.extra["scale"], rescaling.extra["offset"]
    if options.mean is not None or options.std is not None:
        raise CnnkitError(f"the Keras model scales its input itself (layer {rescaling.name!r}: x * {_values(scale)} + "
                          f"{_values(offset)}); leave out --mean/--std and state only --white")
    if any(s == 0 for s in scale):
        raise CnnkitError(f"Keras layer {rescaling.name!r} multiplies its input by 0; nothing can be imported")
    scales = scale * len(offset) if len(scale) == 1 else scale
    mean = tuple(0.0 - o / s for o, s in zip(offset * len(scales) if len(offset) == 1 else offset, scales, strict=True))
    return replace(options, mean=mean, std=tuple(1 / s for s in scale))


def _reverse_input_channels(model: nn.Module) -> str:
    """Reverse the input channels of the conv that reads the image (exact): BGR weights then take RGB."""
    first = next((op for op in traced_ops(model, model.input_shape) if op.inputs == ["input"]), None)
    if first is None or first.kind != "conv" or first.source.in_channels != 3 or first.source.groups != 1:
        raise CnnkitError("--bgr needs a model whose first layer is a convolution of 3 input channels")
    with torch.no_grad():
        first.source.weight.copy_(first.source.weight.flip(1))
    return first.name


def _stated(options: ImportOptions, channels: int) -> Preprocessing | None:
    """The stated (x - mean) / std, or None when neither is given."""
    if options.mean is None and options.std is None:
        return None
    return Preprocessing.stated(options.mean or (0.0,), options.std or (1.0,), channels)


def _input_note(options: ImportOptions) -> str:
    """What the checkpoint will feed the model, in words."""
    text = f"input: images scaled so that white is {options.white:g}"
    if options.mean is not None or options.std is not None:
        text += f", then (x - {_values(options.mean or (0.0,))}) / {_values(options.std or (1.0,))} per channel"
    elif options.white == 255.0:
        text += " (raw 8-bit values; state --white/--mean/--std if the model was trained on other inputs)"
    return text


def _values(values: tuple[float, ...]) -> str:
    return f"{values[0]:g}" if len(values) == 1 else "[" + ", ".join(f"{v:g}" for v in values) + "]"


def _options_text(options: dict) -> str:
    return ", ".join(f"{k}={v}" for k, v in options.items())
