"""A cnnkit model as a graph of `Op`s, read from one forward pass in eval mode (modules that never run, such as
GoogLeNet's auxiliary classifiers at inference, are not part of it)."""

from __future__ import annotations

from torch import nn

from cnnkit.analysis.tracer import trace
from cnnkit.core.arithmetic import pair, same_padding
from cnnkit.core.errors import CnnkitError
from cnnkit.interop.graph import Op, canonical_order, pads_after
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
            op.window = _window(call.module, kind, op.in_shape, op.out_shape)
        if kind == "flatten":
            op.extra["order"] = getattr(call.module, "order", "NCHW")
        ops[call.name] = op
        producer[id(call.output)] = op.inputs[0] if kind in PASS_THROUGH else call.name
    return canonical_order(ops, producer.get(id(run.output), ""))


def _window(module: nn.Module, kind: str, in_shape: tuple[int, ...], out_shape: tuple[int, ...]) -> tuple:
    """((kh, kw), (sh, sw), (dh, dw), (top, left), groups, pad rule) of a conv or pool on this input."""
    kernel = pair(module.kernel_size, "kernel_size")
    stride = pair(module.stride, "stride")
    dilation = pair(getattr(module, "dilation", 1), "dilation")
    mode = getattr(module, "tf_padding", None)
    padding = module.padding
    if mode == "same" or padding == "same":
        before = tuple(same_padding(n, k, s, d)[0] for n, k, s, d in zip(in_shape[1:], kernel, stride, dilation,
                                                                       strict=True))
    elif mode == "valid" or padding == "valid":
        before = (0, 0)
    else:
        before = tuple(padding) if isinstance(padding, (tuple, list)) else (padding, padding)
    rule = None
    if kind == "avgpool" and any(b > 0 or pads_after(n, o, k, s, 1, b) > 0 for n, o, k, s, b in
                                 zip(in_shape[1:], out_shape[1:], kernel, stride, before, strict=True)):
        counted = getattr(module, "count_include_pad", mode == "explicit")
        rule = "pads counted" if counted else "pads not counted"
    return (kernel, stride, dilation, before, getattr(module, "groups", 1), rule)
