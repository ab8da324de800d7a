"""A cnnkit model as a graph of `Op`s, read from one forward pass in eval mode (modules that never run, such as
GoogLeNet's auxiliary classifiers at inference, are not part of it)."""

from __future__ import annotations

from torch import nn

from cnnkit.analysis.trace import window_of
from cnnkit.analysis.tracer import Call, trace
from cnnkit.core.arithmetic import pair
from cnnkit.core.errors import CnnkitError
from cnnkit.interop.graph import Op, canonical_order
from cnnkit.layers import AvgPool2d, BatchNorm2d, Flatten, Fuse, GlobalAvgPool2d, MaxPool2d, SoftmaxOutput

PASS_THROUGH = ("dropout", "identity")


def op_kind(module: nn.Module) -> str | None:
    """What a module computes, in the vocabulary Keras ops use; None for containers."""
    kinds = ((nn.Conv2d, "conv"), (nn.Linear, "dense"), ((MaxPool2d, nn.MaxPool2d), "maxpool"),
             ((AvgPool2d, nn.AvgPool2d), "avgpool"), (GlobalAvgPool2d, "gap"), ((Flatten, nn.Flatten), "flatten"),
             (nn.ReLU, "relu"), ((nn.Dropout, nn.Dropout2d), "dropout"), (nn.Identity, "identity"),
             ((nn.Softmax, SoftmaxOutput), "softmax"), (nn.BatchNorm2d, "bn"))
    if isinstance(module, BatchNorm2d):
        return "bn" if module.per == "feature_map" else "bn per neuron"
    if isinstance(module, Fuse):
        return {"add": "add", "concat": "concat"}.get(module.mode, f"fuse {module.mode}")
    if isinstance(module, nn.AdaptiveAvgPool2d):
        return "gap" if pair(module.output_size, "output_size") == (1, 1) else "adaptive average pool"
    for types, kind in kinds:
        if isinstance(module, types):
            return kind
    return None if any(True for _ in module.children()) else type(module).__name__


def traced_ops(model: nn.Module, input_shape: tuple[int, int, int]) -> list[Op]:
    """The ops a forward pass of one (C, H, W) input runs, in canonical order."""
    run = trace(model, input_shape)
    producer: dict[int, str] = {}  # id of a traced tensor -> the op that made it
    ops: dict[str, Op] = {}
    for call in run.calls:
        kind = None if call.entry else op_kind(call.module)
        if kind is None:
            continue
        if call.name in ops:
            raise CnnkitError(f"{call.name} runs twice in one forward pass; cnnkit cannot pair a shared layer")
        args = call.args
        fed = args[0] if args and isinstance(args[0], (list, tuple)) else args[:1]  # a merge takes a list
        op = Op(kind, call.name, type(call.module).__name__, [producer.get(id(t), "input") for t in fed],
                tuple(fed[0].shape[1:]), tuple(call.output.shape[1:]), source=call.module)
        if kind in ("conv", "maxpool", "avgpool"):
            op.window = _window(call, kind)
        if kind == "flatten":
            op.extra["order"] = getattr(call.module, "order", "NCHW")
        ops[call.name] = op
        producer[id(call.output)] = op.inputs[0] if kind in PASS_THROUGH else call.name
    return canonical_order(ops, producer.get(id(run.output), ""))


def _window(call: Call, kind: str) -> tuple:
    """((kh, kw), (sh, sw), (dh, dw), (top, left), groups, pad rule) of a conv or pool on this input."""
    module = call.module
    window = window_of(module, call.inputs[0], tuple(call.output.shape[-2:]))
    top, _, left, _ = window.pads
    rule = None
    if kind == "avgpool" and any(pad > 0 for pad in window.pads):
        counted = getattr(module, "count_include_pad", getattr(module, "tf_padding", None) == "explicit")
        rule = "pads counted" if counted else "pads not counted"
    return (window.kernel, window.stride, window.dilation, (top, left), getattr(module, "groups", 1), rule)
