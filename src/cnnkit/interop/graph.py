"""A network as a sequence of operations that both sides of an import agree on, and the check that two agree.

Both a Keras model (from its config) and a cnnkit model (from one traced forward pass) become graphs of `Op`s.
`canonical_order` walks each graph the same way (depth first from the output, inputs in call order, the
longer branch of an addition first), so that a ResNet block whose Keras `Add` lists the shortcut first and whose
cnnkit block computes the residual first still pair layer by layer. `difference` says how two paired ops differ:
their kind, their per-sample shapes, or their window (kernel, stride, dilation, padding before, groups). A pool
of another size or another padding that happens to give the same output shape is caught by the window.
"""

from __future__ import annotations

from dataclasses import dataclass, field

COMMUTATIVE = ("add",)
SKIPPED = ("input", "dropout", "identity")  # identities at inference: left out of the paired sequence


@dataclass
class Op:
    """One operation: what it is, what it sees and makes (per sample, channels first), and how it slides."""

    kind: str  # conv, bn, dense, maxpool, avgpool, gap, flatten, relu, add, concat, softmax, ... or a class name
    name: str  # Keras layer name or cnnkit module name
    type: str  # Keras class or PyTorch module class
    inputs: list[str]  # names of the ops feeding it
    in_shape: tuple[int, ...] = ()  # (C, H, W) or (F,); of the first input for merges
    out_shape: tuple[int, ...] = ()
    window: tuple | None = None  # conv/pool: ((kh, kw), (sh, sw), (dh, dw), (top, left) padding, groups, pad rule)
    source: object = None  # the Keras layer or the cnnkit module
    extra: dict = field(default_factory=dict)


def canonical_order(ops: dict[str, Op], output: str) -> list[Op]:
    """Ops reachable from `output`, depth first with each op after its inputs; an addition visits its deeper
    input first (its residual branch), other ops their inputs in call order."""
    depth: dict[str, int] = {}
    for name in _topological(ops, output):
        depth[name] = 1 + max((depth[i] for i in ops[name].inputs if i in ops), default=0)
    order, started, done = [], set(), set()
    stack: list[tuple[str, bool]] = [(output, False)]
    while stack:
        name, finished = stack.pop()
        if finished:
            done.add(name)
            order.append(ops[name])
            continue
        if name in started or name not in ops:
            continue
        started.add(name)
        stack.append((name, True))
        inputs = [i for i in ops[name].inputs if i in ops]
        if ops[name].kind in COMMUTATIVE:
            inputs = sorted(inputs, key=lambda i: -depth[i])
        stack.extend((i, False) for i in reversed(inputs) if i not in started)
    return order


def _topological(ops: dict[str, Op], output: str) -> list[str]:
    """Names reachable from `output`, each after its inputs (iterative: ResNet-152 is deeper than Python's stack)."""
    order, seen, stack = [], set(), [(output, False)]
    while stack:
        name, finished = stack.pop()
        if finished:
            order.append(name)
        elif name not in seen and name in ops:
            seen.add(name)
            stack.append((name, True))
            stack.extend((i, False) for i in ops[name].inputs if i not in seen)
    return order


def paired(ops: list[Op]) -> list[Op]:
    """The ops that take part in pairing (identities at inference left out)."""
    return [op for op in ops if op.kind not in SKIPPED]


def difference(keras: Op, ours: Op) -> str | None:
    """Why two paired ops compute different things, or None when they agree."""
    if keras.kind != ours.kind:
        return "different operations"
    if keras.in_shape != ours.in_shape:
        return f"inputs {shape_text(keras.in_shape)} vs {shape_text(ours.in_shape)}"
    if keras.out_shape != ours.out_shape:
        hint = ""
        if keras.out_shape and ours.out_shape and keras.out_shape[1:] == ours.out_shape[1:]:  # channels only
            hint = " (a narrower or wider variant of the network? pass cnnkit's --model-option, e.g. width=N)"
        return f"outputs {shape_text(keras.out_shape)} vs {shape_text(ours.out_shape)}{hint}"
    if keras.window != ours.window:
        return f"windows {window_text(keras.window)} vs {window_text(ours.window)}"
    return None


def describe(op: Op) -> str:
    """'conv1_conv (Conv2D 7x7/2 pad 3,3, 3x64x64 -> 64x32x32)'."""
    window = f" {window_text(op.window)}" if op.window else ""
    return f"{op.name} ({op.type}{window}, {shape_text(op.in_shape)} -> {shape_text(op.out_shape)})"


def shape_text(shape: tuple[int, ...]) -> str:
    """(64, 32, 32) -> '64x32x32'."""
    return "x".join(str(s) for s in shape) if shape else "?"


def window_text(window: tuple | None) -> str:
    """A window as '3x3/2 pad 0,1' (dilation, groups and the padding rule only when they matter)."""
    if window is None:
        return "-"
    (kh, kw), (sh, sw), (dh, dw), (top, left), groups, rule = window
    text = f"{kh}x{kw}/{sh}" + (f"x{sw}" if sw != sh else "") + f" pad {top},{left}"
    text += f" dilation {dh},{dw}" if (dh, dw) != (1, 1) else ""
    text += f" groups {groups}" if groups != 1 else ""
    return text + (f" ({rule})" if rule else "")


def pads_after(in_size: int, out_size: int, kernel: int, stride: int, dilation: int, before: int) -> int:
    """Padding the last window reaches past the input (negative when VALID leaves cells unused)."""
    return (out_size - 1) * stride + (kernel - 1) * dilation + 1 - in_size - before
