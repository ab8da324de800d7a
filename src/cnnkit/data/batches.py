"""Mini-batches from tensors held in memory: no per-sample Python work, deterministic per epoch."""

from __future__ import annotations

from collections.abc import Iterator

import torch


def epoch_order(n: int, shuffle: bool, seed: int, epoch: int) -> torch.Tensor:
    """The sample order of one epoch: file order, or a permutation fixed by (seed, epoch) so resumes match."""
    if not shuffle:
        return torch.arange(n)
    generator = torch.Generator().manual_seed(seed * 100_003 + epoch)
    return torch.randperm(n, generator=generator)


def tensor_batches(
    images: torch.Tensor, labels: torch.Tensor, batch_size: int, order: torch.Tensor, drop_last: bool = False,
    rank: int = 0, world_size: int = 1,
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Yield (images, labels) batches in `order`; with several processes each takes every world_size-th sample."""
    order = process_share(order, rank, world_size)
    stop = len(order) - len(order) % batch_size if drop_last else len(order)
    for start in range(0, stop, batch_size):
        index = order[start:start + batch_size]
        yield images[index], labels[index]


def process_share(order: torch.Tensor, rank: int, world_size: int) -> torch.Tensor:
    """This process's samples of an epoch's order: every world_size-th, from equal shares that keep the processes
    in step (the last len % world_size samples are left out)."""
    if world_size == 1:
        return order
    return order[: len(order) - len(order) % world_size][rank::world_size]


def num_batches(n: int, batch_size: int, drop_last: bool, world_size: int = 1) -> int:
    """How many batches `tensor_batches` yields per epoch."""
    per_rank = (n - n % world_size) // world_size if world_size > 1 else n
    return per_rank // batch_size if drop_last else -(-per_rank // batch_size)
