"""The one tracer under summaries, units and import graphs: what it records of a forward pass, how it carries a
value along the data flow, and the three views it gives of one small residual network, each checked by hand."""

import pytest
import torch
from torch import nn

from cnnkit import CnnkitError
from cnnkit.analysis.summary import summarize
from cnnkit.analysis.trace import trace_units
from cnnkit.analysis.tracer import carry, trace
from cnnkit.interop.traced import traced_ops
from cnnkit.layers import Flatten, Fuse


class Residual(nn.Module):
    """conv -> ReLU -> conv, plus a 1x1 conv on a flipped copy of the input (a tensor no layer made), added."""

    def __init__(self, doubled: bool) -> None:
        super().__init__()
        self.c1 = nn.Conv2d(2, 2, 3, padding=1)
        self.relu = nn.ReLU()
        self.c2 = nn.Conv2d(2, 2, 3, padding=1)
        self.short = nn.Conv2d(2, 2, 1)
        self.fuse = Fuse("add")
        self.doubled = doubled

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.c2(self.relu(self.c1(x)))
        out = self.fuse([y, self.short(x.flip(-1))])
        return out * 2 if self.doubled else out  # doubled: the block's output, too, is made by no layer


def net(doubled: bool = False) -> nn.Sequential:
    """(1, 8, 8) -> 3x3 conv (6x6) -> Residual -> Flatten -> Linear(72, 3)."""
    return nn.Sequential(nn.Conv2d(1, 2, 3), Residual(doubled), Flatten(), nn.Linear(2 * 6 * 6, 3))


def test_trace_records_each_module_in_the_order_it_ran():
    model = net(doubled=True).train()
    run = trace(model, (1, 8, 8))
    assert [(c.name, c.entry, c.leaf) for c in run.calls] == [
        ("0", False, True), ("1", True, False), ("1.c1", False, True), ("1.relu", False, True),
        ("1.c2", False, True), ("1.short", False, True), ("1.fuse", False, True), ("1", False, False),
        ("2", False, True), ("3", False, True)]
    assert all(c.output is None for c in run.calls if c.entry)
    assert [tuple(c.outputs[0].shape) for c in run.calls if c.leaf] == [
        (1, 2, 6, 6), (1, 2, 6, 6), (1, 2, 6, 6), (1, 2, 6, 6), (1, 2, 6, 6), (1, 2, 6, 6), (1, 72), (1, 3)]
    fuse = next(c for c in run.calls if c.name == "1.fuse")
    assert len(fuse.inputs) == 2 and isinstance(fuse.args[0], list)  # a merge's list, flattened by `inputs`
    assert torch.equal(run.input, torch.zeros(1, 1, 8, 8))
    with torch.no_grad():
        assert torch.equal(run.output, model.eval()(torch.zeros(1, 1, 8, 8)))
    assert not run.output.requires_grad
    model.train()
    trace(model, (1, 8, 8))
    assert model.training and all(m.training for m in model.modules())  # the mode comes back
    assert not any(m._forward_hooks or m._forward_pre_hooks for m in model.modules())


def test_carry_follows_the_data_flow():
    """The value is the set of layers upstream; Flatten makes it None ('everything'), which then wins."""
    def step(call, upstream):
        return None if upstream is None or isinstance(call.module, Flatten) else upstream | {call.name}

    got = {(c.name, c.leaf): v for c, v in carry(trace(net(doubled=True), (1, 8, 8)), frozenset(), step,
                                               frozenset.union)}
    main = {"0", "1.c1", "1.relu", "1.c2"}
    assert got[("1.c2", True)] == main
    assert got[("1.short", True)] == {"0", "1.short"}  # the flipped input reads as the block's input, not as c2
    assert got[("1.fuse", True)] == main | {"1.short", "1.fuse"}
    assert got[("1", False)] == got[("1.fuse", True)]  # the doubled output: what the block's last layer made
    assert got[("2", True)] is None and got[("3", True)] is None


def test_the_three_views_of_one_trace():
    model = net()
    # receptive fields by hand: 3x3 -> 3; +3x3 -> 5 (ReLU keeps it); +3x3 -> 7; the shortcut's 1x1 keeps 3
    rows = {r.name: r for r in summarize(model, (1, 8, 8)).rows}
    assert {n: r.receptive_field for n, r in rows.items()} == {
        "0": 3, "1.c1": 5, "1.relu": 5, "1.c2": 7, "1.short": 3, "1.fuse": 7, "2": None, "3": None}
    assert rows["3"].macs == 72 * 3 and rows["1.c1"].macs == 3 * 3 * 2 * 2 * 6 * 6
    units = trace_units(model, (1, 8, 8))
    assert [u.names for u in units] == [["0"], ["1.c1", "1.relu"], ["1.c2"], ["1.short"], ["1.fuse"], ["2"], ["3"]]
    fields = {u.id: u.field for u in units}
    assert (fields["1.c2"].start, fields["1.c2"].size) == ((-2, -2), (7, 7))  # two pads of 1 before
    assert (fields["1.short"].start, fields["1.short"].size) == ((0, 0), (3, 3))
    assert (fields["1.fuse"].start, fields["1.fuse"].size) == ((-2, -2), (7, 7))  # the box around both
    assert fields["2"] is None
    ops = traced_ops(model, (1, 8, 8))
    assert [(op.name, op.kind, op.inputs) for op in ops] == [
        ("0", "conv", ["input"]), ("1.c1", "conv", ["0"]), ("1.relu", "relu", ["1.c1"]), ("1.c2", "conv", ["1.relu"]),
        ("1.short", "conv", ["input"]), ("1.fuse", "add", ["1.c2", "1.short"]), ("2", "flatten", ["1.fuse"]),
        ("3", "dense", ["2"])]
    assert ops[1].window == ((3, 3), (1, 1), (1, 1), (1, 1), 1, None) and ops[-1].out_shape == (3,)


def test_a_layer_run_twice_cannot_be_paired():
    class Shared(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(1, 1, 3, padding=1)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.conv(self.conv(x))

    with pytest.raises(CnnkitError, match="conv runs twice in one forward pass"):
        traced_ops(Shared(), (1, 4, 4))
