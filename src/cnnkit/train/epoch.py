"""One epoch of training and its end, shared by single runs and both --seeds paths (side by side, and vmap).

`TrainState` is what a run carries from epoch to epoch, passed explicitly; `begin_epoch` seeds the epoch's random
streams from (seed, epoch) alone; `train_one_epoch` runs the steps; `end_epoch` is the one order in which an epoch
is evaluated, reported and kept.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field

import torch
from torch import nn

from cnnkit.data.augment import random_flip, random_shift
from cnnkit.data.batches import epoch_order
from cnnkit.models import main_logits
from cnnkit.train.compiled import CompiledStep
from cnnkit.train.config import Named, SettingError, TrainConfig
from cnnkit.train.data import PreparedData
from cnnkit.train.distributed import World, broadcast_buffers
from cnnkit.train.evaluation import (
    autocast,
    best_checkpoint_record,
    better_than,
    settle_bn_statistics,
    validation_metrics,
)
from cnnkit.train.log import EpochLog
from cnnkit.train.optimizers import Optimizer
from cnnkit.train.run_dir import RunDirectory, optimizer_tensors


@dataclass
class TrainState:
    """What a run carries from epoch to epoch: model, optimiser, step, epoch, best so far, history, random streams."""

    model: nn.Module  # the model evaluated and saved
    optimizer: Optimizer
    step: int = 0  # optimiser steps taken
    epoch: int = 0  # the epoch being trained, or the last one trained
    best: dict | None = None  # the best validation epoch so far: epoch, val_accuracy, val_loss
    best_state: dict | None = None  # its weights (and the BN statistics it was validated with)
    history: list[dict] = field(default_factory=list)  # one record per epoch trained
    compiled: CompiledStep | None = None  # the compiled training step, when the run compiles
    scaler: torch.amp.GradScaler | None = None  # fp16's loss scaler (None: no scaling)
    ddp: nn.Module | None = None  # the DistributedDataParallel wrapper the steps call, under torchrun
    dropout: torch.Generator | None = None  # what the model's dropout draws from; None: the global generators
    augment: torch.Generator = field(default_factory=torch.Generator)  # shifts and flips
    seed_slice: int | None = None  # batched seeds: this seed's index in the stacked optimiser's state

    @property
    def stepped(self) -> nn.Module:
        """The module the training steps call: the DDP wrapper, or the model itself."""
        return self.ddp if self.ddp is not None else self.model

    def optimizer_state(self) -> tuple[dict[str, torch.Tensor], list | None]:
        """What a 'last' checkpoint keeps to resume the optimiser (tensors, param groups)."""
        if self.compiled is not None:
            return self.compiled.state_tensors(), None
        return optimizer_tensors(self.optimizer, seed=self.seed_slice)


@dataclass(frozen=True)
class StepPlan:
    """What every training step reads and none changes: the config, the objective, each step's lr, the device."""

    config: TrainConfig
    loss_fn: Callable
    lr_of_step: Callable[[int], float]
    device: torch.device


@dataclass
class Trainee:
    """One model's run: its config, data, run directory, state and place (one in a run, one per seed in --seeds)."""

    config: TrainConfig
    data: PreparedData
    run: RunDirectory
    state: TrainState
    world: World = field(default_factory=World)


def use_channels_last(config: TrainConfig, input_size: tuple[int, int], device: torch.device) -> bool:
    """'auto' picks NHWC on the CPU, and on a GPU for inputs of 32x32 and up."""
    # On one CPU thread (cnnkit's choice for small steps) NHWC measured 1.3x faster for the digits CNN at 8x8
    # (max-pool 9x, convolution backward 1.6x) and no slower for digitsnet or LeNet-5 at 28x28.
    if config.channels_last != "auto":
        return config.channels_last == "on"
    return device.type == "cpu" or min(input_size) >= 32


def dropout_seed(seed: int, epoch: int) -> int:
    """The seed of an epoch's dropout masks (the global generator's, in a single run)."""
    return seed * 1_000_003 + epoch


def augment_seed(seed: int, epoch: int) -> int:
    """The seed of an epoch's shifts and flips."""
    return seed * 7_919 + epoch


def begin_epoch(state: TrainState, config: TrainConfig, epoch: int, n: int, device: torch.device) -> torch.Tensor:
    """Start `epoch`: seed its dropout and augmentation streams, and return its order of the `n` training images."""
    # From (seed, epoch) alone: a resumed epoch, or a seed's among several, draws what the single run draws.
    state.epoch = epoch
    if state.dropout is None:
        torch.manual_seed(dropout_seed(config.seed, epoch))  # every device's global generator
    else:
        state.dropout.manual_seed(dropout_seed(config.seed, epoch))
    state.augment.manual_seed(augment_seed(config.seed, epoch))
    return epoch_order(n, config.shuffle, config.seed, epoch).to(device)


def augment(x: torch.Tensor, config: TrainConfig, generator: torch.Generator, channels_last: bool = False
            ) -> torch.Tensor:
    """A training batch as the step sees it: shifted, then (`channels_last`) laid out NHWC, then flipped."""
    if config.shift:
        x = random_shift(x, config.shift, generator)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    if config.flip:
        x = random_flip(x, generator)
    return x


def train_one_epoch(state: TrainState, batches: Iterable[tuple[torch.Tensor, torch.Tensor]], plan: StepPlan,
                    in_memory: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None) -> dict:
    """One pass over `batches`, advancing state.step; summed loss/correct/count tensors (no per-step syncs).

    `in_memory` = (images, labels, order) behind `batches`, when they are tensors in memory: the compiled step
    then trains the whole epoch in one call where it can (`CompiledStep.runs_epochs`).
    """
    config, compiled, device = plan.config, state.compiled, plan.device
    scaler = state.scaler or torch.amp.GradScaler(device.type, enabled=False)
    state.stepped.train()
    if compiled is not None and in_memory is not None and compiled.runs_epochs(config, in_memory[0]):
        state.step, sums = compiled.run_epoch(*in_memory, config.batch_size, config.drop_last, plan.lr_of_step,
                                              state.step)
        return sums
    loss_sum = torch.zeros((), device=device)
    correct = torch.zeros((), device=device, dtype=torch.long)
    first_bad = torch.full((), -1, device=device, dtype=torch.long)
    count = 0
    for batch_index, (x, y) in enumerate(batches):
        x = augment(x, config, state.augment, use_channels_last(config, tuple(x.shape[-2:]), device))
        lr = plan.lr_of_step(state.step)
        detached, logits = compiled(x, y, lr) if compiled is not None else _eager_step(state, x, y, plan, lr, scaler)
        first_bad = torch.where((first_bad < 0) & ~torch.isfinite(detached), batch_index, first_bad)
        loss_sum += detached * len(y)
        correct += (logits.argmax(1) == y).sum()
        count += len(y)
        state.step += 1
    return {"loss_sum": loss_sum, "correct": correct, "count": count, "first_bad": first_bad}


def _eager_step(state: TrainState, x: torch.Tensor, y: torch.Tensor, plan: StepPlan, lr: float,
                scaler: torch.amp.GradScaler) -> tuple[torch.Tensor, torch.Tensor]:
    """Forward, backward and optimiser step; the scaler only scales when fp16 enabled it (nanoGPT's way)."""
    module, optimizer, config = state.stepped, state.optimizer, plan.config
    for group in optimizer.param_groups:
        group["lr"] = lr
    with autocast(config, plan.device):
        output = module(x)
        loss = plan.loss_fn(output, y)
    optimizer.zero_grad(set_to_none=True)
    scaler.scale(loss).backward()
    scaler.unscale_(optimizer)
    if config.grad_clip:
        torch.nn.utils.clip_grad_norm_(module.parameters(), config.grad_clip)
    scaler.step(optimizer)
    scaler.update()
    return loss.detach(), main_logits(output).detach()


def epoch_record(sums: dict, epoch: int, step: int, lr: float) -> dict:
    """An epoch's record before evaluation: its step, learning rate, training loss and accuracy."""
    return {"epoch": epoch, "step": step, "lr": lr, "train_loss": float(sums["loss_sum"]) / sums["count"],
            "train_accuracy": int(sums["correct"]) / sums["count"]}


def evaluates(config: TrainConfig, epoch: int) -> bool:
    """Whether `epoch` is validated and checkpointed: every eval_every-th, and the last."""
    return epoch % config.eval_every == 0 or epoch == config.epochs


def _in_turn(function: Callable, items: Iterable) -> list:
    return [function(item) for item in items]


def end_epoch(trainees: list[Trainee], records: list[dict], started: float, log: EpochLog,
              report: Callable[[list[dict]], None], each: Callable[[Callable, Iterable], list] = _in_turn) -> None:
    """The one end of an epoch, for every trainee (`each` runs a step over them): evaluate, report, then keep.

    Keeping writes metrics.jsonl, then `best` (if it improved), then `last`. A crash between any two leaves a run
    that resumes consistently: the resume goes back to the previous `last`, trims metrics.jsonl to it and redoes
    the epoch, so no checkpoint ever lacks its record; and `best` comes before `last` because `last` names the
    best epoch, and a `last` naming an epoch whose weights never reached best.safetensors would resume without
    them and test the wrong weights.
    """
    each(lambda pair: _evaluate(*pair, started, log), zip(trainees, records, strict=True))
    report([trainee.state.history[-1] for trainee in trainees])
    refuse_diverged_epoch(trainees)
    each(_keep, trainees)


def refuse_diverged_epoch(trainees: list[Trainee]) -> None:
    """Stop the run before it keeps an evaluated epoch whose validation loss, weights, batch-norm statistics or
    optimiser state are not finite (for any trainee: seeds stop together): the training loss alone can stay finite
    while the statistics overflow, and a `last` holding them could not be resumed."""
    bad = [(trainee, problem) for trainee in trainees if evaluates(trainee.config, trainee.state.epoch)
           and (problem := non_finite(trainee.state)) is not None]
    if not bad:
        return
    first = trainees[0]
    if len(trainees) == 1:
        what, kept = bad[0][1], first.run.last_good()
    else:
        what = "; ".join(f"seed {trainee.config.seed}: {problem}" for trainee, problem in bad)
        kept = first.run.last_good(str(first.run.path.parent) if first.run.path is not None else "")
    raise SettingError(f"epoch {first.state.epoch} diverged ({what}); training stopped before keeping it{kept}. "
                       "Try a lower ", Named("lr"), " or ", Named("grad_clip"))


def non_finite(state: TrainState) -> str | None:
    """What of an evaluated epoch is not finite (its validation loss, a model tensor, the optimiser state), said
    for a message; None when all is (one sync per device for the tensors)."""
    loss = state.history[-1].get("val_loss") if state.history else None
    if loss is not None and not math.isfinite(loss):
        return f"validation loss {loss}"
    on_device: dict[torch.device, list[tuple[str, torch.Tensor]]] = {}  # Adam's step counts stay on the CPU
    for name, tensor in _state_tensors(state):
        if tensor.is_floating_point():
            on_device.setdefault(tensor.device, []).append((name, torch.isfinite(tensor).all()))
    for checks in on_device.values():
        finite = torch.stack([check for _, check in checks]).cpu()
        if not bool(finite.all()):
            return f"{checks[int((~finite).nonzero()[0])][0]} holds NaN or infinite values"
    return None


def _state_tensors(state: TrainState) -> Iterator[tuple[str, torch.Tensor]]:
    """The tensors a 'last' checkpoint keeps, named as there, read in place (this seed's slice of stacked ones)."""
    for name, tensor in state.model.state_dict().items():
        yield f"model.{name}", tensor
    if state.compiled is not None:
        yield from state.compiled.state_tensors().items()
        return
    for index, slots in enumerate(state.optimizer.state.values()):
        for slot, value in slots.items():
            if isinstance(value, torch.Tensor):
                own = value[state.seed_slice] if state.seed_slice is not None and value.dim() else value
                yield f"optim.{index}.{slot}", own


def _evaluate(trainee: Trainee, record: dict, started: float, log: EpochLog) -> None:
    """Validate an evaluated epoch (sound BN statistics first) and keep the best; the record joins the history."""
    state, config, model = trainee.state, trainee.config, trainee.state.model
    if evaluates(config, state.epoch):
        broadcast_buffers(model, trainee.world)
        record["bn_statistics"] = settle_bn_statistics(model, trainee.data, config, state.step, trainee.world.device,
                                                       log)
        record.update(validation_metrics(model, trainee.data, config))
        if record.get("val_accuracy") is not None and better_than(record, state.best):
            state.best = {"epoch": state.epoch, "val_accuracy": record["val_accuracy"], "val_loss": record["val_loss"]}
            state.best_state = copy.deepcopy(model.state_dict())
    record["seconds"] = round(time.perf_counter() - started, 4)
    state.history.append(record)


def _keep(trainee: Trainee) -> None:
    """An evaluated epoch's record in metrics.jsonl, then its checkpoints: best (if it improved), then last."""
    state, run = trainee.state, trainee.run
    if not evaluates(trainee.config, state.epoch):
        return
    run.append_metrics(state.history[-1])
    if state.best is not None and state.best["epoch"] == state.epoch:
        run.save("best", state)
    run.save("last", state)


def tested_epoch(state: TrainState) -> int:
    """The epoch whose weights the final test measures: the best validation epoch's when its weights are at hand,
    else the last epoch's (nothing validated, or a resumed run whose best.safetensors was not its own)."""
    return state.best["epoch"] if state.best is not None and state.best_state is not None else state.epoch


def keep_final(trainee: Trainee, final: dict) -> None:
    """The test's results: in `best` (the tested epoch's weights and record), then as metrics.jsonl's last line."""
    state = trainee.state
    record, _, _ = best_checkpoint_record(state.history, {"epoch": final["epoch"]}, final, state.epoch, state.step)
    trainee.run.save("best", state, record)
    trainee.run.append_metrics({"final": final})
