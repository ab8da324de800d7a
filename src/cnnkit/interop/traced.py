"""A cnnkit model as a graph of `Op`s, read from one forward pass in eval mode (modules that never run, such as
GoogLeNet's auxiliary classifiers at inference, are not part of it)."""

from __future__ import annotations

import torch
from torch import nn

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


@torch.no_grad()
def traced_ops(model: nn.Module, input_shape: tuple[int, int, int]) -> list[Op]:
    """The ops a forward pass of one (C, H, W) input runs, in canonical order."""
    producer: dict[int, str] = {}
    alive: list[torch.Tensor] = []  # keeps every traced tensor alive, so that no id() is reused
    ops: dict[str, Op] = {}
    handles = []

    def before(module: nn.Module, args: tuple) -> None:
        tensors = args[0] if args and isinstance(args[0], (list, tuple)) else args[:1]
        alive.extend(tensors)
        module._cnnkit_inputs = [producer.get(id(t), "input") for t in tensors]
        module._cnnkit_in_shape = tuple(tensors[0].shape[1:])

    def after(name: str, kind: str):
        def hook(module: nn.Module, args: tuple, output: torch.Tensor) -> None:
            if name in ops:
                raise CnnkitError(f"{name} runs twice in one forward pass; cnnkit cannot pair a shared layer")
            alive.append(output)
            op = Op(kind, name, type(module).__name__, module._cnnkit_inputs, module._cnnkit_in_shape,
                    tuple(output.shape[1:]), source=module)
            if kind in ("conv", "maxpool", "avgpool"):
                op.window = _window(module, kind, op.in_shape, op.out_shape)
            if kind == "flatten":
                op.extra["order"] = getattr(module, "order", "NCHW")
            ops[name] = op
            producer[id(output)] = op.inputs[0] if kind in PASS_THROUGH else name
        return hook

    for name, module in model.named_modules():
        kind = op_kind(module) if name else None
        if kind is not None:
            handles.append(module.register_forward_pre_hook(before))
            handles.append(module.register_forward_hook(after(name, kind)))
    try:
        was_training = model.training
        output = model.eval()(torch.zeros(1, *input_shape))
        model.train(was_training)
    finally:
        for handle in handles:
            handle.remove()
    for module in model.modules():
        for attribute in ("_cnnkit_inputs", "_cnnkit_in_shape"):
            module.__dict__.pop(attribute, None)
    return canonical_order(ops, producer.get(id(output), ""))


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
