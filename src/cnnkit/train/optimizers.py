"""Adam, AdamW and SGD stepped by torch.optim's functional kernels, without the torch.optim.Optimizer class.

The class imports torch._dynamo (and sympy) when it is built, 1.5 s of every training process on a 2-core machine
for a default run that trains in about 10 s; its functional `adam` and `sgd` do not. This holder keeps what the
class keeps: param groups with torch.optim's keys, per-parameter state with its slot names, and its state_dict
layout, so checkpoints written before and after it load into either.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch.optim.adam import adam
from torch.optim.sgd import sgd

# torch.optim 2.13's param-group entries, so a saved state_dict reads the same whichever wrote it.
ADAM_GROUP = {"betas": (0.9, 0.999), "eps": 1e-8, "weight_decay": 0.0, "amsgrad": False, "maximize": False,
              "foreach": True, "capturable": False, "differentiable": False, "fused": None}
SGD_GROUP = {"dampening": 0, "weight_decay": 0.0, "nesterov": False, "maximize": False, "foreach": True,
             "differentiable": False, "fused": None}


class Optimizer:
    """One optimiser ('adam', 'adamw' or 'sgd') over parameter groups; each group's 'lr' may change between steps."""

    def __init__(self, kind: str, groups: Iterable[dict], lr: float, momentum: float = 0.0,
                 nesterov: bool = False) -> None:
        if kind not in ("adam", "adamw", "sgd"):
            raise ValueError(f"optimizer must be adam, adamw or sgd; received {kind!r}")
        self.kind = kind
        if kind == "sgd":
            defaults = {"lr": lr, "momentum": momentum, **SGD_GROUP, "nesterov": nesterov}
        else:
            defaults = {"lr": lr, **ADAM_GROUP, "decoupled_weight_decay": kind == "adamw"}
        # A group's own entries first, then the defaults it lacks: torch.optim's key order.
        self.param_groups = [{**group, "params": list(group["params"]), **{k: v for k, v in defaults.items()
                                                                          if k not in group}} for group in groups]
        self.state: dict[torch.Tensor, dict[str, torch.Tensor]] = {}

    def zero_grad(self, set_to_none: bool = True) -> None:
        """Drop (or zero) every parameter's gradient."""
        for group in self.param_groups:
            for param in group["params"]:
                if set_to_none:
                    param.grad = None
                elif param.grad is not None:
                    param.grad.zero_()

    @torch.no_grad()
    def step(self) -> None:
        """One update of every parameter that has a gradient."""
        for group in self.param_groups:
            params = [p for p in group["params"] if p.grad is not None]
            if self.kind == "sgd":
                self._sgd(group, params)
            else:
                self._adam(group, params)

    def _adam(self, group: dict, params: list[torch.Tensor]) -> None:
        for param in params:
            if not self.state.get(param):  # as torch.optim.Adam starts a parameter's state
                self.state[param] = {"step": torch.tensor(0.0),
                                     "exp_avg": torch.zeros_like(param, memory_format=torch.preserve_format),
                                     "exp_avg_sq": torch.zeros_like(param, memory_format=torch.preserve_format)}
        slots = [self.state[p] for p in params]
        beta1, beta2 = group["betas"]
        adam(params, [p.grad for p in params], [s["exp_avg"] for s in slots], [s["exp_avg_sq"] for s in slots], [],
             [s["step"] for s in slots], foreach=group["foreach"], has_complex=any(map(torch.is_complex, params)),
             decoupled_weight_decay=group["decoupled_weight_decay"], amsgrad=False, beta1=beta1, beta2=beta2,
             lr=group["lr"], weight_decay=group["weight_decay"], eps=group["eps"], maximize=group["maximize"])

    def _sgd(self, group: dict, params: list[torch.Tensor]) -> None:
        buffers = [self.state.get(p, {}).get("momentum_buffer") for p in params]
        sgd(params, [p.grad for p in params], buffers, foreach=group["foreach"], weight_decay=group["weight_decay"],
            momentum=group["momentum"], lr=group["lr"], dampening=group["dampening"], nesterov=group["nesterov"],
            maximize=group["maximize"])
        if group["momentum"]:  # sgd() creates the buffers of a first step in the list it was given
            for param, buffer in zip(params, buffers, strict=True):
                self.state[param] = {"momentum_buffer": buffer}

    def state_dict(self) -> dict:
        """torch.optim's layout: parameters numbered across the groups in order; state only where it exists."""
        numbered = [p for group in self.param_groups for p in group["params"]]
        groups, start = [], 0
        for group in self.param_groups:
            size = len(group["params"])
            groups.append({**{k: v for k, v in group.items() if k != "params"}, "params": list(range(start,
                                                                                                       start + size))})
            start += size
        return {"state": {i: dict(self.state[p]) for i, p in enumerate(numbered) if p in self.state},
                "param_groups": groups}

    def load_state_dict(self, state_dict: dict) -> None:
        """Inverse of state_dict; also reads what torch.optim's own classes saved."""
        saved_groups = state_dict["param_groups"]
        if [len(g["params"]) for g in saved_groups] != [len(g["params"]) for g in self.param_groups]:
            raise ValueError("the saved optimiser state has other parameter groups than this model")
        for group, saved in zip(self.param_groups, saved_groups, strict=True):
            group.update({k: tuple(v) if k == "betas" else v for k, v in saved.items() if k != "params"})
        numbered = [p for group in self.param_groups for p in group["params"]]
        state = {}
        for index, slots in state_dict["state"].items():
            param = numbered[int(index)]
            for name, value in slots.items():
                expected = () if name == "step" else param.shape
                if value.shape != expected:  # copy_ would broadcast a wrong shape without a word
                    raise ValueError(f"optimiser state {index}.{name} has shape {tuple(value.shape)}; its parameter "
                                     f"needs {tuple(expected)}")
            # the step count stays a CPU float, as torch.optim keeps it
            state[param] = {name: value.clone() if name == "step" else torch.empty_like(param).copy_(value)
                            for name, value in slots.items()}
        self.state = state
