"""How many intra-op threads a training process uses, chosen from the work and the machine.

Two cores are easy to oversubscribe: with two intra-op threads, any other busy process (a browser, the test
suite, a second training) makes the threads wait on each other, and a digits epoch measured 5x slower beside one
busy process and 20-45x slower beside other PyTorch work, against under 2.5x with one thread. A step too small
to split profitably (a digits-size network: about 0.1 G multiply-adds per batch) therefore runs on one thread,
bigger steps on this process's share of the cores (cores / processes on this machine under torchrun). The user's
`--threads` or an explicit OMP_NUM_THREADS always wins. The choice is fixed for a run, so results stay
reproducible (floating-point sums differ with the thread count).
"""

from __future__ import annotations

import os

import torch
from torch import nn

from cnnkit.models.stats import count_macs

SMALL_STEP_MACS = 1_000_000_000  # forward multiply-adds per batch below which one thread is fastest under load


def available_cores() -> int:
    """CPU cores this process may run on (its affinity mask, not the machine's total)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def processes_on_this_machine() -> int:
    """Training processes torchrun started on this machine (1 outside torchrun)."""
    text = os.environ.get("LOCAL_WORLD_SIZE", "1")
    return int(text) if text.isdigit() and int(text) > 0 else 1


def choose_threads(requested: int | None, model: nn.Module, batch_size: int, device: torch.device,
                   small_step_macs: int = SMALL_STEP_MACS) -> tuple[int, str]:
    """(threads, why) for a training run: `requested` if given, else OMP_NUM_THREADS if set, else from the work
    (one thread for steps under `small_step_macs` forward multiply-adds); `why` says how to override a choice of
    fewer threads than cores."""
    threads, why = _choose(requested, model, batch_size, device, small_step_macs)
    cores = available_cores()
    if not requested and why != "OMP_NUM_THREADS" and threads < cores:  # the user's own choices need no hint
        why += f"; {cores} cores here: --threads {cores} overrides"
    return threads, why


def _choose(requested: int | None, model: nn.Module, batch_size: int, device: torch.device,
            small_step_macs: int) -> tuple[int, str]:
    if requested:
        cores = available_cores()
        return requested, "--threads" if requested <= cores else \
            f"--threads; more than the {cores} cores this process may use, so threads will wait on each other"
    if os.environ.get("OMP_NUM_THREADS", "").isdigit():
        return torch.get_num_threads(), "OMP_NUM_THREADS"
    share = max(1, available_cores() // processes_on_this_machine())
    if device.type != "cpu":
        return share, "this process's share of the cores (the model runs on the GPU)"
    # One real image through the CPU model: a meta-device forward would cost seconds of one-off op registration.
    macs = count_macs(model, model.input_shape, device="cpu") * batch_size
    if macs < small_step_macs:
        return 1, (f"a step of {macs / 1e9:.2g} G multiply-adds is too small to share between threads without "
                   "slowing down beside other work")
    return share, f"{share} of {available_cores()} cores for steps of {macs / 1e9:.2g} G multiply-adds"
