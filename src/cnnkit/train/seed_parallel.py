"""Several seeds trained side by side: each seed's own model, optimiser and steps, the seeds spread over threads.

Each seed runs exactly its single run's arithmetic (the same kernels on one thread each, the same layout, the same
dropout masks), so its losses and weights equal its single run's bit for bit, batch norm included (vmap's batch
norm rounds differently, and Adam amplifies that). Worker threads run different seeds at once; PyTorch releases
the GIL inside its operators, so on a step the size of the digits CNN's two threads do 1.25-1.5x the work of one.
The only shared state a single run touches is the global random generator its dropout draws from: here each
seed's dropout layers draw from the seed's own generator instead, seeded as its single run seeds the global one.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor

import torch
from torch import nn

from cnnkit.train.config import TrainConfig
from cnnkit.train.data import PreparedData, training_batches
from cnnkit.train.epoch import StepPlan, TrainState, begin_epoch, train_one_epoch, use_channels_last
from cnnkit.train.loop import make_optimizer


class SeedDropout(nn.Module):
    """nn.Dropout drawing its mask from `generator`, with the CPU kernel's arithmetic (mask / (1 - p), times x)."""

    def __init__(self, p: float, generator: torch.Generator) -> None:
        super().__init__()
        self.p, self.generator = p, generator

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x scaled by a fresh mask in training, x itself in evaluation."""
        if not self.training or self.p == 0.0:
            return x
        mask = torch.empty_like(x).bernoulli_(1.0 - self.p, generator=self.generator)
        return x * mask.div_(1.0 - self.p)


def own_dropout(model: nn.Module, generator: torch.Generator) -> Callable[[], None]:
    """Make every nn.Dropout of `model` draw from `generator`; returns the function that puts the originals back."""
    swapped = []
    for name, module in list(model.named_modules()):
        if type(module) is nn.Dropout:
            parent, _, leaf = name.rpartition(".")
            owner = model.get_submodule(parent)
            setattr(owner, leaf, SeedDropout(module.p, generator))
            swapped.append((owner, leaf, module))

    def restore() -> None:
        for owner, leaf, module in swapped:
            setattr(owner, leaf, module)

    return restore


class StoppedError(Exception):
    """A worker's epoch cut short because the run is stopping."""


def _until(stopping: threading.Event, batches: Iterable) -> Iterator:
    """The batches, until `stopping` is set."""
    for batch in batches:
        if stopping.is_set():
            raise StoppedError
        yield batch


class ParallelSeeds:
    """train_epoch(epoch) for every seed at once; the models are always current (nothing to unstack)."""

    def __init__(self, models: list[nn.Module], configs: list[TrainConfig], datas: list[PreparedData],
                 loss_fn: Callable, lr_of_step: Callable[[int], float], workers: int, device: torch.device) -> None:
        self.datas = datas
        self.plans = [StepPlan(c, loss_fn, lr_of_step, device) for c in configs]
        size = tuple(datas[0].train[0].shape[-2:])
        models = [m.to(memory_format=torch.channels_last) if use_channels_last(c, size, device) else m
                  for m, c in zip(models, configs, strict=True)]
        self.states = [TrainState(m, make_optimizer(c, m), dropout=torch.Generator())
                       for m, c in zip(models, configs, strict=True)]
        self.restores = [own_dropout(s.model, s.dropout) for s in self.states]
        self.pool = ThreadPoolExecutor(workers, thread_name_prefix="cnnkit-seed")
        self.stopping = threading.Event()  # set by close(): the workers stop at their next batch (Ctrl-C, an error)

    def train_epoch(self, epoch: int) -> list[dict]:
        """One epoch of every seed; each seed's sums of training loss, correct predictions and images."""
        return list(self.pool.map(lambda k: self._seed_epoch(k, epoch), range(len(self.states))))

    def _seed_epoch(self, k: int, epoch: int) -> dict:
        """Seed k's epoch, as its single run trains it (see loop.fit)."""
        state, plan, data = self.states[k], self.plans[k], self.datas[k]
        order = begin_epoch(state, plan.config, epoch, len(data.train[1]), plan.device)
        batches = _until(self.stopping, training_batches(data, plan.config, order, plan.device))
        return train_one_epoch(state, batches, plan)

    def map(self, function: Callable, items: Iterable) -> list:
        """function(item) for each item on the workers (evaluation and checkpoints of the seeds side by side)."""
        return list(self.pool.map(function, items))

    def evaluated(self) -> None:
        """Nothing to copy back: evaluation ran on the models that train."""

    def close(self) -> None:
        """Stop the workers (within a batch) and give the models their own dropout layers back."""
        self.stopping.set()
        self.pool.shutdown(wait=True, cancel_futures=True)
        for restore in self.restores:
            restore()
