"""Several seeds trained as one batched computation, each step all of them at once through `vmap`.

Their parameters and buffers are stacked (torch.func's `stack_module_state`) and the optimiser works on the
stacked tensors (Adam, AdamW and SGD are element-wise, so each seed's update is its own). Each seed draws its
single run's dropout masks (`seed_dropout`) and its own shifts and flips; batch norm rounds differently from the
single runs.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterable

import torch
from torch import nn
from torch.func import functional_call, stack_module_state, vmap

from cnnkit.data.batches import num_batches
from cnnkit.models import main_logits
from cnnkit.train.config import TrainConfig
from cnnkit.train.data import PreparedData
from cnnkit.train.epoch import TrainState, augment, begin_epoch
from cnnkit.train.loop import make_optimizer
from cnnkit.train.seed_dropout import draw_masks, dropout_inputs, mask_dropout


class BatchedSeeds:
    """train_epoch(epoch) for every seed through one vmap over stacked parameters; `evaluated()` after the
    per-seed models (current after each epoch) have been evaluated."""

    def __init__(self, models: list[nn.Module], configs: list[TrainConfig], datas: list[PreparedData],
                 loss_fn: Callable, lr_of_step: Callable[[int], float], device: torch.device) -> None:
        self.models, self.configs, self.datas, self.lr_of_step, self.device = models, configs, datas, lr_of_step, \
            device
        self.params, self.buffers = stack_module_state(models)
        self.optimizer = make_optimizer(configs[0], _Stacked(self.params), stacked=1)
        # Each seed's state: its own model, its slice of the stacked optimiser, its own dropout stream.
        self.states = [TrainState(m, self.optimizer, dropout=torch.Generator(), seed_slice=k)
                       for k, m in enumerate(models)]
        template = copy.deepcopy(models[0]).to("meta")
        config, n = configs[0], len(datas[0].train[1])
        last = 0 if config.drop_last else n % config.batch_size
        self.dropout_calls = {size: dropout_inputs(template, (size, *datas[0].train[0].shape[1:]))
                              for size in {config.batch_size, last} - {0}}
        mask_dropout(template)
        self.step_fn = _step_function(template, loss_fn)

    def train_epoch(self, epoch: int) -> list[dict]:
        """One epoch of every seed; each seed's sums of training loss, correct predictions and images."""
        config, datas, states = self.configs[0], self.datas, self.states
        n, size = len(datas[0].train[1]), config.batch_size
        orders = [begin_epoch(s, c, epoch, n, self.device) for s, c in zip(states, self.configs, strict=True)]
        sums, count, steps = torch.zeros(len(states), 2), 0, num_batches(n, size, config.drop_last)
        for index in range(steps):
            picked = [order[index * size:(index + 1) * size] for order in orders]
            xs = torch.stack([augment(data.train[0][p], config, s.augment) for data, p, s in
                              zip(datas, picked, states, strict=True)])
            ys = torch.stack([data.train[1][p] for data, p in zip(datas, picked, strict=True)])
            losses, logits = self._step(xs, ys, states[0].step + index)
            sums[:, 0] += losses.detach() * ys.shape[1]
            sums[:, 1] += (logits.detach().argmax(-1) == ys).sum(1)
            count += ys.shape[1]
        _unstack(self.params, self.buffers, self.models)
        for state in states:
            state.step += steps
        return [{"loss_sum": sums[k, 0], "correct": sums[k, 1], "count": count} for k in range(len(states))]

    def _step(self, xs: torch.Tensor, ys: torch.Tensor, step: int) -> tuple[torch.Tensor, torch.Tensor]:
        """One optimiser step of every seed on its batch (xs: (seeds, B, ...)); each seed's loss and logits."""
        for group in self.optimizer.param_groups:
            group["lr"] = self.lr_of_step(step)
        masks = draw_masks(self.dropout_calls[ys.shape[1]], [state.dropout for state in self.states])
        losses, logits = self.step_fn(self.params, {**self.buffers, **masks}, xs, ys)
        self.optimizer.zero_grad(set_to_none=True)
        losses.sum().backward()
        if self.configs[0].grad_clip:
            _clip_per_seed(self.params.values(), self.configs[0].grad_clip)
        self.optimizer.step()
        return losses, logits

    def evaluated(self) -> None:
        """Copy back the buffers evaluation may have changed (recomputed batch-norm statistics)."""
        _restack(self.models, self.params, self.buffers)

    def map(self, function: Callable, items: Iterable) -> list:
        """function(item) for each item, in turn (the batched step already uses every core)."""
        return [function(item) for item in items]

    def close(self) -> None:
        """Nothing to release."""


class _Stacked(nn.Module):
    """The stacked parameters as a module, so the single-run optimiser setup (decay groups) applies to them."""

    def __init__(self, params: dict[str, torch.Tensor]) -> None:
        super().__init__()
        self.tensors = list(params.values())

    def parameters(self, recurse: bool = True):  # noqa: ARG002 - the interface of nn.Module
        """Every stacked tensor; the stacking axis counts as one more dimension, so decay groups shift by one."""
        return iter(self.tensors)


def _clip_per_seed(stacked: Iterable[torch.Tensor], max_norm: float) -> None:
    """clip_grad_norm_ for each seed's slice of the stacked gradients: seed k's gradients scaled by
    min(1, max_norm / (its total norm + 1e-6)), as its single run clips them."""
    grads = [p.grad for p in stacked if p.grad is not None]
    norms = torch.stack([g.flatten(1).pow(2).sum(1) for g in grads]).sum(0).sqrt()
    scale = (max_norm / (norms + 1e-6)).clamp(max=1.0)
    for grad in grads:
        grad.mul_(scale.view(-1, *[1] * (grad.dim() - 1)))


def _step_function(template: nn.Module, loss_fn):
    """(stacked params, stacked buffers, xs (S, B, ...), ys (S, B)) -> (loss per seed, logits per seed)."""

    def loss_of(params: dict, buffers: dict, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        output = functional_call(template, (params, buffers), (x,))
        return loss_fn(output, y), main_logits(output)

    batched = vmap(loss_of, randomness="error")  # dropout masks come in as buffers, drawn as each single run does

    def step(params: dict, buffers: dict, xs: torch.Tensor, ys: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        template.train()
        return batched(params, buffers, xs, ys)

    return step


def _unstack(params: dict, buffers: dict, models: list[nn.Module]) -> None:
    """Copy each seed's slice of the stacked tensors into its own model (for evaluation and checkpoints)."""
    with torch.no_grad():
        for k, model in enumerate(models):
            model.load_state_dict({**{n: p[k] for n, p in params.items()}, **{n: b[k] for n, b in buffers.items()}})


def _restack(models: list[nn.Module], params: dict, buffers: dict) -> None:
    """Copy back the buffers evaluation may have changed (recomputed batch-norm statistics)."""
    with torch.no_grad():
        for k, model in enumerate(models):
            state = model.state_dict()
            for name, stacked in buffers.items():
                stacked[k].copy_(state[name])
