"""Multi-process training under torchrun: process-group setup and rank helpers (gloo on CPU, nccl on GPU)."""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass
class World:
    """Where this process stands: rank, number of processes, and its device."""

    rank: int = 0
    size: int = 1
    device: torch.device = torch.device("cpu")

    @property
    def is_main(self) -> bool:
        """Only rank 0 logs and writes checkpoints."""
        return self.rank == 0


def setup_world(device: str) -> World:
    """Join the process group torchrun describes in the environment, or return a single-process world."""
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    size = int(os.environ.get("WORLD_SIZE", "1"))
    if size <= 1:
        return World(device=torch.device(device))
    rank, local_rank = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    if device == "cuda":
        torch.cuda.set_device(local_rank)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device == "cuda" else "gloo")
    return World(rank, size, torch.device(device, local_rank) if device == "cuda" else torch.device("cpu"))


def all_sum(tensor: torch.Tensor, world: World) -> torch.Tensor:
    """Sum a tensor over all processes (a no-op for one)."""
    if world.size > 1:
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


def broadcast_buffers(model: torch.nn.Module, world: World) -> None:
    """Give every process rank 0's buffers (a no-op for one)."""
    # Each process updated BN running statistics with its own batches; evaluate with rank 0's everywhere.
    if world.size > 1:
        for buffer in model.buffers():
            dist.broadcast(buffer, src=0)


def teardown(world: World) -> None:
    """Leave the process group."""
    if world.size > 1 and dist.is_initialized():
        dist.destroy_process_group()
