"""A network as the explorer and the pictures show it: units of layers, their outputs, their receptive fields.

A unit is a layer together with the batch norms and the one activation that consume its output in turn
(conv -> BN -> ReLU): the layer's own output is the unit's pre-activation map, the last member's output its
post-activation map. Units are found from the data flow of one forward pass, so they need no knowledge of model
families: a ReLU after a residual addition joins the addition's unit as it joins a conv's.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
from torch import nn

from cnnkit.analysis.tracer import Call, carry, tensors, trace
from cnnkit.core.errors import CnnkitError
from cnnkit.layers import AvgPool2d, BatchNorm2d, Fuse, MaxPool2d
from cnnkit.layers.padding import TFPadding
from cnnkit.models import main_logits

NORMS = (nn.modules.batchnorm._BatchNorm, BatchNorm2d)
ACTIVATIONS = (nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.ELU, nn.SELU, nn.CELU, nn.GELU, nn.SiLU, nn.Mish, nn.Sigmoid,
               nn.Tanh, nn.Hardtanh, nn.Softplus, nn.Hardswish, nn.Hardsigmoid)
ACTIVATION_SUFFIXES = ("ReLU", "Tanh", "Sigmoid", "GELU", "SiLU")  # parameter-free look-alikes (LeNet's ScaledTanh)
POOLS = (MaxPool2d, AvgPool2d, nn.MaxPool2d, nn.AvgPool2d)


def is_activation(module: nn.Module) -> bool:
    """An element-wise activation: one of torch's, or a parameter-free module named like one."""
    if isinstance(module, ACTIVATIONS):
        return True
    return type(module).__name__.endswith(ACTIVATION_SUFFIXES) and not any(True for _ in module.parameters())


def _pair(value) -> tuple[int, int]:
    return (int(value[0]), int(value[1])) if isinstance(value, (tuple, list)) else (int(value), int(value))


@dataclass(frozen=True)
class Window:
    """A sliding window over one input: kernel, stride, dilation, the pads before (top, left) and the pads the
    last window uses after (bottom, right; TF SAME puts its extra cell there)."""

    kernel: tuple[int, int]
    stride: tuple[int, int]
    dilation: tuple[int, int]
    pads: tuple[int, int, int, int]  # top, bottom, left, right

    def rows(self, y: int) -> list[int]:
        """Input rows the window of output row `y` reads (negative or past the end: padding)."""
        return [y * self.stride[0] - self.pads[0] + i * self.dilation[0] for i in range(self.kernel[0])]

    def cols(self, x: int) -> list[int]:
        """Input columns the window of output column `x` reads."""
        return [x * self.stride[1] - self.pads[2] + j * self.dilation[1] for j in range(self.kernel[1])]


def window_of(module: nn.Module, x: torch.Tensor, out_size: tuple[int, int]) -> Window | None:
    """The window a conv or pool slides over `x` (N, C, H, W) to give `out_size`; None for other layers."""
    if not (hasattr(module, "kernel_size") and hasattr(module, "stride")):
        return None
    kernel = _pair(module.kernel_size)
    stride = _pair(module.stride if module.stride is not None else module.kernel_size)
    dilation = _pair(getattr(module, "dilation", 1))
    padding = getattr(module, "padding", 0)
    if isinstance(module, TFPadding) and module.input_pads(x) is not None:
        left, _, top, _ = module.input_pads(x)
    elif padding == "valid":
        top, left = 0, 0
    elif padding == "same":  # torch's own SAME (stride 1 only): the smaller half before
        top, left = ((kernel[0] - 1) * dilation[0]) // 2, ((kernel[1] - 1) * dilation[1]) // 2
    else:
        top, left = _pair(padding)
    h, w = x.shape[-2:]
    bottom = max(0, (out_size[0] - 1) * stride[0] + (kernel[0] - 1) * dilation[0] + 1 - h - top)
    right = max(0, (out_size[1] - 1) * stride[1] + (kernel[1] - 1) * dilation[1] + 1 - w - left)
    return Window(kernel, stride, dilation, (top, bottom, left, right))


@dataclass(frozen=True)
class Field:
    """Where output cell (0, 0) of a map looks in the input image, and how far apart neighbouring cells look."""

    start: tuple[int, int]  # top-left input pixel (negative: in the padding)
    size: tuple[int, int]
    jump: tuple[int, int]

    def through(self, window: Window) -> Field:
        """The field after a sliding window: it widens by (k-1)*d jumps and its jump grows by the stride."""
        top, _, left, _ = window.pads
        return Field((self.start[0] - top * self.jump[0], self.start[1] - left * self.jump[1]),
                     tuple(s + (k - 1) * d * j for s, k, d, j in zip(self.size, window.kernel, window.dilation,
                                                                     self.jump, strict=True)),
                     (self.jump[0] * window.stride[0], self.jump[1] * window.stride[1]))

    def union(self, other: Field) -> Field:
        """The field of a merge (residual addition, concatenation): the box around both."""
        start = (min(self.start[0], other.start[0]), min(self.start[1], other.start[1]))
        end = [max(a + s, b + t) for a, s, b, t in zip(self.start, self.size, other.start, other.size, strict=True)]
        return Field(start, (end[0] - start[0], end[1] - start[1]), max(self.jump, other.jump))

    def box(self, y: int, x: int) -> dict:
        """Inclusive input rows and columns output cell (y, x) sees (they may reach into the padding)."""
        top, left = self.start[0] + y * self.jump[0], self.start[1] + x * self.jump[1]
        return {"top": top, "left": left, "bottom": top + self.size[0] - 1, "right": left + self.size[1] - 1}


@dataclass
class Unit:
    """A layer and the batch norms / activation that consume its output in turn (conv -> BN -> ReLU)."""

    names: list[str]
    types: list[str]
    shape: tuple[int, ...]  # output per image: (C, H, W), or (F,) for a vector
    field: Field | None  # of output cell (0, 0); None: every cell sees the whole input
    kind: str  # 'conv', 'pool' (their cells can be explained) or 'other'
    block: str | None = None  # the module whose branches merge in a Fuse inside it (Inception, residual block)
    branch: str | None = None  # which branch of `block` this unit is on; None: the fusion and what follows it
    members: list[nn.Module] = field(default_factory=list, repr=False)

    @property
    def id(self) -> str:
        """The head layer's name."""
        return self.names[0]

    @property
    def pre(self) -> str:
        """The layer whose output is the pre-activation map."""
        return self.names[0]

    @property
    def post(self) -> str:
        """The layer whose output is the post-activation map."""
        return self.names[-1]

    def output_name(self, activation: str) -> str:
        """`pre` or `post` by the activation mode ('pre' | 'post')."""
        return self.pre if activation == "pre" else self.post

    @property
    def has_activation(self) -> bool:
        """Whether the unit ends in an activation."""
        return len(self.members) > 1 and is_activation(self.members[-1])


def _kind(module: nn.Module) -> str:
    if isinstance(module, nn.Conv2d):
        return "conv"
    return "pool" if isinstance(module, POOLS) else "other"


def trace_units(model: nn.Module, input_shape: tuple[int, int, int]) -> list[Unit]:
    """The model's units in execution order, from one zero image in eval mode, with receptive fields."""
    seen: set[str] = set()
    calls = []
    for call, source in carry(trace(model, input_shape), Field((0, 0), (1, 1), (1, 1)), _through, Field.union):
        if call.leaf and call.outputs and call.name not in seen:  # a layer called twice is shown at its first call
            seen.add(call.name)
            calls.append((call, source))
    units = _group(calls)
    _place_in_blocks(model, units, [call.name for call, _ in calls])
    return units


def _through(call: Call, source: Field | None) -> Field | None:
    """The field of a leaf's output: through its window, unchanged where it keeps the size, else everything."""
    x = call.inputs[0] if call.inputs else None
    out = call.outputs[0] if call.outputs else None
    if x is None or out is None or x.dim() != 4 or out.dim() != 4:
        return None  # flattening, dense layers: every cell sees everything
    window = window_of(call.module, x, tuple(out.shape[-2:]))
    if window is not None:
        return None if source is None else source.through(window)
    return source if out.shape[-2:] == x.shape[-2:] else None  # global or adaptive pooling: everything


def _group(calls: list[tuple[Call, Field | None]]) -> list[Unit]:
    """Join each batch norm / activation to the unit whose output it consumes, up to the first activation."""
    units: list[Unit] = []
    last_output: torch.Tensor | None = None
    for call, source in calls:
        module, out, unit = call.module, call.outputs[0], units[-1] if units else None
        joins = (unit is not None and (isinstance(module, NORMS) or is_activation(module))
                 and not unit.has_activation and [id(t) for t in call.inputs] == [id(last_output)]
                 and out.shape == last_output.shape)
        if joins:
            unit.names.append(call.name)
            unit.types.append(type(module).__name__)
            unit.members.append(module)
        else:
            units.append(Unit([call.name], [type(module).__name__], tuple(out.shape[1:]), source, _kind(module),
                              members=[module]))
        last_output = out
    return units


def _place_in_blocks(model: nn.Module, units: list[Unit], order: list[str]) -> None:
    """Mark the units inside a module that merges branches with a Fuse: which branch, or the fusion itself."""
    modules = dict(model.named_modules())
    fuses = {name: name.rpartition(".")[0] for name, m in modules.items() if isinstance(m, Fuse) and name in order}
    blocks = sorted(set(fuses.values()), key=len, reverse=True)
    fused_at = {block: order.index(name) for name, block in fuses.items()}
    for unit in units:
        block = next((b for b in blocks if unit.id.startswith(b + ".")), None)
        if block is None:
            continue
        unit.block = block
        if order.index(unit.id) < fused_at[block]:
            unit.branch = _branch(modules, block, unit.id)


def _branch(modules: dict[str, nn.Module], block: str, name: str) -> str:
    """The child path of `block` that holds `name`, looking through list wrappers (Branches -> ModuleList -> i)."""
    parts = name[len(block) + 1:].split(".")
    for i in range(1, len(parts) + 1):
        module = modules[".".join([block, *parts[:i]])]
        children = list(module.children())
        wrapper = isinstance(module, nn.ModuleList) or (len(children) == 1 and isinstance(children[0], nn.ModuleList))
        if not wrapper:
            return ".".join(parts[:i])
    return ".".join(parts)


def record(model: nn.Module, x: torch.Tensor, outputs: set[str], inputs: set[str] = frozenset()
           ) -> tuple[torch.Tensor, dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """Logits of `x` with copies of the named layers' outputs and inputs (first call each), without gradients.

    Copies, because an in-place ReLU later overwrites the tensor a batch norm or addition handed it.
    """
    modules = dict(model.named_modules())
    unknown = sorted(n for n in outputs | set(inputs) if n not in modules or not n)
    if unknown:
        raise CnnkitError(f"no layer named {unknown[0]!r} in {type(model).__name__}")
    got_out: dict[str, torch.Tensor] = {}
    got_in: dict[str, torch.Tensor] = {}

    def hook(name: str, module_inputs: tuple, output) -> None:
        if name in outputs and name not in got_out:
            got_out[name] = tensors(output)[0].detach().clone()
        if name in inputs and name not in got_in:
            got_in[name] = tensors(module_inputs)[0].detach().clone()

    handles = [modules[n].register_forward_hook(lambda _m, i, o, n=n: hook(n, i, o)) for n in outputs | set(inputs)]
    try:
        with torch.no_grad():
            logits = main_logits(model(x))
    finally:
        for handle in handles:
            handle.remove()
    return logits, got_out, got_in


def grad_cam_layer(units: list[Unit]) -> str:
    """Grad-CAM's layer: the last map at the last convolution's resolution (after its BN, ReLU and any merge)."""
    convs = [i for i, u in enumerate(units) if u.kind == "conv" and len(u.shape) == 3]
    if not convs:
        raise CnnkitError("the model has no convolution layer for Grad-CAM")
    chosen = convs[-1]
    size = units[chosen].shape[1:]
    for i in range(chosen + 1, len(units)):
        if len(units[i].shape) != 3 or units[i].shape[1:] != size:
            break
        chosen = i
    return units[chosen].post


def downsample_factor(height: int, width: int, max_side: int) -> int:
    """The smallest integer factor that brings a map's longer side to at most `max_side` cells."""
    return max(1, math.ceil(max(height, width) / max_side))
