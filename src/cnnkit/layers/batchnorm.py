"""Batch normalisation per feature map or per neuron, with population statistics for inference."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from contextlib import contextmanager

import torch
import torch.nn.functional as F
from torch import nn

from cnnkit.core.arithmetic import pair
from cnnkit.core.errors import CnnkitError


class BatchNorm2d(nn.Module):
    """Batch normalisation of (N, C, H, W) features, the article's two variants.

    Args:
        num_features: C, the number of feature maps.
        per: 'feature_map' (one gamma/beta per channel, statistics over N, H, W) or 'neuron' (gamma/beta and
            statistics for every (c, h, w) position, over N only; needs `spatial`).
        spatial: (H, W) of the input, required for per='neuron'.
        eps: added to the variance; 1e-3 as in the article and Keras.
        momentum: weight of each new batch in the running averages (PyTorch's convention; TF's decay 0.99 is
            momentum 0.01); None keeps a cumulative average of all batches seen.
    Training normalises with batch statistics; eval uses the population statistics (running averages, or the
    article's exact average of batch moments via `recompute_batchnorm_stats`).
    """

    def __init__(
        self, num_features: int, per: str = "feature_map", spatial: int | tuple[int, int] | None = None,
        eps: float = 1e-3, momentum: float | None = 0.1, affine: bool = True,
    ) -> None:
        super().__init__()
        if per not in ("feature_map", "neuron"):
            raise CnnkitError(f"per must be 'feature_map' or 'neuron'; received per={per!r}")
        if per == "neuron" and spatial is None:
            raise CnnkitError("BatchNorm2d(per='neuron') needs spatial=(H, W): it holds gamma/beta for every position")
        self.num_features, self.per, self.eps, self.momentum = num_features, per, eps, momentum
        self.spatial = pair(spatial, "spatial") if per == "neuron" else None
        shape = (num_features,) if per == "feature_map" else (num_features, *self.spatial)
        self.weight = nn.Parameter(torch.ones(shape)) if affine else None
        self.bias = nn.Parameter(torch.zeros(shape)) if affine else None
        self.register_buffer("running_mean", torch.zeros(shape))
        self.register_buffer("running_var", torch.ones(shape))
        self.register_buffer("num_batches_tracked", torch.tensor(0, dtype=torch.long))
        self._population: dict | None = None  # set while recompute_batchnorm_stats gathers batch moments
        self.use_batch_stats = False  # eval with each batch's own moments, as the article evaluates
        self.sync_world = False  # under torch.distributed: batch moments over every process's batch (SyncBN)
        self.frozen = False  # fine-tuning with frozen features: population statistics always, never updated

    def _check(self, x: torch.Tensor) -> None:
        expected = (self.num_features, *self.spatial) if self.spatial else (self.num_features,)
        got = tuple(x.shape[1:]) if self.spatial else tuple(x.shape[1:2])
        if x.dim() != 4 or got != expected:
            raise CnnkitError(f"BatchNorm2d(per={self.per!r}) expects (N, {', '.join(map(str, expected))}"
                              f"{', H, W' if not self.spatial else ''}) input; received shape {tuple(x.shape)}")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Normalise with batch statistics in training, population statistics in eval (and when frozen)."""
        self._check(x)
        training = self.training and not self.frozen
        use_batch = training or self._population is not None or self.use_batch_stats
        reduced = x.shape[0] * (x.shape[2] * x.shape[3] if self.per == "feature_map" else 1)
        if use_batch and reduced < 2:
            raise CnnkitError(
                f"BatchNorm2d(per={self.per!r}) cannot take a variance over {reduced} value per "
                f"{'channel' if self.per == 'feature_map' else 'neuron'} (input {tuple(x.shape)}): "
                "train with batches of 2 or more, or call model.eval() to use population statistics"
            )
        flat = x if self.per == "feature_map" else x.reshape(x.shape[0], -1)  # per neuron: (N, C*H*W)
        weight = None if self.weight is None else self.weight.reshape(-1)
        bias = None if self.bias is None else self.bias.reshape(-1)
        if not training and use_batch:
            if self._population is not None:
                self._gather(flat, reduced)
            y = F.batch_norm(flat, None, None, weight, bias, True, 0.0, self.eps)
            return self._unflatten(y)
        if training and self.sync_world and torch.distributed.is_initialized():
            return self._unflatten(self._synced(flat, weight, bias, reduced))
        factor = 0.0
        if training:
            self.num_batches_tracked.add_(1)
            factor = self.momentum if self.momentum is not None else 1.0 / float(self.num_batches_tracked)
        y = F.batch_norm(flat, self.running_mean.view(-1), self.running_var.view(-1), weight, bias,
                         training, factor, self.eps)
        return self._unflatten(y)

    def _unflatten(self, y: torch.Tensor) -> torch.Tensor:
        # Per neuron the batch was normalised as (N, C*H*W); a constant target shape keeps exports shape-free.
        return y if self.per == "feature_map" else y.reshape(-1, self.num_features, *self.spatial)

    def _synced(self, flat: torch.Tensor, weight, bias, reduced: int) -> torch.Tensor:
        """Training forward with mean/variance over all processes' batches (autograd flows through all_reduce)."""
        from torch.distributed.nn.functional import all_reduce

        dims = [0, 2, 3] if self.per == "feature_map" else [0]
        count = torch.full((1,), float(reduced), device=flat.device, dtype=flat.dtype)
        totals = all_reduce(torch.cat([flat.sum(dims), flat.square().sum(dims), count]))
        channels = (len(totals) - 1) // 2
        n = totals[-1]
        mean = totals[:channels] / n
        var = (totals[channels:2 * channels] / n - mean.square()).clamp_min(0)
        with torch.no_grad():
            self.num_batches_tracked.add_(1)
            factor = self.momentum if self.momentum is not None else 1.0 / float(self.num_batches_tracked)
            self.running_mean.view(-1).lerp_(mean.detach(), factor)
            self.running_var.view(-1).lerp_(var.detach() * n / (n - 1), factor)
        shape = (1, -1, 1, 1) if self.per == "feature_map" else (1, -1)
        y = (flat - mean.reshape(shape)) * torch.rsqrt(var.reshape(shape) + self.eps)
        if weight is not None:
            y = y * weight.reshape(shape) + bias.reshape(shape)
        return y

    def _gather(self, flat: torch.Tensor, reduced: int) -> None:
        dims = [0, 2, 3] if self.per == "feature_map" else [0]
        var, mean = torch.var_mean(flat.detach(), dim=dims, correction=0)
        if self._population["unbiased"]:
            var = var * reduced / (reduced - 1)
        self._population["mean"] += mean
        self._population["var"] += var
        self._population["batches"] += 1

    def extra_repr(self) -> str:
        return (f"{self.num_features}, per={self.per!r}" + (f", spatial={self.spatial}" if self.spatial else "")
                + f", eps={self.eps}, momentum={self.momentum}")


@torch.no_grad()
def recompute_batchnorm_stats(
    model: nn.Module, batches: Iterable[torch.Tensor | tuple | list], unbiased: bool = False,
) -> int:
    """Set every BatchNorm2d's population mean/variance to the average of its per-batch moments (the article).

    Each batch is passed through `model` in eval mode while the BN layers normalise with their batch moments
    (as in training) and record them; `unbiased=True` applies the BN paper's m/(m-1) correction per batch.
    Batches are tensors or (inputs, ...) tuples already on the model's device. Returns the number of batches.
    """
    layers = [m for m in model.modules() if isinstance(m, BatchNorm2d) and not m.frozen]
    was_training = model.training
    model.eval()
    for layer in layers:
        layer._population = {"mean": 0.0, "var": 0.0, "batches": 0, "unbiased": unbiased}
    count = 0
    try:
        for batch in batches:
            model(batch[0] if isinstance(batch, (tuple, list)) else batch)
            count += 1
    finally:
        gathered = [layer._population for layer in layers]
        for layer in layers:
            layer._population = None
        model.train(was_training)
    if count == 0:
        raise CnnkitError("recompute_batchnorm_stats received no batches")
    for layer, stats in zip(layers, gathered, strict=True):
        layer.running_mean.copy_((stats["mean"] / stats["batches"]).reshape(layer.running_mean.shape))
        layer.running_var.copy_((stats["var"] / stats["batches"]).reshape(layer.running_var.shape))
        layer.num_batches_tracked.fill_(stats["batches"])
    return count


def running_stats_settled(model: nn.Module, updates: int, tolerance: float = 0.01) -> bool:
    """Whether every BatchNorm2d's running averages, after `updates` training steps at its momentum, keep less than
    `tolerance` of their starting values (mean 0, variance 1); a cumulative average (momentum None) counts as settled.

    With PyTorch's default momentum 0.1 that takes 44 steps: a 2-epoch run on a small folder has far fewer, and its
    running statistics are then mostly the starting values, not the network's.
    """
    return all((1.0 - m.momentum) ** updates <= tolerance for m in model.modules()
               if isinstance(m, BatchNorm2d) and m.momentum is not None and not m.frozen)


@contextmanager
def batch_statistics(model: nn.Module) -> Iterator[None]:
    """Inside, BatchNorm2d layers in eval mode normalise with each batch's own moments and leave their running
    statistics alone: how the article evaluates (its whole data set as one batch)."""
    layers = [m for m in model.modules() if isinstance(m, BatchNorm2d)]
    for layer in layers:
        layer.use_batch_stats = True
    try:
        yield
    finally:
        for layer in layers:
            layer.use_batch_stats = False
