"""Learning-rate schedules as pure functions of the step, so a resumed run needs only the step count."""

from __future__ import annotations

import math

from cnnkit.train.config import TrainConfig


def lr_at(step: int, total_steps: int, steps_per_epoch: int, config: TrainConfig) -> float:
    """Learning rate for optimiser step `step` (0-based) of `total_steps`."""
    base = config.lr
    warmup = int(config.warmup_epochs * steps_per_epoch)
    if config.schedule == "onecycle":
        warmup = warmup or max(1, int(0.25 * total_steps))  # one-cycle: rise for a quarter, then anneal
    if step < warmup:
        return base * (step + 1) / warmup
    progress = (step - warmup) / max(1, total_steps - warmup)
    if config.schedule == "constant":
        return base
    if config.schedule == "step":
        return base * config.gamma ** (step // (config.step_size * steps_per_epoch))
    if config.schedule == "cosine":
        return base * 0.5 * (1.0 + math.cos(math.pi * progress))
    return base * (0.5 * (1.0 + math.cos(math.pi * progress)) * (1 - 1e-3) + 1e-3)  # onecycle tail to lr/1000
