"""Measuring a model while and after it trains: loss and accuracy, sound batch-norm statistics, the final test."""

from __future__ import annotations

import contextlib
from collections.abc import Callable

import torch
from torch import nn

from cnnkit.layers.batchnorm import BatchNorm2d, batch_statistics, recompute_batchnorm_stats, running_stats_settled
from cnnkit.models import main_logits
from cnnkit.train.config import TrainConfig
from cnnkit.train.data import PreparedData, training_batches
from cnnkit.train.log import EpochLog
from cnnkit.train.losses import make_loss


def autocast(config: TrainConfig, device: torch.device):
    """The precision context for forward passes."""
    if config.precision == "fp32":
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if config.precision == "bf16" else torch.float16
    return torch.autocast(device.type, dtype=dtype)


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


def better_than(record: dict, best: dict | None) -> bool:
    """Higher validation accuracy wins; a tie goes to the lower validation loss."""
    if best is None:
        return True
    return (record["val_accuracy"], -record["val_loss"]) > (best["val_accuracy"], -best["val_loss"])


def settle_bn_statistics(model: nn.Module, data: PreparedData, config: TrainConfig, step: int,
                          device: torch.device, log: EpochLog) -> str | None:
    """Make the statistics that validation, the best checkpoint and the test will all use sound: recompute the
    population statistics over the training split (the article's method) when asked to, or while the running
    averages are still immature. Returns which statistics the model now holds (None: no batch norm)."""
    if not any(isinstance(m, BatchNorm2d) and not m.frozen for m in model.modules()):
        return None
    settled = running_stats_settled(model, step)
    if config.bn_stats == "running" and settled:
        return "running"
    if not settled and config.bn_stats == "running":
        steps = f"{step} step{'s' if step != 1 else ''}"
        log.note_once("bn", f"batch norm: after {steps} the running statistics are still mostly their starting "
                            "values; using population statistics recomputed over the training split instead (the "
                            "article's method) until they settle")
    order = torch.arange(len(data.train[1]), device=device)
    recompute_batchnorm_stats(model, training_batches(data, config, order, device))
    return "recomputed"


def validation_metrics(model: nn.Module, data: PreparedData, config: TrainConfig) -> dict:
    """Held-out validation loss (plain cross-entropy, whatever the training objective) and accuracy, plus the
    article-style training accuracy when the recipe asks for it."""
    result = {}
    if config.eval_mode == "batch":
        article = evaluate(model, *data.train, batch_stats=True, config=config)
        result["article_train_accuracy"] = article["accuracy"]
    val = evaluate(model, *data.val, config=config)
    result.update(val_loss=val["loss"], val_accuracy=val["accuracy"])
    return result


def final_test(model: nn.Module, best_state: dict | None, data: PreparedData, config: TrainConfig,
                device: torch.device, epoch: int) -> dict:
    """Load the best validation weights (with the BN statistics they were validated with) and measure the held-out
    test split; the test loss is plain cross-entropy, as the validation loss. `epoch` is the epoch those weights
    are from (the last one's without `best_state`): the record names it."""
    if best_state is not None:
        model.load_state_dict(best_state)
    test = evaluate(model, *data.test, config=config)
    final = {"epoch": epoch, "test_accuracy": test["accuracy"], "test_loss": test["loss"], "test_count": test["count"]}
    if config.eval_mode == "batch" and test["count"]:
        final["article_test_accuracy"] = evaluate(model, *data.test, batch_stats=True, config=config)["accuracy"]
    return final


def best_checkpoint_record(history: list[dict], best: dict | None, final: dict, epoch: int, step: int
                           ) -> tuple[dict, int, int]:
    """(metrics, epoch, step) for the final `best` checkpoint: the best validation epoch's own (its weights are
    the ones saved), with the test results added; the last epoch's where nothing was validated."""
    record = next((r for r in history if best and r.get("epoch") == best["epoch"]), history[-1] if history else {})
    tested = {key: value for key, value in final.items() if key != "epoch"}
    return {**record, **tested}, record.get("epoch", epoch), record.get("step", step)
