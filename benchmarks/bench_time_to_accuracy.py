"""Wall time from the start of training to >= 98% and >= 99% held-out test accuracy on digits (mean of 3 seeds):
cnnkit's default recipe vs the article's seed recipe (run under a time budget); and whole-process wall times
(import alone, and a default `cnnkit train`), which add start-up, data loading and the test to training."""

from __future__ import annotations

import contextlib
import os
import statistics
import subprocess
import sys
import tempfile
import time

import torch
from common import machine

from cnnkit.train import TrainConfig, evaluate, fit, seed_recipe
from cnnkit.train.data import prepare_data

THRESHOLDS = (0.98, 0.99)


class BudgetSpentError(Exception):
    """Stops a run once its thresholds are reached or its time is up."""


def time_to(config: TrainConfig, budget_s: float) -> dict:
    """Seconds (excluding the accuracy checks) until each threshold is first reached, or None."""
    test_x, test_y = prepare_data(config, torch.device("cpu")).test
    reached: dict[float, float | None] = dict.fromkeys(THRESHOLDS)
    spent_checking = 0.0
    accuracies = []
    started = time.perf_counter()

    def check(epoch: int, model) -> None:
        nonlocal spent_checking
        now = time.perf_counter()
        accuracy = evaluate(model, test_x, test_y)["accuracy"]
        accuracies.append(accuracy)
        for threshold in THRESHOLDS:
            if reached[threshold] is None and accuracy >= threshold:
                reached[threshold] = now - started - spent_checking
        spent_checking += time.perf_counter() - now
        if all(v is not None for v in reached.values()) and config.recipe == "seed":
            raise BudgetSpentError
        if now - started - spent_checking > budget_s:
            raise BudgetSpentError

    with contextlib.suppress(BudgetSpentError), open(os.devnull, "w") as quiet:
        fit(config, progress=False, epoch_callback=check, stream=quiet)
    return {"seconds_to": {f"{t:.0%}": None if v is None else round(v, 2) for t, v in reached.items()},
            "final_accuracy": round(accuracies[-1], 4) if accuracies else None,
            "training_seconds": round(time.perf_counter() - started - spent_checking, 2)}


def process_seconds(argv: list[str]) -> float:
    """Wall time of a whole `python -m cnnkit ...` process (import, data, training, test), in seconds."""
    with tempfile.TemporaryDirectory() as tmp:
        started = time.perf_counter()
        subprocess.run([sys.executable, "-m", "cnnkit", *argv, "--out", f"{tmp}/run", "--no-progress"], check=True,
                       capture_output=True)
        return round(time.perf_counter() - started, 2)


def import_seconds() -> float:
    """Wall time of a process that only imports the trainer (torch, scikit-learn, cnnkit)."""
    started = time.perf_counter()
    subprocess.run([sys.executable, "-c", "import cnnkit.train.loop"], check=True)
    return round(time.perf_counter() - started, 2)


def run(quick: bool = False) -> dict:
    seeds = (0,) if quick else (0, 1, 2)
    default = [time_to(TrainConfig(seed=s, epochs=5 if quick else TrainConfig.default("epochs")), 60.0) for s in seeds]
    seed = [time_to(seed_recipe(seed=s, eval_every=1), 10.0 if quick else 25.0) for s in seeds]

    def mean(runs: list[dict], key: str) -> float | None:
        values = [r["seconds_to"][key] for r in runs]
        return round(statistics.mean(values), 2) if all(v is not None for v in values) else None

    summary = {key: {"default_recipe_s": mean(default, key), "seed_recipe_s": mean(seed, key)}
               for key in ("98%", "99%")}
    epochs = 5 if quick else TrainConfig.default("epochs")
    return {"machine": machine(), "targets_s": {"98%": 1.0, "99%": 2.0, "process_wall": 3.0},
            "mean_over_seeds": summary,
            "default_recipe_final_accuracy_mean": round(statistics.mean(r["final_accuracy"] for r in default), 4),
            "default_recipe_training_seconds_mean": round(statistics.mean(r["training_seconds"] for r in default), 2),
            "process_wall_s": {"import_only": import_seconds(),
                               f"cnnkit train --epochs {epochs}": process_seconds(["train", "--epochs", str(epochs)])},
            "default_runs": default, "seed_recipe_runs": seed,
            "seed_recipe_budget_s": 10.0 if quick else 25.0}
