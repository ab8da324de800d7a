"""cnnkit's optimiser holder against torch.optim's own classes: the same updates, the same saved state."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch
from torch import nn

from cnnkit.train.optimizers import Optimizer

CASES = {
    "adamw": (lambda g: torch.optim.AdamW(g, lr=3e-3, foreach=True), {}),
    "adam": (lambda g: torch.optim.Adam(g, lr=3e-3, foreach=True), {}),
    "sgd": (lambda g: torch.optim.SGD(g, lr=3e-2, momentum=0.9, foreach=True), {"momentum": 0.9}),
    "sgd_nesterov": (lambda g: torch.optim.SGD(g, lr=3e-2, momentum=0.9, nesterov=True, foreach=True),
                     {"momentum": 0.9, "nesterov": True}),
}


def _model(seed: int) -> nn.Module:
    torch.manual_seed(seed)
    net = nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 6 * 6, 3))
    return net.to(memory_format=torch.channels_last)  # conv weights in channels-last strides, as cnnkit trains


def _groups(net: nn.Module) -> list[dict]:
    return [{"params": [p for p in net.parameters() if p.dim() > 1], "weight_decay": 5e-2},
            {"params": [p for p in net.parameters() if p.dim() <= 1], "weight_decay": 0.0}]


def _train(net: nn.Module, optimizer, steps: range) -> None:
    for step in steps:
        generator = torch.Generator().manual_seed(step)
        x = torch.randn(5, 1, 8, 8, generator=generator)
        y = torch.randint(0, 3, (5,), generator=generator)
        for group in optimizer.param_groups:
            group["lr"] = group["lr"] * 0.9  # a changing schedule, as the trainer sets it every step
        optimizer.zero_grad(set_to_none=True)
        nn.functional.cross_entropy(net(x), y).backward()
        optimizer.step()


@pytest.mark.parametrize("case", CASES)
def test_updates_and_state_equal_torch_optim(case):
    make_reference, options = CASES[case]
    kind = case.split("_")[0]
    reference, ours = _model(0), _model(0)
    reference_opt = make_reference(_groups(reference))
    our_opt = Optimizer(kind, _groups(ours), lr=reference_opt.defaults["lr"], **options)
    _train(reference, reference_opt, range(12))
    _train(ours, our_opt, range(12))
    for a, b in zip(reference.parameters(), ours.parameters(), strict=True):
        assert torch.equal(a, b)  # the same kernels in the same order: bit for bit
    saved, mine = reference_opt.state_dict(), our_opt.state_dict()
    assert mine["param_groups"] == saved["param_groups"]
    assert list(mine["param_groups"][0]) == list(saved["param_groups"][0])  # key order too, for the metadata
    assert mine["state"].keys() == saved["state"].keys()
    for index, slots in saved["state"].items():
        assert mine["state"][index].keys() == slots.keys()
        for name, value in slots.items():
            assert torch.equal(mine["state"][index][name], value)


@pytest.mark.parametrize("case", ["adamw", "sgd"])
def test_resumes_from_torch_optim_state(case):
    """A checkpoint written by torch.optim's class (every run before this holder) continues identically."""
    make_reference, options = CASES[case]
    reference, ours = _model(1), _model(1)
    reference_opt = make_reference(_groups(reference))
    _train(reference, reference_opt, range(5))
    ours.load_state_dict(reference.state_dict())
    our_opt = Optimizer(case, _groups(ours), lr=1.0, **options)
    our_opt.load_state_dict(json.loads(json.dumps({"state": {}, "param_groups": reference_opt.state_dict()
                                                   ["param_groups"]})) | {"state": reference_opt.state_dict()["state"]})
    _train(reference, reference_opt, range(5, 10))
    _train(ours, our_opt, range(5, 10))
    for a, b in zip(reference.parameters(), ours.parameters(), strict=True):
        assert torch.equal(a, b)


def test_refuses_state_of_other_groups_or_shapes():
    net = _model(2)
    opt = Optimizer("adamw", _groups(net), lr=1e-3)
    with pytest.raises(ValueError, match="other parameter groups"):
        opt.load_state_dict({"state": {}, "param_groups": [{"params": [0]}]})
    # A (3, 3) moment would broadcast into the (4, 1, 3, 3) conv weight's state without a word.
    groups = opt.state_dict()["param_groups"]
    bad = {"step": torch.tensor(1.0), "exp_avg": torch.zeros(3, 3), "exp_avg_sq": torch.zeros(4, 1, 3, 3)}
    with pytest.raises(ValueError, match=r"0.exp_avg has shape \(3, 3\); its parameter needs \(4, 1, 3, 3\)"):
        opt.load_state_dict({"state": {0: bad}, "param_groups": groups})
    assert opt.state == {}  # nothing half-loaded


def test_default_training_never_imports_dynamo(tmp_path):
    """torch._dynamo (1.5 s of start-up) stays out of a default training process, checkpoints included."""
    script = ("import sys, os; from cnnkit.train import TrainConfig, fit; "
              f"fit(TrainConfig(epochs=1), out={str(tmp_path / 'run')!r}, progress=False, "
              "stream=open(os.devnull, 'w')); print('torch._dynamo' in sys.modules)")
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "False"
