"""A Keras model config as a graph of `Op`s: what each layer computes, with shapes propagated from the input.

A Conv2D or Dense with an activation becomes two ops (the layer, then its activation), as cnnkit builds them; a
ZeroPadding2D that feeds one conv or pool is folded into that layer's padding (keras.applications pads this way).
"""

from __future__ import annotations

import math

from cnnkit.core.arithmetic import same_padding
from cnnkit.core.errors import CnnkitError
from cnnkit.interop.graph import Op, canonical_order, pads_after
from cnnkit.interop.keras_file import KerasLayer, KerasModel

SKIP_CLASSES = ("Dropout", "SpatialDropout2D", "GaussianNoise", "GaussianDropout", "AlphaDropout",
                "ActivityRegularization")


def keras_ops(model: KerasModel, input_chw: tuple[int, int, int]) -> list[Op]:
    """The model's ops in canonical order, shapes per sample channels first, from an input of `input_chw`."""
    ops: dict[str, Op] = {}
    tail: dict[str, str] = {}  # Keras layer name -> the op its consumers read (the activation, if any)
    consumers: dict[str, int] = {}
    for layer in model.layers:
        for name in layer.inbound:
            consumers[name] = consumers.get(name, 0) + 1
    for layer in model.layers:
        missing = [name for name in layer.inbound if name not in tail]
        if missing:
            raise CnnkitError(f"{model.source}: layer {layer.name!r} reads {missing[0]!r}, which the config does not "
                              "define before it")
        inputs = [tail[name] for name in layer.inbound]
        in_shapes = [ops[name].out_shape for name in inputs] or [input_chw]
        try:
            op = _op(layer, inputs, in_shapes, model)
        except (KeyError, TypeError, ValueError, IndexError) as error:
            raise CnnkitError(f"{model.source}: layer {layer.name!r} ({layer.class_name}) has a config cnnkit cannot "
                              f"read ({type(error).__name__}: {error})") from None
        padding = ops.get(inputs[0]) if len(inputs) == 1 else None
        if op.window and padding is not None and padding.kind == "zero_padding" \
                and consumers.get(padding.name) == 1:
            _fold_padding(op, padding)
        ops[op.name] = op
        tail[layer.name] = op.name
        activation = layer.config.get("activation")
        if layer.class_name in ("Conv2D", "Dense") and activation not in (None, "linear"):
            act = Op(_activation_kind(activation), f"{layer.name}:{activation}", f"activation {activation}",
                     [op.name], op.out_shape, op.out_shape, source=layer, extra={"activation": True})
            ops[act.name] = act
            tail[layer.name] = act.name
    if model.output not in tail:
        raise CnnkitError(f"{model.source}: the config's output layer {model.output!r} is not among its layers")
    return canonical_order(ops, tail[model.output])


def _op(layer: KerasLayer, inputs: list[str], in_shapes: list[tuple[int, ...]], model: KerasModel) -> Op:
    """The op one Keras layer computes, with its output shape."""
    cfg, kind = layer.config, layer.class_name
    shape = in_shapes[0]
    op = Op("", layer.name, kind, inputs, shape, shape, source=layer)
    if cfg.get("data_format", "channels_last") != "channels_last":
        raise CnnkitError(f"{model.source}: layer {layer.name!r} is channels_first; cnnkit reads channels_last models")
    if kind == "InputLayer":
        op.kind = "input"
    elif kind in SKIP_CLASSES:
        op.kind = "dropout"
    elif kind == "Conv2D":
        _window(op, layer, _ints(layer, "kernel_size"), _ints(layer, "strides"), _ints(layer, "dilation_rate", (1, 1)),
                int(cfg.get("groups", 1)), int(cfg["filters"]))
        op.kind = "conv"
    elif kind in ("MaxPooling2D", "AveragePooling2D"):
        size = _ints(layer, "pool_size")
        strides = _ints(layer, "strides") if cfg.get("strides") is not None else size
        op.kind = "maxpool" if kind.startswith("Max") else "avgpool"
        _window(op, layer, size, strides, (1, 1), 1, shape[0])
    elif kind == "BatchNormalization":
        axis = cfg.get("axis", -1)
        if axis not in (-1, 3, [-1], [3]):
            raise CnnkitError(f"{model.source}: layer {layer.name!r} normalises axis {axis}; cnnkit normalises "
                              "channels (axis -1)")
        op.kind = "bn"
    elif kind == "Dense":
        if len(shape) != 1:
            raise CnnkitError(f"{model.source}: Dense layer {layer.name!r} reads maps of shape {shape} without a "
                              "Flatten; cnnkit models flatten first")
        op.kind, op.out_shape = "dense", (int(cfg["units"]),)
    elif kind == "Flatten":
        op.kind, op.out_shape = "flatten", (math.prod(shape),)
    elif kind in ("GlobalAveragePooling2D", "GlobalMaxPooling2D"):
        op.kind = "gap" if "Average" in kind else "global_max_pool"
        op.out_shape = (shape[0], 1, 1) if cfg.get("keepdims") else (shape[0],)
    elif kind in ("Activation", "ReLU", "Softmax"):
        op.kind = _activation_kind(cfg.get("activation", kind.lower()))
        if kind == "ReLU" and any(cfg.get(k) not in (None, 0, 0.0) for k in ("max_value", "negative_slope",
                                                                             "threshold")):
            op.kind = "relu (clipped or leaky)"
    elif kind == "Add":
        op.kind = "add"
    elif kind == "Concatenate":
        if cfg.get("axis", -1) not in (-1, 3):
            raise CnnkitError(f"{model.source}: layer {layer.name!r} concatenates along axis {cfg.get('axis')}; "
                              "cnnkit concatenates channels")
        op.kind, op.out_shape = "concat", (sum(s[0] for s in in_shapes), *shape[1:])
    elif kind == "Rescaling":  # x * scale + offset: preprocessing inside the model
        op.kind = "rescaling"
        op.extra.update(scale=_floats(layer, "scale", 1.0), offset=_floats(layer, "offset", 0.0))
    elif kind == "ZeroPadding2D":
        (top, bottom), (left, right) = _padding(layer)
        op.kind, op.out_shape = "zero_padding", (shape[0], shape[1] + top + bottom, shape[2] + left + right)
        op.extra["pads"] = (top, left)
    else:
        op.kind = kind  # no cnnkit counterpart: pairing names it
    return op


def _activation_kind(activation: object) -> str:
    """Keras activation name -> op kind ('linear' is no op)."""
    name = activation if isinstance(activation, str) else str(activation)
    return {"relu": "relu", "linear": "identity", "softmax": "softmax"}.get(name, f"activation {name}")


def _window(op: Op, layer: KerasLayer, kernel: tuple[int, int], stride: tuple[int, int],
            dilation: tuple[int, int], groups: int, out_channels: int) -> None:
    """Set a conv/pool op's output shape and window from Keras' SAME/VALID rule."""
    channels, h, w = op.in_shape
    padding = str(layer.config.get("padding", "valid")).lower()
    if padding not in ("same", "valid"):
        raise CnnkitError(f"layer {layer.name!r} has padding {padding!r}; Keras writes 'same' or 'valid'")
    out, before = [], []
    for size, k, s, d in zip((h, w), kernel, stride, dilation, strict=True):
        if padding == "same":
            out.append(math.ceil(size / s))
            before.append(same_padding(size, k, s, d)[0])
        else:
            out.append((size - (k - 1) * d - 1) // s + 1)
            before.append(0)
    if min(out) < 1:
        raise CnnkitError(f"layer {layer.name!r}: a {kernel[0]}x{kernel[1]} window does not fit {h}x{w} maps")
    op.out_shape = (out_channels, *out)
    op.window = (kernel, stride, dilation, tuple(before), groups, None)
    op.extra["same"] = padding == "same"
    _rule(op)


def _fold_padding(op: Op, padding: Op) -> None:
    """Take a ZeroPadding2D's pads into the conv/pool it feeds: the op then reads the unpadded input."""
    kernel, stride, dilation, (top, left), groups, _ = op.window
    pad_top, pad_left = padding.extra["pads"]
    op.window = (kernel, stride, dilation, (top + pad_top, left + pad_left), groups, None)
    op.in_shape, op.inputs = padding.in_shape, padding.inputs
    op.extra["zero_padded"] = True
    padding.kind = "identity"
    _rule(op)


def _rule(op: Op) -> None:
    """An average pool over padding divides by the real cells (SAME) or by the whole window (zero padding)."""
    if op.kind != "avgpool":
        return
    kernel, stride, dilation, before, groups, _ = op.window
    padded = any(b > 0 or pads_after(n, o, k, s, 1, b) > 0
                 for n, o, k, s, b in zip(op.in_shape[1:], op.out_shape[1:], kernel, stride, before, strict=True))
    rule = ("pads counted" if op.extra.get("zero_padded") else "pads not counted") if padded else None
    op.window = (kernel, stride, dilation, before, groups, rule)


def _ints(layer: KerasLayer, key: str, default: tuple[int, int] | None = None) -> tuple[int, int]:
    """A Keras (h, w) setting: an int or a pair of ints."""
    value = layer.config.get(key, default)
    if isinstance(value, int):
        value = (value, value)
    if not (isinstance(value, (list, tuple)) and len(value) == 2 and all(isinstance(v, int) and v > 0
                                                                          for v in value)):
        raise CnnkitError(f"layer {layer.name!r} has {key}={value!r}; expected two positive integers")
    return tuple(value)


def _floats(layer: KerasLayer, key: str, default: float) -> tuple[float, ...]:
    """A Rescaling setting: one number, or one per channel."""
    value = layer.config.get(key, default)
    values = value if isinstance(value, list) else [value]
    if not values or not all(isinstance(v, (int, float)) and math.isfinite(v) for v in values):
        raise CnnkitError(f"layer {layer.name!r} has {key}={value!r}; expected finite numbers")
    return tuple(float(v) for v in values)


def _padding(layer: KerasLayer) -> tuple[tuple[int, int], tuple[int, int]]:
    """ZeroPadding2D's ((top, bottom), (left, right)) from an int, a pair or a pair of pairs."""
    value = layer.config.get("padding", 1)
    if isinstance(value, int):
        return (value, value), (value, value)
    if isinstance(value, list) and len(value) == 2 and all(isinstance(v, int) for v in value):
        return (value[0], value[0]), (value[1], value[1])
    if isinstance(value, list) and len(value) == 2 and all(isinstance(v, list) and len(v) == 2 for v in value):
        return tuple(value[0]), tuple(value[1])
    raise CnnkitError(f"layer {layer.name!r} has padding={value!r}; expected ZeroPadding2D's int or pairs")
