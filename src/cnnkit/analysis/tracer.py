"""One forward pass of a zero image with a hook on every module: each module's run, in the order it ran, and a
value (a receptive field) carried along the data flow it shows. Summaries, units and import graphs read it."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import reduce
from typing import Any

import torch
from torch import nn

from cnnkit.models.stats import forward_once


def tensors(value) -> list[torch.Tensor]:
    """The tensors in a module's inputs or outputs, nested lists and tuples flattened."""
    if isinstance(value, torch.Tensor):
        return [value]
    if isinstance(value, (list, tuple)):
        return [tensor for item in value for tensor in tensors(item)]
    return []


def is_leaf(module: nn.Module) -> bool:
    """A module without children: it does the work its containers only arrange."""
    return not any(True for _ in module.children())


@dataclass
class Call:
    """One module's run: a leaf's end, a container's end, or (`entry`) a container's start, before its children."""

    name: str  # qualified, as named_modules gives it
    module: nn.Module
    args: tuple  # the positional inputs, as the module received them
    output: Any  # None at an entry
    leaf: bool
    entry: bool = False

    @property
    def inputs(self) -> list[torch.Tensor]:
        """The input tensors, flattened."""
        return tensors(self.args)

    @property
    def outputs(self) -> list[torch.Tensor]:
        """The output tensors, flattened."""
        return tensors(self.output)


@dataclass
class Trace:
    """A forward pass: its input, every named module's calls in order, and the model's output. The calls hold
    every tensor they saw, so no two of those tensors share an id() while the trace lives."""

    input: torch.Tensor
    calls: list[Call]
    output: Any


def trace(model: nn.Module, input_shape: tuple[int, int, int]) -> Trace:
    """Run one (C, H, W) zero image through `model` in eval mode without gradients, recording every module."""
    names = {m: n for n, m in model.named_modules() if n}
    calls: list[Call] = []
    ends: dict[str, Any] = {}
    handles = [m.register_forward_hook(lambda m, a, o: calls.append(Call(names[m], m, a, o, is_leaf(m))))
               for m in names]
    handles += [m.register_forward_pre_hook(lambda m, a: calls.append(Call(names[m], m, a, None, False, True)))
                for m in names if not is_leaf(m)]
    handles.append(model.register_forward_pre_hook(lambda _m, a: ends.setdefault("input", a[0])))
    handles.append(model.register_forward_hook(lambda _m, _a, o: ends.setdefault("output", o)))
    forward_once(model, input_shape, next((p.device for p in model.parameters()), "cpu"), handles)
    return Trace(ends["input"], calls, ends["output"])


def carry(run: Trace, start: Any, step: Callable[[Call, Any], Any], merge: Callable[[Any, Any], Any]
          ) -> Iterator[tuple[Call, Any]]:
    """Each end call with the value its output carries, `start` being the image's. A leaf's outputs get
    step(call, value of its inputs); several inputs merge pairwise by `merge`, and None (the whole input) wins.
    A container yields the merged value of its outputs; a tensor no leaf produced (a functional result such as
    LeNet's channel gather) carries what the last leaf's output carried, or, read inside a container, what the
    container's input carried."""
    values = {id(run.input): start}
    enclosing: list[Any] = []  # values of the inputs of the containers now running
    last = start

    def value_of(items: list[torch.Tensor]) -> Any:
        fallback = enclosing[-1] if enclosing else last
        known = [values.get(id(t), fallback) for t in items]
        if not known:
            return fallback
        return None if any(v is None for v in known) else reduce(merge, known)

    for call in run.calls:
        if call.entry:
            enclosing.append(value_of(call.inputs))
            continue
        if call.leaf:
            last = step(call, value_of(call.inputs))
            values.update((id(out), last) for out in call.outputs)
            yield call, last
            continue
        enclosing.pop()
        for out in call.outputs:
            values.setdefault(id(out), last)
        yield call, value_of(call.outputs)
