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

from cnnkit.data.batches import epoch_order
from cnnkit.train.config import TrainConfig
from cnnkit.train.data import PreparedData, training_batches
from cnnkit.train.loop import augment_seed, dropout_seed, make_optimizer, train_one_epoch, use_channels_last
from cnnkit.train.run_dir import optimizer_tensors


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
    """train_epoch(epoch, step) for every seed at once; the models are always current (nothing to unstack)."""

    def __init__(self, models: list[nn.Module], configs: list[TrainConfig], datas: list[PreparedData],
                 loss_fn: Callable, lr_of_step: Callable[[int], float], workers: int, device: torch.device) -> None:
        self.configs, self.datas, self.loss_fn, self.lr_of_step, self.device = configs, datas, loss_fn, lr_of_step, \
            device
        size = tuple(datas[0].train[0].shape[-2:])
        self.models = [m.to(memory_format=torch.channels_last) if use_channels_last(c, size, device) else m
                       for m, c in zip(models, configs, strict=True)]
        self.optimizers = [make_optimizer(c, m) for m, c in zip(self.models, configs, strict=True)]
        self.generators = [torch.Generator() for _ in models]
        self.restores = [own_dropout(m, g) for m, g in zip(self.models, self.generators, strict=True)]
        self.pool = ThreadPoolExecutor(workers, thread_name_prefix="cnnkit-seed")
        self.stopping = threading.Event()  # set by close(): the workers stop at their next batch (Ctrl-C, an error)

    def train_epoch(self, epoch: int, step: int) -> torch.Tensor:
        """One epoch of every seed; (seeds, 2) sums of training loss and correct predictions."""
        results = list(self.pool.map(lambda k: self._seed_epoch(k, epoch, step), range(len(self.models))))
        return torch.tensor([[float(r["loss_sum"]), float(r["correct"])] for r in results])

    def _seed_epoch(self, k: int, epoch: int, step: int) -> dict:
        """Seed k's epoch, as its single run trains it (see loop.fit)."""
        config, data = self.configs[k], self.datas[k]
        self.generators[k].manual_seed(dropout_seed(config.seed, epoch))
        generator = torch.Generator().manual_seed(augment_seed(config.seed, epoch))
        order = epoch_order(len(data.train[1]), config.shuffle, config.seed, epoch).to(self.device)
        batches = _until(self.stopping, training_batches(data, config, order, self.device))
        _, sums = train_one_epoch(self.models[k], batches,
                                  self.optimizers[k], self.loss_fn, self.lr_of_step, step, config, self.device,
                                  generator)
        return sums

    def map(self, function: Callable, items: Iterable) -> list:
        """function(item) for each item on the workers (evaluation and checkpoints of the seeds side by side)."""
        return list(self.pool.map(function, items))

    def evaluated(self) -> None:
        """Nothing to copy back: evaluation ran on the models that train."""

    def optimizer_state(self, k: int) -> tuple[dict[str, torch.Tensor], list[dict]]:
        """Seed k's optimiser state in the checkpoint format."""
        return optimizer_tensors(self.optimizers[k])

    def close(self) -> None:
        """Stop the workers (within a batch) and give the models their own dropout layers back."""
        self.stopping.set()
        self.pool.shutdown(wait=True, cancel_futures=True)
        for restore in self.restores:
            restore()
