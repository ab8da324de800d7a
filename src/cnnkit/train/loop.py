"""The trainer: fit checks, prepares, trains epoch by epoch (cnnkit.train.epoch) and tests; resume and torchrun."""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import TextIO

import torch
from torch import nn

from cnnkit.core.errors import CnnkitError
from cnnkit.data.batches import num_batches
from cnnkit.layers.batchnorm import BatchNorm2d
from cnnkit.store.checkpoint import build_model, model_spec, read_metadata
from cnnkit.train.compiled import CompiledStep, should_compile
from cnnkit.train.config import Named, SettingError, TrainConfig
from cnnkit.train.data import PreparedData, prepare_data, training_batches
from cnnkit.train.distributed import World, all_sum, setup_world, teardown
from cnnkit.train.epoch import (
    StepPlan,
    Trainee,
    TrainState,
    begin_epoch,
    end_epoch,
    epoch_record,
    keep_final,
    tested_epoch,
    train_one_epoch,
    use_channels_last,
)
from cnnkit.train.evaluation import final_test
from cnnkit.train.log import EpochLog
from cnnkit.train.losses import describe_objective, make_loss
from cnnkit.train.optimizers import Optimizer
from cnnkit.train.run_dir import Restored, RunDirectory, restore_optimizer
from cnnkit.train.run_files import run_path
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


@dataclass(frozen=True)
class _Call:
    """What one call of `fit` asks for beyond the config."""

    overwrite: bool
    resume: bool
    stop_after_epochs: int | None
    epoch_callback: Callable[[int, nn.Module], None] | None
    started: float


def make_optimizer(config: TrainConfig, model: nn.Module, stacked: int = 0) -> Optimizer:
    """Adam / AdamW / SGD; no weight decay on biases and normalisation parameters (1-D tensors). `stacked` leading
    axes (several seeds' parameters stacked into one tensor) do not count as dimensions of a weight."""
    decay = [p for p in model.parameters() if p.requires_grad and p.dim() - stacked > 1]
    no_decay = [p for p in model.parameters() if p.requires_grad and p.dim() - stacked <= 1]
    groups = [{"params": decay, "weight_decay": config.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    if config.optimizer == "sgd":
        return Optimizer("sgd", groups, config.lr, config.momentum, config.nesterov)
    return Optimizer(config.optimizer, groups, config.lr)  # Adam's weight decay is L2 in the gradient, as in TF 1


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
    call = _Call(overwrite, resume, stop_after_epochs, epoch_callback, time.perf_counter())
    world = setup_world(config.device)
    log = EpochLog(config, world.is_main, progress, stream)
    run = RunDirectory(run_path(out), world.is_main, log.note)
    threads = torch.get_num_threads()  # the run picks its own; the caller's setting comes back afterwards
    try:
        return _fit(config, run, world, log, call)
    finally:
        log.close()
        run.close()
        teardown(world)
        torch.set_num_threads(threads)


def _fit(config: TrainConfig, run: RunDirectory, world: World, log: EpochLog, call: _Call) -> RunResult:
    """Refuse what cannot run, prepare the run, train its epochs, test the best weights."""
    _refuse_early(config, run, world, call)
    log.note(f"training {config.model} on {config.data}")
    if world.size > 1:
        log.note(f"{world.size} processes, global batch {config.batch_size * world.size} ({config.batch_size} per "
                 "process)")
    recorded_white = float(read_metadata(run.path / "last")["data"]["pixel_max"]) if call.resume else None
    config, data, spec, model = _data_and_model(config, world.device, log, recorded_white)
    trainee = Trainee(config, data, run, TrainState(model, make_optimizer(config, model)), world)
    schedule = _schedule(trainee)  # refused here, a split smaller than a batch leaves even --overwrite's run alone
    restored = _open(trainee, spec, log, call)
    plan = _plan(trainee, restored, schedule, log, call)
    with _convolutions(trainee.state):
        interrupted = _train(trainee, plan, log, call)
        log.close()
        final = None if interrupted else _test(trainee, log)
    return run_result(trainee, final, call.started)


def _refuse_early(config: TrainConfig, run: RunDirectory, world: World, call: _Call) -> None:
    """Fail fast on fp16 off CUDA, a refused resume or a taken --out: a refused run prints and touches nothing."""
    if config.precision == "fp16" and world.device.type != "cuda":
        raise CnnkitError("precision fp16 (AMP with loss scaling) needs a CUDA device; use bf16 on CPU")
    if call.resume:
        run.check_resumable(config, world.size)
    else:
        run.check_free(call.overwrite)


def _open(trainee: Trainee, spec: dict, log: EpochLog, call: _Call) -> Restored:
    """Open (lock) the run folder; a resumed run's checkpoint into the model and the state; describe the run."""
    run, state = trainee.run, trainee.state
    run.open(call.overwrite, call.resume)
    if run.path:  # said once the folder exists: a run refused earlier never names one
        log.note(f"run directory {run.path}")
    restored = run.restore(state.model, trainee.config.eval_every) if call.resume else Restored()
    run.describe(trainee.config, spec, trainee.data, trainee.world.size)
    state.step, state.epoch, state.best = restored.step, restored.start_epoch - 1, restored.best
    state.best_state, state.history = restored.best_state, restored.history
    return restored


def _plan(trainee: Trainee, restored: Restored, schedule: tuple[Callable[[int], float], int], log: EpochLog,
          call: _Call) -> StepPlan:
    """The run's objective and step (compiled or eager, DDP) on its `schedule`, a resumed optimiser state,
    config.json (a resumed run's is rewritten only once it keeps an epoch)."""
    config, run, world, state = trainee.config, trainee.run, trainee.world, trainee.state
    recorded_epochs = TrainConfig.from_run_dir(run.path).epochs if call.resume and run.path else config.epochs
    lr_of_step, total_steps = schedule
    if recorded_epochs != config.epochs:
        log.note(_extension_note(config, recorded_epochs, restored, lr_of_step(restored.step)))
    loss_fn = make_loss(config.loss, config.label_smoothing)
    log.note(f"training objective: {describe_objective(config.loss, config.label_smoothing)}; validation and test "
             "losses are plain cross-entropy")
    if should_compile(_step_kind(config, restored), total_steps, world.size, log.note):
        state.compiled = CompiledStep(state.model, config, loss_fn, tuple(trainee.data.dataset.image_shape[1:]))
    _restore_optimizer_state(restored, state, run.path)
    if not call.resume or recorded_epochs != config.epochs:
        run.write_config(config)
    state.scaler = torch.amp.GradScaler(world.device.type, enabled=config.precision == "fp16")
    state.ddp = _distributed(state.model, config, world)
    log.start(state.epoch + 1, run.path / "tensorboard" if config.tensorboard and run.path else None)
    return StepPlan(config, loss_fn, lr_of_step, world.device)


def _schedule(trainee: Trainee) -> tuple[Callable[[int], float], int]:
    """(learning rate of each step, total steps) over the run's epochs."""
    config, train_count, world = trainee.config, len(trainee.data.train[1]), trainee.world
    per_epoch = num_batches(train_count, config.batch_size, config.drop_last, world.size)
    if per_epoch == 0:
        each = f" for each of {world.size} processes" if world.size > 1 else ""
        raise CnnkitError(f"the training split ({train_count:,} images) is smaller than one batch of "
                          f"{config.batch_size}{each}")
    total_steps = per_epoch * config.epochs
    return partial(lr_at, total_steps=total_steps, steps_per_epoch=per_epoch, config=config), total_steps


def _convolutions(state: TrainState) -> contextlib.AbstractContextManager:
    """The compiled step's convolution arithmetic for the whole run (training, validation, test), or none."""
    return state.compiled.convolutions() if state.compiled is not None else contextlib.nullcontext()


def _train(trainee: Trainee, plan: StepPlan, log: EpochLog, call: _Call) -> bool:
    """Every epoch after the state's; True when `stop_after_epochs` cut the run short, as an interruption would."""
    config, state = trainee.config, trainee.state
    first = state.epoch + 1
    for epoch in range(first, config.epochs + 1):
        started = time.perf_counter()
        record = _train_epoch(trainee, plan, epoch)
        end_epoch([trainee], [record], started, log, partial(_report, trainee, log, call.epoch_callback))
        if _patience_spent(config, state, log):
            return False
        if call.stop_after_epochs is not None and epoch - first + 1 >= call.stop_after_epochs \
                and epoch < config.epochs:
            return True
    return False


def _train_epoch(trainee: Trainee, plan: StepPlan, epoch: int) -> dict:
    """Train `epoch` on this process's share of the batches; its record, summed over the processes."""
    data, world, state, config = trainee.data, trainee.world, trainee.state, trainee.config
    order = begin_epoch(state, config, epoch, len(data.train[1]), world.device)
    batches = training_batches(data, config, order, world.device, world.rank, world.size)
    in_memory = (*data.train, order) if data.stream is None and world.size == 1 else None
    sums = train_one_epoch(state, batches, plan, in_memory)
    return _summed_record(sums, trainee, plan.lr_of_step(state.step - 1))


def _summed_record(sums: dict, trainee: Trainee, lr: float) -> dict:
    """Training loss and accuracy of an epoch, summed over processes; a non-finite loss stops the run."""
    world, epoch = trainee.world, trainee.state.epoch
    for key in ("loss_sum", "correct"):
        all_sum(sums[key], world)
    record = epoch_record({**sums, "count": sums["count"] * world.size}, epoch, trainee.state.step, lr)
    if not math.isfinite(record["train_loss"]):
        bad = int(sums["first_bad"])
        where = f"epoch {epoch}, batch {bad + 1}" if bad >= 0 else f"epoch {epoch}"
        raise SettingError(f"the training loss became {record['train_loss']} at {where}; training stopped"
                           f"{trainee.run.last_good()}. "
                           "Try a lower ", Named("lr"), " or ", Named("grad_clip"))
    return record


def _report(trainee: Trainee, log: EpochLog, callback: Callable[[int, nn.Module], None] | None,
            records: list[dict]) -> None:
    """A single run's report of an epoch: the caller's callback, then the log line."""
    if callback is not None:
        callback(trainee.state.epoch, trainee.state.model)
    log.epoch(records[0])


def _patience_spent(config: TrainConfig, state: TrainState, log: EpochLog) -> bool:
    """Early stopping: `patience` epochs without a better validation accuracy (said when it stops the run)."""
    if not (config.patience and state.best is not None and state.epoch - state.best["epoch"] >= config.patience):
        return False
    log.note(f"early stopping: no better validation accuracy for {config.patience} epochs")
    return True


def _test(trainee: Trainee, log: EpochLog) -> dict:
    """The held-out test on the best weights, kept in `best` and metrics.jsonl, and said."""
    state = trainee.state
    final = final_test(state.model, state.best_state, trainee.data, trainee.config, trainee.world.device,
                       tested_epoch(state))
    keep_final(trainee, final)
    log.final(final, state.best)
    return final


def run_result(trainee: Trainee, final: dict | None, started: float) -> RunResult:
    """What a run reports: its test (None when cut short), best validation accuracy, epochs, time and history."""
    state = trainee.state
    return RunResult(trainee.run.path, final and final["test_accuracy"], final and final["test_loss"],
                     state.best and state.best["val_accuracy"], state.epoch, time.perf_counter() - started,
                     state.history + ([{"final": final}] if final else []), state.model, trainee.world.is_main,
                     state.compiled is not None)


def _data_and_model(config: TrainConfig, device: torch.device, log: EpochLog, recorded_white: float | None = None
                    ) -> tuple[TrainConfig, PreparedData, dict, nn.Module]:
    """The run's data and model on `device`: a fresh model, or --init-from's (the config then fitted to it); the
    thread count chosen from the model's work. `recorded_white`: a resumed run's scale, kept for its array file."""
    torch.manual_seed(config.seed)
    start = read_start(config.init_from) if config.init_from else None
    if start is not None:
        config = _fit_to_start(config, start[2]["model"], log)
    given = (start[1], start[2]["data"]["pixel_max"]) if start is not None else None
    data = prepare_data(config, device, progress=log.enabled and log.tty, given=given, recorded_white=recorded_white)
    for line in data.notes:
        log.note(line)
    channels, h, w = data.dataset.image_shape
    if config.shift >= min(h, w):
        raise SettingError(Named("shift"), f" must be smaller than the images ({h}x{w}); received {config.shift}")
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
    note = f"epochs {recorded_epochs} -> {config.epochs} (recorded in config.json with the first epoch kept)"
    if config.schedule not in ("cosine", "onecycle"):  # the others do not depend on the run's length
        return note
    return (f"{note}: the {config.schedule} learning-rate schedule is re-planned over {config.epochs} epochs, so "
            f"epoch {restored.start_epoch} continues at lr {next_lr:.3g}")


def _fit_to_start(config: TrainConfig, spec: dict, log: EpochLog) -> TrainConfig:
    """Check a fine-tuning config against its starting checkpoint's model; size the images to its input."""
    if config.model != spec["name"]:
        raise SettingError(Named("init_from", config.init_from), f" holds a {spec['name']}; pass ",
                           Named("model", spec["name"]), " (received ", Named("model", config.model), ")")
    height, width = spec["input_size"]
    if config.image_size is None and height == width:
        log.note(f"images resized to the checkpoint's input, {height}x{width} (--image-size to state it)")
        return config.replace(image_size=height)
    return config


def _distributed(model: nn.Module, config: TrainConfig, world: World) -> nn.Module | None:
    """The DDP wrapper the training steps call under torchrun; None for a single process."""
    if world.size == 1:
        return None
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


def _restore_optimizer_state(restored: Restored, state: TrainState, out: Path | None) -> None:
    """Put a resumed run's optimiser state back, into the compiled step or the eager optimiser."""
    saved, compiled = restored.tensors, state.compiled
    if saved is None:
        return
    if (compiled is not None) != restored.compiled:
        raise CnnkitError(f"{out}: the run was saved with compile={'on' if compiled is None else 'off'}; "
                          "resume it with the same --compile setting")
    try:
        if compiled is not None:
            compiled.load_state_tensors(saved)
        else:
            restore_optimizer(state.optimizer, saved, restored.param_groups)
    except (ValueError, KeyError, IndexError, TypeError, AttributeError, RuntimeError) as error:
        reason = str(error).splitlines()[0][:200] if str(error) else type(error).__name__
        raise CnnkitError(f"{out / 'last' if out else 'last'}: cannot resume its optimiser state ({reason})") from None
