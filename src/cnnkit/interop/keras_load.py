"""Copy a Keras model's weights into a cnnkit model, layer by layer along both graphs, checking the structure.

With a config (a .keras archive, or --keras-config), every op is paired: kinds, per-sample shapes and windows
must agree, so a 2x2 pool where cnnkit has a 3x3/2 SAME pool is refused even though both give 2x2 maps. A conv
bias that cnnkit's conv lacks is folded into the batch norm it feeds (exact: BN(z + b) with moving mean m is
BN(z) with moving mean m - b). Without a config (a bare .weights.h5) only the layer kinds, their per-class order
and the variable shapes can be checked, and only chains (no branches) can be paired.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from cnnkit.core.errors import CnnkitError
from cnnkit.interop.graph import Op, describe, difference, paired, shape_text
from cnnkit.interop.keras_file import KerasLayer, KerasModel
from cnnkit.interop.keras_graph import keras_ops
from cnnkit.interop.layouts import conv_kernel_from_tf, dense_kernel_from_tf, keras_momentum_to_torch
from cnnkit.interop.traced import traced_ops

WEIGHTED = ("conv", "bn", "dense")
KERAS_DEFAULT_EPSILON = 1e-3
STEM_KINDS = {"conv2d": "conv", "batch_normalization": "bn", "dense": "dense"}


@dataclass
class Loaded:
    """What an import did: layers loaded, the mapping table, and what the user should know."""

    loaded: int = 0
    rows: list[dict] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    rescaling: Op | None = None  # a Keras Rescaling layer on the input: the checkpoint's preprocessing instead


@dataclass
class _Pair:
    keras: Op | None  # None for a bare weights file, where only the layer itself is known
    layer: KerasLayer
    ours: Op
    fold_into: Op | None = None  # the cnnkit BN that absorbs this conv's bias


def load_keras(model: nn.Module, keras: KerasModel, bn_epsilon: float | None = None) -> Loaded:
    """Pair `keras` with `model` and copy every weight; raises naming the first layer that differs."""
    ours = paired(traced_ops(model, model.input_shape))
    result = Loaded()
    if keras.has_graph:
        pairs = _pair_graphs(paired(keras_ops(keras, model.input_shape)), ours, keras, result)
    else:
        pairs = _pair_by_kind(keras, ours, result)
    epsilon = None if keras.has_graph else KERAS_DEFAULT_EPSILON if bn_epsilon is None else bn_epsilon
    copier = _Copier(ours, epsilon)
    with torch.no_grad():
        for pair in pairs:
            result.rows.append(_row(pair, copier.copy(pair)))
            result.loaded += pair.ours.kind in WEIGHTED and bool(pair.layer.variables)
    if copier.folds:
        result.notes.append(f"folded {copier.folds} Keras conv bias(es) into the batch norm that follows (moving "
                            "mean minus bias: exact), as cnnkit's convs before batch norm have no bias")
    if epsilon is not None:
        result.notes.append(f"BN epsilon {epsilon:g} ({'--bn-epsilon' if bn_epsilon is not None else 'Keras default'})"
                            " for every batch norm: a bare .weights.h5 does not record it")
    unused = _unused(model, ours)
    if unused:
        result.notes.append(f"not used at inference, left as initialised: {', '.join(unused)}")
    return result


def _pair_graphs(theirs: list[Op], ours: list[Op], keras: KerasModel, result: Loaded) -> list[_Pair]:
    """Pair the two op sequences, refusing at the first op that computes something else."""
    if theirs and theirs[0].kind == "rescaling" and (not ours or ours[0].kind != "rescaling"):
        result.rescaling, theirs = theirs[0], theirs[1:]
        result.notes.append(f"Keras layer {result.rescaling.name!r} (Rescaling) scales the input inside the model: "
                            "it becomes the checkpoint's preprocessing")
    if theirs and theirs[-1].kind == "softmax" and (not ours or ours[-1].kind != "softmax"):
        result.notes.append(f"Keras' final softmax ({theirs[-1].name}) is left out: cnnkit models output logits")
        theirs = theirs[:-1]
    for index, (k, o) in enumerate(zip(theirs, ours, strict=False)):
        reason = difference(k, o)
        if reason:
            raise CnnkitError(f"{keras.source}: the models differ at op {index + 1}: Keras layer {describe(k)} vs "
                              f"cnnkit {describe(o)}: {reason}; the import would compute something else")
    if len(theirs) != len(ours):
        shorter, longer, which = (theirs, ours, "cnnkit") if len(theirs) < len(ours) else (ours, theirs, "Keras")
        last = f"after {shorter[-1].name}" if shorter else "at the start"
        raise CnnkitError(f"{keras.source}: the models differ {last}: {which} goes on with "
                          f"{describe(longer[len(shorter)])}")
    consumers: dict[str, int] = {}
    for op in theirs:
        for name in op.inputs:
            consumers[name] = consumers.get(name, 0) + 1
    pairs = []
    for index, (k, o) in enumerate(zip(theirs, ours, strict=True)):
        pair = _Pair(k, k.source, o)
        if k.kind == "conv" and o.source.bias is None and k.source.config.get("use_bias", True):
            pair.fold_into = _absorbing_bn(theirs, ours, index, consumers)
        pairs.append(pair)
    return pairs


def _absorbing_bn(theirs: list[Op], ours: list[Op], index: int, consumers: dict[str, int]) -> Op | None:
    """cnnkit's BN right after conv `index`, when on both sides it alone reads that conv's output."""
    if index + 1 >= len(ours):
        return None
    k_next, o_next = theirs[index + 1], ours[index + 1]
    if k_next.kind == o_next.kind == "bn" and k_next.inputs == [theirs[index].name] \
            and o_next.inputs == [ours[index].name] and consumers.get(theirs[index].name) == 1:
        return o_next
    return None


def _pair_by_kind(keras: KerasModel, ours: list[Op], result: Loaded) -> list[_Pair]:
    """Without a config: the k-th conv2d/batch_normalization/dense of the file to the k-th of cnnkit's graph."""
    merges = [op for op in ours if op.kind in ("add", "concat")]
    if merges:
        raise CnnkitError(f"{keras.source} holds no model graph and the cnnkit model has branches ({merges[0].name}): "
                          "the layer order cannot be known; import the .keras file, or pass --keras-config with the "
                          "model's config (model.to_json())")
    theirs: dict[str, list[KerasLayer]] = {kind: [] for kind in WEIGHTED}
    for layer in keras.layers:
        stem = layer.path.removeprefix("layers/").rsplit("_", 1)[0] if layer.path[-1].isdigit() else \
            layer.path.removeprefix("layers/")
        if stem not in STEM_KINDS:
            raise CnnkitError(f"{keras.source}: Keras layer {layer.name!r} holds variables of shapes "
                              f"{[a.shape for a in layer.variables]} that cnnkit cannot map")
        theirs[STEM_KINDS[stem]].append(layer)
    mine = {kind: [op for op in ours if op.kind == kind] for kind in WEIGHTED}
    for kind in WEIGHTED:
        if len(mine[kind]) != len(theirs[kind]):
            raise CnnkitError(f"{keras.source}: the Keras file has {len(theirs[kind])} {kind} layers, the model "
                              f"{len(mine[kind])}")
    result.notes.append("no Keras config: layer kinds, order and shapes were checked, pool sizes and padding could "
                        "not be (import the .keras file, or pass --keras-config, to check them)")
    by_module = {op.name: op for op in ours}
    pairs = []
    for kind in WEIGHTED:
        for layer, op in zip(theirs[kind], mine[kind], strict=True):
            pair = _Pair(None, layer, op)
            if kind == "conv" and op.source.bias is None and len(layer.variables) == 2:
                readers = [o for o in by_module.values() if o.inputs == [op.name] and o.kind == "bn"]
                pair.fold_into = readers[0] if readers else None
            pairs.append(pair)
    order = {op.name: i for i, op in enumerate(ours)}
    return sorted(pairs, key=lambda p: order[p.ours.name])


class _Copier:
    """Copies paired layers in graph order, carrying conv biases forward to the batch norm that absorbs them."""

    def __init__(self, ours: list[Op], epsilon: float | None) -> None:
        self.ours, self.epsilon = ours, epsilon  # epsilon None: each BN's own, from the Keras config
        self.pending: dict[str, torch.Tensor] = {}  # cnnkit BN name -> the conv bias it absorbs
        self.folds = 0

    def copy(self, pair: _Pair) -> str:
        """Copy one layer's variables; returns how they were converted, for the mapping table."""
        kind, layer, module = pair.ours.kind, pair.layer, pair.ours.source
        if kind not in WEIGHTED:
            if layer.variables and not (pair.keras and pair.keras.extra.get("activation")):
                raise CnnkitError(f"Keras layer {layer.name!r} holds variables but pairs with {pair.ours.name}, "
                                  "which has none")
            return ""
        if kind == "bn":
            return self.batch_norm(pair, module)
        arrays = layer.variables
        has_bias = bool(layer.config.get("use_bias", True)) if pair.keras else len(arrays) == 2
        _expect(pair, 1 + has_bias)
        flatten = _flatten_before(pair.ours, self.ours) if kind == "dense" else None
        kernel = conv_kernel_from_tf(arrays[0]) if kind == "conv" else dense_kernel_from_tf(arrays[0], flatten)
        _put(pair, module.weight, kernel)
        text = f"kernel {tuple(arrays[0].shape)} -> {tuple(module.weight.shape)}" + (
            f" (inputs reordered from NHWC {flatten[0]}x{flatten[1]}x{flatten[2]} to NCHW)" if flatten else "")
        return text + self.bias(pair, module, arrays[1] if has_bias else None)

    def bias(self, pair: _Pair, module: nn.Module, bias: np.ndarray | None) -> str:
        """Copy, zero, or fold a bias into the batch norm that follows."""
        if module.bias is not None:
            _put(pair, module.bias, torch.zeros(module.bias.shape) if bias is None else torch.from_numpy(bias))
            return "" if bias is not None else "; no Keras bias: cnnkit's set to 0"
        if bias is None:
            return ""
        if pair.fold_into is not None:
            self.pending[pair.fold_into.name] = torch.from_numpy(bias)
            return f"; bias {tuple(bias.shape)} folded into {pair.fold_into.name}"
        if not np.any(bias):
            return "; zero bias dropped"
        raise CnnkitError(f"Keras layer {pair.layer.name!r} has a bias that {pair.ours.name} lacks, and no batch norm "
                          "that reads only this layer follows to absorb it")

    def batch_norm(self, pair: _Pair, module: nn.Module) -> str:
        """gamma, beta (when Keras' scale/center), moving mean (minus a folded bias), variance, epsilon, momentum."""
        arrays, config = pair.layer.variables, pair.layer.config
        if pair.keras:
            scale, center = bool(config.get("scale", True)), bool(config.get("center", True))
        else:
            scale = center = len(arrays) == 4
        _expect(pair, scale + center + 2)
        values = iter(torch.from_numpy(a) for a in arrays)
        gamma = next(values) if scale else torch.ones(module.running_mean.shape)
        beta = next(values) if center else torch.zeros(module.running_mean.shape)
        mean, var = next(values), next(values)
        if module.weight is None and not (torch.all(gamma == 1) and torch.all(beta == 0)):
            raise CnnkitError(f"{pair.ours.name} has no scale and offset, but Keras layer {pair.layer.name!r} does")
        if module.weight is not None:
            _put(pair, module.weight, gamma)
            _put(pair, module.bias, beta)
        bias = self.pending.pop(pair.ours.name, None)
        _put(pair, module.running_mean, mean - bias if bias is not None else mean)
        _put(pair, module.running_var, var)
        self.folds += bias is not None
        epsilon = config.get("epsilon", KERAS_DEFAULT_EPSILON) if self.epsilon is None else self.epsilon
        if not isinstance(epsilon, (int, float)) or not epsilon >= 0:
            raise CnnkitError(f"Keras layer {pair.layer.name!r} has epsilon={epsilon!r}; expected a number >= 0")
        module.eps = float(epsilon)
        momentum = config.get("momentum")
        if pair.keras and isinstance(momentum, (int, float)) and module.momentum is not None:
            module.momentum = keras_momentum_to_torch(float(momentum))
        return f"gamma/beta/mean/variance ({mean.shape[0]},), epsilon {module.eps:g}" + (
            "; moving mean minus the folded conv bias" if bias is not None else "")


def _flatten_before(dense: Op, ours: list[Op]) -> tuple[int, int, int] | None:
    """(H, W, C) when the dense layer reads maps flattened in NCHW order (Keras flattens NHWC)."""
    source = next((op for op in ours if op.name in dense.inputs), None)
    if source is None or source.kind != "flatten" or len(source.in_shape) != 3 or source.extra["order"] == "NHWC":
        return None
    c, h, w = source.in_shape
    return (h, w, c) if h * w > 1 else None


def _expect(pair: _Pair, count: int) -> None:
    if len(pair.layer.variables) != count:
        raise CnnkitError(f"{pair.ours.name} (Keras layer {pair.layer.name!r}) needs {count} variables, the file "
                          f"holds {len(pair.layer.variables)}")


def _put(pair: _Pair, target: torch.Tensor, value: torch.Tensor) -> None:
    """Copy `value` into `target`, naming both layers when shapes differ."""
    if tuple(value.shape) != tuple(target.shape):
        raise CnnkitError(f"shapes differ at {pair.ours.name} (Keras layer {pair.layer.name!r}): Keras gives "
                          f"{tuple(value.shape)} after conversion, the model holds {tuple(target.shape)}")
    target.copy_(value.float())


def _row(pair: _Pair, text: str) -> dict:
    """One line of the mapping table."""
    keras = pair.keras
    return {"keras": pair.layer.name, "path": pair.layer.path if pair.ours.kind in WEIGHTED else "",
            "keras_type": keras.type if keras else pair.layer.path, "cnnkit": pair.ours.name,
            "cnnkit_type": pair.ours.type, "kind": pair.ours.kind, "output": shape_text(pair.ours.out_shape),
            "weights": text}


def _unused(model: nn.Module, ours: list[Op]) -> list[str]:
    """Top-level names of weighted modules the forward pass never ran (e.g. auxiliary classifiers)."""
    ran = {op.name for op in ours}
    names = []
    for name, module in model.named_modules():
        if name and name not in ran and isinstance(module, (nn.Conv2d, nn.Linear)) and not any(
                r == name or r.startswith(name + ".") for r in ran):
            top = name.split(".")[0]
            if top not in names and not any(r.startswith(top + ".") for r in ran):
                names.append(top)
    return names
