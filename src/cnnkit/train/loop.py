"""The trainer: train_one_epoch, evaluate and fit, with checkpoints, resume and multi-process training."""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO

import torch
from torch import nn

from cnnkit.core.errors import CnnkitError
from cnnkit.data.augment import random_flip, random_shift
from cnnkit.data.batches import epoch_order, num_batches
from cnnkit.layers.batchnorm import BatchNorm2d
from cnnkit.models import main_logits
from cnnkit.store.checkpoint import build_model, model_spec
from cnnkit.train.compiled import CompiledStep, should_compile
from cnnkit.train.config import TrainConfig
from cnnkit.train.data import PreparedData, prepare_data, training_batches
from cnnkit.train.distributed import World, all_sum, setup_world, teardown
from cnnkit.train.evaluation import (
    autocast,
    best_checkpoint_record,
    better_than,
    final_test,
    settle_bn_statistics,
    validation_metrics,
)
from cnnkit.train.log import EpochLog
from cnnkit.train.losses import describe_objective, make_loss
from cnnkit.train.optimizers import Optimizer
from cnnkit.train.run_dir import Restored, RunDirectory, optimizer_tensors, restore_optimizer
from cnnkit.train.schedule import lr_at
from cnnkit.train.threads import choose_threads
from cnnkit.train.transfer import adapt, freeze_features, read_start


@dataclass
class RunResult:
    """What a finished run reports."""

    run_dir: Path | None
    test_accuracy: float | None
    test_loss: float | None
    best_val_accuracy: float | None
    epochs_run: int
    seconds: float
    history: list[dict] = field(default_factory=list)
    model: nn.Module | None = None
    is_main: bool = True  # under torchrun, only the main process reports
    compiled: bool = False  # whether the compiled training step ran (not the eager fallback)

    def summary(self) -> dict:
        """JSON-ready summary (no model)."""
        return {"run_dir": str(self.run_dir) if self.run_dir else None, "test_accuracy": self.test_accuracy,
                "test_loss": self.test_loss, "best_val_accuracy": self.best_val_accuracy,
                "epochs_run": self.epochs_run, "seconds": round(self.seconds, 3)}


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


def make_optimizer(config: TrainConfig, model: nn.Module, stacked: int = 0) -> Optimizer:
    """Adam / AdamW / SGD; no weight decay on biases and normalisation parameters (1-D tensors). `stacked` leading
    axes (several seeds' parameters stacked into one tensor) do not count as dimensions of a weight."""
    decay = [p for p in model.parameters() if p.requires_grad and p.dim() - stacked > 1]
    no_decay = [p for p in model.parameters() if p.requires_grad and p.dim() - stacked <= 1]
    groups = [{"params": decay, "weight_decay": config.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    if config.optimizer == "sgd":
        return Optimizer("sgd", groups, config.lr, config.momentum, config.nesterov)
    return Optimizer(config.optimizer, groups, config.lr)  # Adam's weight decay is L2 in the gradient, as in TF 1


def train_one_epoch(
    model: nn.Module, batches: Iterable[tuple[torch.Tensor, torch.Tensor]], optimizer: Optimizer,
    loss_fn: Callable, lr_of_step: Callable[[int], float], step: int, config: TrainConfig, device: torch.device,
    generator: torch.Generator, scaler: torch.amp.GradScaler | None = None, compiled: CompiledStep | None = None,
    in_memory: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None,
) -> tuple[int, dict]:
    """One pass over `batches`; returns the next step and summed loss/correct/count tensors (no per-step syncs).

    `in_memory` = (images, labels, order) behind `batches`, when they are tensors in memory: the compiled step
    then trains the whole epoch in one call where it can (`CompiledStep.runs_epochs`).
    """
    scaler = scaler or torch.amp.GradScaler(device.type, enabled=False)
    model.train()
    if compiled is not None and in_memory is not None and compiled.runs_epochs(config, in_memory[0]):
        return compiled.run_epoch(*in_memory, config.batch_size, config.drop_last, lr_of_step, step)
    loss_sum = torch.zeros((), device=device)
    correct = torch.zeros((), device=device, dtype=torch.long)
    first_bad = torch.full((), -1, device=device, dtype=torch.long)
    count = 0
    for batch_index, (x, y) in enumerate(batches):
        if config.shift:
            x = random_shift(x, config.shift, generator)
        if use_channels_last(config, tuple(x.shape[-2:]), device):
            x = x.contiguous(memory_format=torch.channels_last)
        if config.flip:
            x = random_flip(x, generator)
        if compiled is not None:
            detached, logits = compiled(x, y, lr_of_step(step))
        else:
            detached, logits = _eager_step(model, x, y, optimizer, loss_fn, lr_of_step(step), config, device, scaler)
        first_bad = torch.where((first_bad < 0) & ~torch.isfinite(detached), batch_index, first_bad)
        loss_sum += detached * len(y)
        correct += (logits.argmax(1) == y).sum()
        count += len(y)
        step += 1
    return step, {"loss_sum": loss_sum, "correct": correct, "count": count, "first_bad": first_bad}


def _eager_step(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, optimizer: Optimizer, loss_fn: Callable,
    lr: float, config: TrainConfig, device: torch.device, scaler: torch.amp.GradScaler | None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Forward, backward and optimiser step; the scaler only scales when fp16 enabled it (nanoGPT's way)."""
    for group in optimizer.param_groups:
        group["lr"] = lr
    with autocast(config, device):
        output = model(x)
        loss = loss_fn(output, y)
    optimizer.zero_grad(set_to_none=True)
    scaler.scale(loss).backward()
    scaler.unscale_(optimizer)
    if config.grad_clip:
        torch.nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
    scaler.step(optimizer)
    scaler.update()
    return loss.detach(), main_logits(output).detach()


def fit(
    config: TrainConfig, out: str | Path | None = None, overwrite: bool = False, resume: bool = False,
    progress: bool | None = None, stop_after_epochs: int | None = None, stream: TextIO | None = None,
    epoch_callback: Callable[[int, nn.Module], None] | None = None,
) -> RunResult:
    """Train per `config`; with `out`, keep config, metrics and checkpoints there (rank 0 only).

    `resume=True` continues the run in `out` from its last checkpoint. `stop_after_epochs` ends this call early,
    as an interruption would (for tests of resume). `epoch_callback(epoch, model)` runs after each epoch
    (benchmarks use it to watch held-out accuracy). Every log line goes to `stream` (default stdout).
    """
    config.validate()
    started = time.perf_counter()
    world = setup_world(config.device)
    log = EpochLog(config, world.is_main, progress, stream)
    run = RunDirectory(Path(out) if out else None, world.is_main, log.note)
    threads = torch.get_num_threads()  # the run picks its own; the caller's setting comes back afterwards
    try:
        return _fit(config, run, world, log, overwrite, resume, stop_after_epochs, epoch_callback, started)
    finally:
        log.close()
        run.close()
        teardown(world)
        torch.set_num_threads(threads)


def _fit(
    config: TrainConfig, run: RunDirectory, world: World, log: EpochLog, overwrite: bool, resume: bool,
    stop_after_epochs: int | None, epoch_callback: Callable[[int, nn.Module], None] | None, started: float,
) -> RunResult:
    device = world.device
    if config.precision == "fp16" and device.type != "cuda":
        raise CnnkitError("precision fp16 (AMP with loss scaling) needs a CUDA device; use bf16 on CPU")
    if resume:
        run.check_resumable(config)  # fail fast: a refused resume prints nothing else and touches nothing
    else:
        run.check_free(overwrite)  # fail fast; nothing is created until the data and the model are known good
    log.note(f"training {config.model} on {config.data}")
    config, data, spec, model = _data_and_model(config, device, log)
    h, w = spec["input_size"]
    optimizer = make_optimizer(config, model)
    run.open(overwrite, resume)
    if run.path:  # said once the folder exists: a run refused earlier never names one
        log.note(f"run directory {run.path}")
    restored = run.restore(model, config.eval_every) if resume else Restored()
    run.describe(config, spec, data.dataset.class_names, data.description(config.seed))
    recorded_epochs = TrainConfig.from_run_dir(run.path).epochs if resume and run.path else config.epochs
    per_epoch = num_batches(len(data.train[1]), config.batch_size, config.drop_last, world.size)
    if per_epoch == 0:
        raise CnnkitError(f"the training split ({len(data.train[1])} images) is smaller than one batch of "
                          f"{config.batch_size}")
    total_steps = per_epoch * config.epochs
    if recorded_epochs != config.epochs:
        log.note(_extension_note(config, recorded_epochs, restored, lr_at(restored.step, total_steps, per_epoch,
                                                                          config)))
    loss_fn = make_loss(config.loss, config.label_smoothing)
    log.note(f"training objective: {describe_objective(config.loss, config.label_smoothing)}; validation and test "
             "losses are plain cross-entropy")
    compiled = CompiledStep(model, config, loss_fn, (h, w)) \
        if should_compile(_step_kind(config, restored), total_steps, world.size, log.note) else None
    _restore_optimizer_state(restored, optimizer, compiled, run.path)
    if not resume or recorded_epochs != config.epochs:  # after every refusal: a refused resume changes nothing
        run.write_config(config)
    scaler = torch.amp.GradScaler(device.type, enabled=config.precision == "fp16")
    train_model = _distributed(model, config, world)
    log.start(restored.start_epoch, run.path / "tensorboard" if config.tensorboard and run.path else None)
    step, best, best_state, history = restored.step, restored.best, restored.best_state, restored.history
    epoch, interrupted = restored.start_epoch - 1, False
    for epoch in range(restored.start_epoch, config.epochs + 1):
        epoch_started = time.perf_counter()
        torch.manual_seed(dropout_seed(config.seed, epoch))  # dropout masks depend on (seed, epoch) only
        generator = torch.Generator().manual_seed(augment_seed(config.seed, epoch))
        order = epoch_order(len(data.train[1]), config.shuffle, config.seed, epoch).to(device)
        batches = training_batches(data, config, order, device, world.rank, world.size)
        step, sums = train_one_epoch(train_model, batches, optimizer, loss_fn,
                                     lambda s: lr_at(s, total_steps, per_epoch, config), step, config, device,
                                     generator, scaler, compiled,
                                     (*data.train, order) if data.stream is None and world.size == 1 else None)
        record = _epoch_record(sums, world, epoch, step, lr_at(step - 1, total_steps, per_epoch, config), run.path)
        evaluate_now = epoch % config.eval_every == 0 or epoch == config.epochs
        if evaluate_now:
            _sync_buffers(model, world)
            record["bn_statistics"] = settle_bn_statistics(model, data, config, step, device, log)
            record.update(validation_metrics(model, data, config))
            improved = record.get("val_accuracy") is not None and better_than(record, best)
            if improved:
                best = {"epoch": epoch, "val_accuracy": record["val_accuracy"], "val_loss": record["val_loss"]}
                best_state = copy.deepcopy(model.state_dict())
        record["seconds"] = round(time.perf_counter() - epoch_started, 4)
        history.append(record)
        if epoch_callback is not None:
            epoch_callback(epoch, model)
        log.epoch(record)
        if evaluate_now:  # metrics first, checkpoints after: an interrupted epoch is redone, never half-recorded
            run.append_metrics(record)
            if improved:
                run.save("best", model, record, epoch, step, best, data.preprocessing)
            run.save("last", model, record, epoch, step, best, data.preprocessing,
                     optimizer_state(optimizer, compiled))
        if config.patience and best is not None and epoch - best["epoch"] >= config.patience:
            log.note(f"early stopping: no better validation accuracy for {config.patience} epochs")
            break
        if stop_after_epochs is not None and epoch - restored.start_epoch + 1 >= stop_after_epochs \
                and epoch < config.epochs:
            interrupted = True
            break
    log.close()
    final = None if interrupted else final_test(model, best_state, data, config, device, epoch)
    if final is not None:
        run.save("best", model, *best_checkpoint_record(history, best, final, epoch, step), best, data.preprocessing)
        run.append_metrics({"final": final})
        log.final(final, best)
    return RunResult(run.path, final and final["test_accuracy"], final and final["test_loss"],
                     best and best["val_accuracy"], epoch, time.perf_counter() - started,
                     history + ([{"final": final}] if final else []), model, world.is_main, compiled is not None)


def _data_and_model(config: TrainConfig, device: torch.device, log: EpochLog
                    ) -> tuple[TrainConfig, PreparedData, dict, nn.Module]:
    """The run's data and model on `device`: a fresh model, or --init-from's (the config then fitted to it); the
    thread count chosen from the model's work."""
    torch.manual_seed(config.seed)
    start = read_start(config.init_from) if config.init_from else None
    if start is not None:
        config = _fit_to_start(config, start[2]["model"], log)
    given = (start[1], start[2]["data"]["pixel_max"]) if start is not None else None
    data = prepare_data(config, device, progress=log.enabled and log.tty, given=given)
    for line in data.notes:
        log.note(line)
    channels, h, w = data.dataset.image_shape
    if config.shift >= min(h, w):
        raise CnnkitError(f"--shift must be smaller than the images ({h}x{w}); received {config.shift}")
    options = start[2]["model"]["options"] if start is not None else config.model_options
    spec = model_spec(config.model, options, len(data.dataset.class_names), channels, (h, w))
    model = build_model(spec) if start is None else adapt(start, spec, data.dataset.class_names, config.init_from,
                                                          log.note)
    if config.freeze == "features":
        log.note(f"frozen features: {freeze_features(model):,} parameter values stay fixed; batch norm in them "
                 "uses its population statistics")
    threads, why = choose_threads(config.threads, model, config.batch_size, device)
    torch.set_num_threads(threads)
    log.note(f"threads: {threads} ({why})")
    model = model.to(device)
    if use_channels_last(config, (h, w), device):
        model = model.to(memory_format=torch.channels_last)
    return config, data, spec, model


def _step_kind(config: TrainConfig, restored: Restored) -> TrainConfig:
    """A resumed run keeps the step it was trained with: 'auto' must not switch to compiled because --epochs made
    the run long enough (the optimiser state is saved in the step's own layout)."""
    if restored.tensors is None or config.compile != "auto":
        return config
    return config.replace(compile="on" if restored.compiled else "off")


def _extension_note(config: TrainConfig, recorded_epochs: int, restored: Restored, next_lr: float) -> str:
    """What changes when a resumed run gets a new epoch count: the schedule is planned over the new length."""
    note = f"epochs {recorded_epochs} -> {config.epochs} (recorded in config.json)"
    if config.schedule not in ("cosine", "onecycle"):  # the others do not depend on the run's length
        return note
    return (f"{note}: the {config.schedule} learning-rate schedule is re-planned over {config.epochs} epochs, so "
            f"epoch {restored.start_epoch} continues at lr {next_lr:.3g}")


def _fit_to_start(config: TrainConfig, spec: dict, log: EpochLog) -> TrainConfig:
    """Check a fine-tuning config against its starting checkpoint's model; size the images to its input."""
    if config.model != spec["name"]:
        raise CnnkitError(f"--init-from {config.init_from} holds a {spec['name']}; pass --model {spec['name']} "
                          f"(received --model {config.model})")
    height, width = spec["input_size"]
    if config.image_size is None and height == width:
        log.note(f"images resized to the checkpoint's input, {height}x{width} (--image-size to state it)")
        return config.replace(image_size=height)
    return config


def _distributed(model: nn.Module, config: TrainConfig, world: World) -> nn.Module:
    """The module the training step calls: the model itself, or its DDP wrapper under torchrun."""
    if world.size == 1:
        return model
    if config.sync_bn:
        for module in model.modules():
            if isinstance(module, BatchNorm2d):
                module.sync_world = True
    device = world.device
    for module in model.modules():
        # A conv weight over one input channel per group, (O, 1, kh, kw), is both contiguous and channels-last, and
        # oneDNN returns its gradient in the channels-last strides. DDP's buckets copy the parameter's strides, so
        # give the parameter those strides too: otherwise DDP warns "grad strides do not match bucket view strides"
        # and copies the gradient every step.
        if isinstance(module, nn.Conv2d) and module.weight.shape[1] == 1:
            out, _, kh, kw = module.weight.shape  # channels-last strides, spelt out: .contiguous() sees no change
            weight = torch.empty_strided(module.weight.shape, (kh * kw, 1, kw, 1), dtype=module.weight.dtype,
                                         device=module.weight.device)
            module.weight.data = weight.copy_(module.weight.data)
    return nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if device.index else None)


def _restore_optimizer_state(restored: Restored, optimizer: Optimizer, compiled: CompiledStep | None,
                             out: Path | None) -> None:
    """Put a resumed run's optimiser state back, into the compiled step or the eager optimiser."""
    saved = restored.tensors
    if saved is None:
        return
    if (compiled is not None) != restored.compiled:
        raise CnnkitError(f"{out}: the run was saved with compile={'on' if compiled is None else 'off'}; "
                          "resume it with the same --compile setting")
    try:
        if compiled is not None:
            compiled.load_state_tensors(saved)
        else:
            restore_optimizer(optimizer, saved, restored.param_groups)
    except (ValueError, KeyError, IndexError, TypeError, AttributeError, RuntimeError) as error:
        reason = str(error).splitlines()[0][:200] if str(error) else type(error).__name__
        raise CnnkitError(f"{out / 'last' if out else 'last'}: cannot resume its optimiser state ({reason})") from None


def optimizer_state(optimizer: Optimizer, compiled: CompiledStep | None) -> tuple[dict, list | None]:
    """What a 'last' checkpoint needs to resume the optimiser."""
    if compiled is not None:
        return compiled.state_tensors(), None
    return optimizer_tensors(optimizer)


def _epoch_record(sums: dict, world: World, epoch: int, step: int, lr: float, out: Path | None) -> dict:
    """Training loss and accuracy of an epoch, summed over processes; a non-finite loss stops the run."""
    for key in ("loss_sum", "correct"):
        all_sum(sums[key], world)
    count = sums["count"] * world.size
    train_loss = float(sums["loss_sum"]) / count
    if not math.isfinite(train_loss):
        bad = int(sums["first_bad"])
        where = f"epoch {epoch}, batch {bad + 1}" if bad >= 0 else f"epoch {epoch}"
        kept = f"; the last good checkpoint is {out / 'last'} (epoch {epoch - 1})" if out and epoch > 1 else ""
        raise CnnkitError(f"the training loss became {train_loss} at {where}; training stopped{kept}. "
                          "Try a lower --lr or --grad-clip")
    return {"epoch": epoch, "step": step, "lr": lr, "train_loss": train_loss,
            "train_accuracy": int(sums["correct"]) / count}


def _sync_buffers(model: nn.Module, world: World) -> None:
    # Each process updated BN running statistics with its own batches; evaluate with rank 0's everywhere.
    if world.size > 1:
        for buffer in model.buffers():
            torch.distributed.broadcast(buffer, src=0)
