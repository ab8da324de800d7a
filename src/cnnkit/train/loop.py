"""The trainer: train_one_epoch, evaluate and fit, with checkpoints, resume and multi-process training."""

from __future__ import annotations

import contextlib
import copy
import json
import math
import shutil
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO

import torch
from torch import nn

from cnnkit.data.augment import random_flip, random_shift
from cnnkit.data.batches import epoch_order, num_batches, tensor_batches
from cnnkit.data.stream import stream_batches
from cnnkit.errors import CnnkitError
from cnnkit.layers.batchnorm import BatchNorm2d, batch_statistics, recompute_batchnorm_stats
from cnnkit.models import get_model, resolved_options
from cnnkit.train.checkpoint import atomic_write, load_checkpoint, restore_optimizer, save_checkpoint
from cnnkit.train.compiled import CompiledStep, should_compile
from cnnkit.train.config import TrainConfig
from cnnkit.train.data import PreparedData, prepare_data
from cnnkit.train.distributed import World, all_sum, setup_world, teardown
from cnnkit.train.log import EpochLog
from cnnkit.train.losses import main_logits, make_loss
from cnnkit.train.schedule import lr_at

RUN_FILES = ("config.json", "metrics.jsonl", "last.json", "last.safetensors", "best.json", "best.safetensors")


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

    def summary(self) -> dict:
        """JSON-ready summary (no model)."""
        return {"run_dir": str(self.run_dir) if self.run_dir else None, "test_accuracy": self.test_accuracy,
                "test_loss": self.test_loss, "best_val_accuracy": self.best_val_accuracy,
                "epochs_run": self.epochs_run, "seconds": round(self.seconds, 3)}


def autocast(config: TrainConfig, device: torch.device):
    """The precision context for forward passes."""
    if config.precision == "fp32":
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if config.precision == "bf16" else torch.float16
    return torch.autocast(device.type, dtype=dtype)


def use_channels_last(config: TrainConfig, input_size: tuple[int, int]) -> bool:
    """'auto' picks NHWC for inputs of 32x32 and up: benchmarks/throughput measured it faster there (ResNet-18,
    VGG-11 at 32x32) and slower on small maps (LeNet-5 at 28x28, digits at 8x8)."""
    return config.channels_last == "on" or (config.channels_last == "auto" and min(input_size) >= 32)


def make_optimizer(config: TrainConfig, model: nn.Module) -> torch.optim.Optimizer:
    """Adam / AdamW / SGD; no weight decay on biases and normalisation parameters (1-D tensors)."""
    decay = [p for p in model.parameters() if p.requires_grad and p.dim() > 1]
    no_decay = [p for p in model.parameters() if p.requires_grad and p.dim() <= 1]
    groups = [{"params": decay, "weight_decay": config.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    if config.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=config.lr, momentum=config.momentum, nesterov=config.nesterov, foreach=True)
    if config.optimizer == "adam":  # Adam's weight decay is L2 in the gradient, as in TF 1
        return torch.optim.Adam(groups, lr=config.lr, foreach=True)
    return torch.optim.AdamW(groups, lr=config.lr, foreach=True)


def train_one_epoch(
    model: nn.Module, batches: Iterable[tuple[torch.Tensor, torch.Tensor]], optimizer: torch.optim.Optimizer,
    loss_fn: Callable, lr_of_step: Callable[[int], float], step: int, config: TrainConfig, device: torch.device,
    generator: torch.Generator, scaler: torch.amp.GradScaler | None = None, compiled: CompiledStep | None = None,
) -> tuple[int, dict]:
    """One pass over `batches`; returns the next step and summed loss/correct/count tensors (no per-step syncs)."""
    model.train()
    loss_sum = torch.zeros((), device=device)
    correct = torch.zeros((), device=device, dtype=torch.long)
    first_bad = torch.full((), -1, device=device, dtype=torch.long)
    count = 0
    for batch_index, (x, y) in enumerate(batches):
        if config.shift:
            x = random_shift(x, config.shift, generator)
        if use_channels_last(config, tuple(x.shape[-2:])):
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


def _eager_step(model, x, y, optimizer, loss_fn, lr, config, device, scaler) -> tuple[torch.Tensor, torch.Tensor]:
    for group in optimizer.param_groups:
        group["lr"] = lr
    with autocast(config, device):
        output = model(x)
        loss = loss_fn(output, y)
    optimizer.zero_grad(set_to_none=True)
    if scaler is not None:
        scaler.scale(loss).backward()
        scaler.unscale_(optimizer)
    else:
        loss.backward()
    if config.grad_clip:
        torch.nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
    if scaler is not None:
        scaler.step(optimizer)
        scaler.update()
    else:
        optimizer.step()
    return loss.detach(), main_logits(output).detach()


@torch.no_grad()
def evaluate(
    model: nn.Module, images: torch.Tensor, labels: torch.Tensor, batch_size: int = 512,
    loss_fn: Callable | None = None, batch_stats: bool = False, config: TrainConfig | None = None,
) -> dict:
    """Loss and accuracy in eval mode; `batch_stats` evaluates the whole set as one batch with BN batch moments."""
    model.eval()
    loss_fn = loss_fn or make_loss("cross_entropy")
    if len(labels) == 0:
        return {"loss": None, "accuracy": None, "count": 0}
    loss_sum, correct = 0.0, 0
    size = len(labels) if batch_stats else batch_size
    context = batch_statistics(model) if batch_stats else contextlib.nullcontext()
    with context:
        for start in range(0, len(labels), size):
            x, y = images[start:start + size], labels[start:start + size]
            with autocast(config, x.device) if config else contextlib.nullcontext():
                logits = main_logits(model(x)).float()
            loss_sum += float(loss_fn(logits, y)) * len(y)
            correct += int((logits.argmax(1) == y).sum())
    return {"loss": loss_sum / len(labels), "accuracy": correct / len(labels), "count": len(labels)}


def model_spec(config: TrainConfig, data: PreparedData) -> dict:
    """How to rebuild the model: registry name, options, classes, channels, input size."""
    channels, h, w = data.dataset.image_shape
    return {"name": config.model, "options": resolved_options(config.model, config.model_options),
            "num_classes": len(data.dataset.class_names),
            "in_channels": channels, "input_size": [h, w]}


def prepare_run_dir(out: Path, overwrite: bool) -> None:
    """Refuse an existing run unless told to overwrite it (then only cnnkit's own files are removed)."""
    existing = [name for name in RUN_FILES if (out / name).exists()]
    if existing and not overwrite:
        raise CnnkitError(f"{out} already holds a run ({', '.join(existing)}); pass --resume {out} to continue it "
                          "or --overwrite to replace it")
    for name in existing:
        (out / name).unlink()
    shutil.rmtree(out / "tensorboard", ignore_errors=True)
    out.mkdir(parents=True, exist_ok=True)


def fit(
    config: TrainConfig, out: str | Path | None = None, overwrite: bool = False, resume: bool = False,
    progress: bool | None = None, stop_after_epochs: int | None = None, stream: TextIO | None = None,
    epoch_callback: Callable[[int, nn.Module], None] | None = None,
) -> RunResult:
    """Train per `config`; with `out`, keep config, metrics and checkpoints there (rank 0 only).

    `resume=True` continues the run in `out` from its last checkpoint. `stop_after_epochs` ends this call early,
    as an interruption would (for tests of resume). `epoch_callback(epoch, model)` runs after each epoch
    (benchmarks use it to watch held-out accuracy).
    """
    config.validate()
    started = time.perf_counter()
    world = setup_world(config.device)
    try:
        return _fit(config, Path(out) if out else None, overwrite, resume, progress, stop_after_epochs, world, started,
                    stream, epoch_callback)
    finally:
        teardown(world)


def _fit(config, out, overwrite, resume, progress, stop_after_epochs, world: World, started: float,
         stream, epoch_callback) -> RunResult:
    device = world.device
    if config.precision == "fp16" and device.type != "cuda":
        raise CnnkitError("precision fp16 (AMP with loss scaling) needs a CUDA device; use bf16 on CPU")
    if out is not None and world.is_main and not resume:
        prepare_run_dir(out, overwrite)
    torch.manual_seed(config.seed)
    data = prepare_data(config, device)
    spec = model_spec(config, data)
    model = get_model(spec["name"], num_classes=spec["num_classes"], in_channels=spec["in_channels"],
                      input_size=tuple(spec["input_size"]), **spec["options"]).to(device)
    if use_channels_last(config, tuple(spec["input_size"])):
        model = model.to(memory_format=torch.channels_last)
    optimizer = make_optimizer(config, model)
    start_epoch, step, best, history, saved, saved_groups = 1, 0, None, [], None, None
    if resume:
        start_epoch, step, best, history, saved, saved_groups = _restore(out, model)
    if world.is_main and out is not None and not resume:
        atomic_write(out / "config.json", json.dumps(config.to_dict(), indent=1).encode())
    train_model = model
    if world.size > 1:
        if config.sync_bn:
            for module in model.modules():
                if isinstance(module, BatchNorm2d):
                    module.sync_world = True
        train_model = nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if device.index else None)
    x_train, y_train = data.train
    per_epoch = num_batches(len(y_train), config.batch_size, config.drop_last, world.size)
    if per_epoch == 0:
        raise CnnkitError(
            f"the training split ({len(y_train)} images) is smaller than one batch of {config.batch_size}"
        )
    total_steps = per_epoch * config.epochs
    loss_fn = make_loss(config.loss, config.label_smoothing)
    compiled = None
    say = print if world.is_main else (lambda _text: None)
    if should_compile(config, total_steps, world.size, say):
        compiled = CompiledStep(model, config, loss_fn, tuple(spec["input_size"]))
    if saved is not None:
        if compiled is not None and "optim.flat.exp_avg" in saved:
            compiled.load_state_tensors(saved)
        elif compiled is None and "optim.flat.exp_avg" not in saved:
            restore_optimizer(optimizer, saved, saved_groups)
        else:
            raise CnnkitError(f"{out}: the run was saved with compile={'on' if compiled is None else 'off'}; "
                              "resume it with the same --compile setting")
    scaler = torch.amp.GradScaler("cuda") if config.precision == "fp16" else None
    tensorboard_dir = out / "tensorboard" if config.tensorboard and out is not None else None
    log = EpochLog(config, world.is_main, progress, start_epoch, stream, tensorboard_dir)
    best_state = None
    if resume and best is not None and (out / "best.json").exists():
        best_state = {k[6:]: v for k, v in load_checkpoint(out / "best")[0].items() if k.startswith("model.")}
    epoch = start_epoch - 1
    for epoch in range(start_epoch, config.epochs + 1):
        epoch_started = time.perf_counter()
        torch.manual_seed(config.seed * 1_000_003 + epoch)  # dropout masks depend on (seed, epoch) only
        generator = torch.Generator().manual_seed(config.seed * 7_919 + epoch)
        order = epoch_order(len(y_train), config.shuffle, config.seed, epoch).to(device)
        batches = _batches(data, config, order, device, world)
        step, sums = train_one_epoch(train_model, batches, optimizer, loss_fn,
                                     lambda s: lr_at(s, total_steps, per_epoch, config), step, config, device,
                                     generator, scaler, compiled)
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
        record = {"epoch": epoch, "step": step, "lr": lr_at(step - 1, total_steps, per_epoch, config),
                  "train_loss": train_loss, "train_accuracy": int(sums["correct"]) / count}
        evaluate_now = epoch % config.eval_every == 0 or epoch == config.epochs
        if evaluate_now:
            _sync_buffers(model, world)
            if config.eval_mode == "batch":
                article = evaluate(model, x_train, y_train, loss_fn=loss_fn, batch_stats=True, config=config)
                record["article_train_accuracy"] = article["accuracy"]
            val = evaluate(model, *data.val, loss_fn=loss_fn, config=config)
            record.update(val_loss=val["loss"], val_accuracy=val["accuracy"])
            if val["accuracy"] is not None and _better(val, best):
                best = {"epoch": epoch, "val_accuracy": val["accuracy"], "val_loss": val["loss"]}
                best_state = copy.deepcopy(model.state_dict())
                if world.is_main and out is not None:
                    save_checkpoint(out / "best", model, _meta(config, data, spec, record, epoch, step, best),
                                    data.preprocessing)
        record["seconds"] = round(time.perf_counter() - epoch_started, 4)
        history.append(record)
        if epoch_callback is not None:
            epoch_callback(epoch, model)
        log.epoch(record)
        if world.is_main and out is not None and evaluate_now:
            meta = _meta(config, data, spec, record, epoch, step, best)
            save_checkpoint(out / "last", model, meta, data.preprocessing, None if compiled else optimizer,
                            compiled.state_tensors() if compiled else None)
            with open(out / "metrics.jsonl", "a") as file:
                file.write(json.dumps(record) + "\n")
        stale = best is not None and epoch - best["epoch"] >= config.patience
        if config.patience and stale:
            log.note(f"early stopping: no better validation accuracy for {config.patience} epochs")
            break
        if stop_after_epochs is not None and epoch - start_epoch + 1 >= stop_after_epochs and epoch < config.epochs:
            log.close()
            return RunResult(out, None, None, best and best["val_accuracy"], epoch, time.perf_counter() - started,
                             history, model)
    log.close()
    if best_state is not None:
        model.load_state_dict(best_state)
    if config.bn_stats == "recompute":
        order = torch.arange(len(y_train), device=device)
        recompute_batchnorm_stats(model, _batches(data, config, order, device, World(device=device)))
    test = evaluate(model, *data.test, loss_fn=make_loss("cross_entropy"), config=config)
    final = {"epoch": epoch, "test_accuracy": test["accuracy"], "test_loss": test["loss"], "test_count": test["count"]}
    if config.eval_mode == "batch" and test["count"]:
        final["article_test_accuracy"] = evaluate(model, *data.test, batch_stats=True, config=config)["accuracy"]
    if world.is_main and out is not None:
        meta = _meta(config, data, spec, history[-1] if history else {}, epoch, step, best)
        meta["metrics"].update(final)
        save_checkpoint(out / "best", model, meta, data.preprocessing)
        with open(out / "metrics.jsonl", "a") as file:
            file.write(json.dumps({"final": final}) + "\n")
    log.final(final, best)
    return RunResult(out, test["accuracy"], test["loss"], best and best["val_accuracy"], epoch,
                     time.perf_counter() - started, history + [{"final": final}], model)


def _batches(data: PreparedData, config: TrainConfig, order: torch.Tensor, device: torch.device, world: World):
    """In-memory tensor batches, or (with --stream) batches decoded from disk by a DataLoader."""
    x, y = data.train
    if data.stream is None:
        return tensor_batches(x, y, config.batch_size, order, config.drop_last, world.rank, world.size)
    return stream_batches(data.stream, x[order.cpu()], config.batch_size, config.drop_last, data.preprocessing,
                          device, config.workers, world.rank, world.size)


def _better(val: dict, best: dict | None) -> bool:
    """Higher validation accuracy wins; a tie goes to the lower validation loss."""
    if best is None:
        return True
    return (val["accuracy"], -val["loss"]) > (best["val_accuracy"], -best["val_loss"])


def _meta(config: TrainConfig, data: PreparedData, spec: dict, record: dict, epoch: int, step: int, best) -> dict:
    return {"model": spec, "class_names": data.dataset.class_names, "metrics": dict(record), "epoch": epoch,
            "global_step": step, "best": best, "config": config.to_dict(),
            "data": {"source": data.dataset.source, "image_shape": list(data.dataset.image_shape),
                     "pixel_max": data.dataset.pixel_max, "split_seed": config.seed,
                     "train": len(data.train[1]), "val": len(data.val[1]), "test": len(data.test[1])}}


def _restore(out: Path | None, model: nn.Module) -> tuple[int, int, dict, list, dict, list | None]:
    if out is None or not (out / "last.json").exists():
        raise CnnkitError(f"{out}: nothing to resume (no last.json checkpoint)")
    tensors, meta = load_checkpoint(out / "last")
    model.load_state_dict({k[6:]: v for k, v in tensors.items() if k.startswith("model.")})
    torch.set_rng_state(tensors["rng.torch"])
    history = []
    if (out / "metrics.jsonl").exists():
        lines = (out / "metrics.jsonl").read_text().splitlines()
        history = [r for r in map(json.loads, lines) if "epoch" in r and r["epoch"] <= meta["epoch"]]
        atomic_write(out / "metrics.jsonl", "".join(json.dumps(r) + "\n" for r in history).encode())
    return (meta["epoch"] + 1, meta["global_step"], meta.get("best"), history, tensors,
            meta.get("optimizer_param_groups"))


def _sync_buffers(model: nn.Module, world: World) -> None:
    # Each process updated BN running statistics with its own batches; evaluate with rank 0's everywhere.
    if world.size > 1:
        for buffer in model.buffers():
            torch.distributed.broadcast(buffer, src=0)
