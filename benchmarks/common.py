"""Shared helpers: timing, the plain-PyTorch digits network, JSON output."""

from __future__ import annotations

import json
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn


def median_us(fn: Callable[[], object], repeats: int) -> float:
    """Median wall time of `fn` in microseconds."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1e6)
    return statistics.median(times)


def latency_ms(fn: Callable[[], object], repeats: int, warmup: int = 3) -> list[float]:
    """Wall times of `fn` in milliseconds, after `warmup` untimed calls."""
    for _ in range(warmup):
        fn()
    values = []
    for _ in range(repeats):
        started = time.perf_counter()
        fn()
        values.append((time.perf_counter() - started) * 1e3)
    return values


def percentile(values: list[float], q: float) -> float:
    """q-th percentile (0..100) by nearest rank."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q / 100 * (len(ordered) - 1))))]


class PlainDigitsNet(nn.Module):
    """The article's digits network written directly in PyTorch, as a user would without cnnkit."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 10, 3, padding=1)
        self.conv2 = nn.Conv2d(10, 5, 3, stride=2)
        self.bn = nn.BatchNorm2d(5, eps=1e-3)
        self.fc1 = nn.Linear(20, 50)
        self.out = nn.Linear(50, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.conv1(x))
        x = self.bn(self.conv2(F.pad(x, (0, 1, 0, 1))))  # TF SAME, stride 2 on 8x8: pad bottom/right
        x = F.max_pool2d(F.pad(F.relu(x), (0, 1, 0, 1), value=float("-inf")), 3, 2)
        return self.out(F.relu(self.fc1(x.permute(0, 2, 3, 1).reshape(x.shape[0], -1))))


def emit(name: str, result: dict, out: Path | None) -> None:
    """Print one benchmark's JSON (and write it under `out`)."""
    text = json.dumps({"benchmark": name, **result})
    print(text, flush=True)
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        (out / f"{name}.json").write_text(text + "\n")


def machine() -> dict:
    """Where the numbers came from."""
    import os
    import platform

    return {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(),
            "threads": torch.get_num_threads(), "torch": torch.__version__,
            "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None}
