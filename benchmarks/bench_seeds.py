"""`cnnkit train --seeds 8` against one seed of the same recipe: whole-process wall times, measured in one run; and
the epoch time of 8 digits_cnn seeds side by side (threads) against one vmap over all of them."""

from __future__ import annotations

import subprocess
import sys
import tempfile
import time

import torch
from common import machine

from cnnkit.store.checkpoint import build_model, model_spec
from cnnkit.train import TrainConfig
from cnnkit.train.data import prepare_data
from cnnkit.train.losses import make_loss
from cnnkit.train.seed_batched import BatchedSeeds
from cnnkit.train.seed_parallel import ParallelSeeds

MODELS = ("digits_cnn", "digitsnet")
SEEDS = 8
TARGET_RATIO = 2.5


def wall_seconds(argv: list[str]) -> float:
    """Wall time of one `python -m cnnkit train ...` process, in seconds."""
    with tempfile.TemporaryDirectory() as tmp:
        started = time.perf_counter()
        subprocess.run([sys.executable, "-m", "cnnkit", "train", *argv, "--out", f"{tmp}/run", "--no-progress"],
                       check=True, capture_output=True)
        return round(time.perf_counter() - started, 2)


def epoch_seconds(epochs: int) -> dict:
    """Median epoch time of 8 default-recipe seeds, side by side on the cores vs one vmap (2 threads)."""
    configs = [TrainConfig(seed=k) for k in range(SEEDS)]
    datas = [prepare_data(c, torch.device("cpu")) for c in configs]
    loss_fn = make_loss("cross_entropy", 0.1)
    medians = {}
    for name in ("side_by_side", "vmap"):
        models = [build_model(model_spec("digits_cnn", {}, 10, 1, (8, 8))) for _ in configs]
        if name == "side_by_side":
            torch.set_num_threads(1)
            trainer = ParallelSeeds(models, configs, datas, loss_fn, lambda s: 1e-3, 2, torch.device("cpu"))
        else:
            torch.set_num_threads(2)
            trainer = BatchedSeeds(models, configs, datas, loss_fn, lambda s: 1e-3, torch.device("cpu"))
        times = []
        for epoch in range(1, epochs + 2):  # the first epoch warms up
            started = time.perf_counter()
            trainer.train_epoch(epoch)
            times.append(time.perf_counter() - started)
        trainer.close()
        medians[name] = round(sorted(times[1:])[len(times[1:]) // 2], 3)
    return {**medians, "vmap_over_side_by_side": round(medians["vmap"] / medians["side_by_side"], 2)}


def run(quick: bool = False) -> dict:
    epochs = ["--epochs", "2"] if quick else []  # each model's own recipe otherwise
    rows = {}
    for model in MODELS:
        one = wall_seconds(["--model", model, *epochs])
        many = wall_seconds(["--model", model, "--seeds", str(SEEDS), *epochs])
        rows[model] = {"one_seed_s": one, f"{SEEDS}_seeds_s": many, "ratio": round(many / one, 2)}
    return {"machine": machine(), "seeds": SEEDS, "wall_seconds": rows, "target_ratio": TARGET_RATIO,
            "digits_cnn_8_seed_epoch_s": epoch_seconds(2 if quick else 5),
            "recipe": "two epochs (quick)" if quick else "each model's own recipe"}
