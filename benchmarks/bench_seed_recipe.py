"""The article's recipe (digitsnet, batch 8 in file order, Adam 1e-3): cnnkit's compiled epochs vs a plain PyTorch
eager loop, per training step, alternating epoch by epoch; compile time cold and warm; the whole 1000-epoch run."""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from common import PlainDigitsNet, machine

from cnnkit.models import get_model
from cnnkit.train import seed_recipe
from cnnkit.train.compiled import CompiledStep
from cnnkit.train.data import prepare_data
from cnnkit.train.losses import article_loss, make_loss

SRC = str(Path(__file__).resolve().parents[1] / "src")
EQUAL_STEPS = 200

# Run in a fresh process: compile (with the given inductor cache) and one epoch, then one more epoch.
COMPILE_SCRIPT = """
import json, time, torch
from cnnkit.models import get_model
from cnnkit.train import seed_recipe
from cnnkit.train.compiled import CompiledStep
from cnnkit.train.data import prepare_data
from cnnkit.train.losses import make_loss
config = seed_recipe(compile="on")
images, labels = prepare_data(config, torch.device("cpu")).train
step = CompiledStep(get_model("digitsnet", seed_faithful=True), config, make_loss("article"), (8, 8))
order = torch.arange(len(labels))
times = []
for _ in range(2):
    started = time.perf_counter()
    step.run_epoch(images, labels, order, 8, True, lambda s: 1e-3, 0)
    times.append(time.perf_counter() - started)
print(json.dumps({"compile_seconds": times[0] - times[1]}))
"""

# The whole article run, as `cnnkit train --recipe seed --compile on` trains it (no run directory).
ARTICLE_RUN_SCRIPT = """
import io, json
from cnnkit.train import fit, seed_recipe
result = fit(seed_recipe(compile="on"), progress=False, stream=io.StringIO())
print(json.dumps({"compiled": result.compiled, "test_accuracy": result.test_accuracy, "fit_seconds": result.seconds}))
"""


def copy_into_cnnkit(plain: PlainDigitsNet, model) -> None:
    """Same weights in both networks (the layouts coincide; flatten orders are both NHWC)."""
    pairs = {"features.conv1": plain.conv1, "features.conv2": plain.conv2, "features.bn2": plain.bn,
             "head.fc1": plain.fc1, "head.out": plain.out}
    state = {}
    for prefix, module in pairs.items():
        for key, value in module.state_dict().items():
            state[f"{prefix}.{key}"] = value.clone()
    model.load_state_dict(state)


def in_fresh_process(script: str, cache_dir: str) -> tuple[dict, float]:
    """(the script's JSON line, the process's wall seconds) with this inductor cache directory."""
    env = {**os.environ, "TORCHINDUCTOR_CACHE_DIR": cache_dir, "PYTHONPATH": SRC}
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1]), time.perf_counter() - started


def largest_loss_difference(plain, plain_opt, compiled: CompiledStep, images, labels, steps: int) -> float:
    """Relative loss difference, worst over `steps` steps from the same weights: the eager step against one
    compiled-epoch call per batch (the epoch graph serves any number of batches)."""
    worst = 0.0
    for k in range(steps):
        index = torch.arange(8 * k, 8 * k + 8) % len(labels)
        plain_opt.zero_grad()
        loss = article_loss(plain(images[index]), labels[index])
        loss.backward()
        plain_opt.step()
        _, sums = compiled.run_epoch(images, labels, index, 8, True, lambda s: 1e-3, k)
        ours = float(sums["loss_sum"]) / 8
        worst = max(worst, abs(ours - loss.item()) / max(abs(loss.item()), 1e-6))
    return worst


def run(quick: bool = False) -> dict:
    # Both loops on one thread, as cnnkit trains networks this small: two threads gain nothing on a quiet machine
    # (2,916 vs 2,964 us per plain step) and collapse 30x beside any other busy process.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return _measure(quick)
    finally:
        torch.set_num_threads(threads)


def _measure(quick: bool) -> dict:
    config = seed_recipe(compile="on")
    images, labels = prepare_data(config, torch.device("cpu")).train
    usable = len(labels) - len(labels) % 8
    batches = [(images[i:i + 8], labels[i:i + 8]) for i in range(0, usable, 8)]
    torch.manual_seed(0)
    plain = PlainDigitsNet()
    for p in plain.parameters():  # the article's N(0, 1) initialisation
        torch.nn.init.normal_(p)
    model = get_model("digitsnet", seed_faithful=True)
    copy_into_cnnkit(plain, model)
    plain.train(), model.train()
    plain_opt = torch.optim.Adam(plain.parameters(), lr=1e-3)
    compiled = CompiledStep(model, config, make_loss("article"), (8, 8))
    worst = largest_loss_difference(plain, plain_opt, compiled, images, labels, 20 if quick else EQUAL_STEPS)

    def plain_epoch() -> None:
        for bx, by in batches:
            plain_opt.zero_grad()
            article_loss(plain(bx), by).backward()
            plain_opt.step()

    order = torch.arange(len(labels))

    ours_epochs = 2 if quick else 10  # each of ours takes 1/20 of a plain epoch: several make a steadier sample

    def cnnkit_epochs() -> None:
        for _ in range(ours_epochs):
            compiled.run_epoch(images, labels, order, 8, True, lambda s: 1e-3, compiled.steps_taken)

    rounds = 2 if quick else 5
    plain_times, ours_times = [], []
    for _ in range(rounds):
        for fn, times, epochs in ((plain_epoch, plain_times, 1), (cnnkit_epochs, ours_times, ours_epochs)):
            started = time.perf_counter()
            fn()
            times.append((time.perf_counter() - started) / (epochs * len(batches)) * 1e6)
    plain_us, ours_us = statistics.median(plain_times), statistics.median(ours_times)
    steps = len(batches) * 1000
    result = {
        "machine": machine(), "threads_both_loops": 1, "steps_per_epoch": len(batches),
        "plain_eager_us_per_step": round(plain_us, 1),
        "cnnkit_us_per_step": round(ours_us, 1), "ratio_cnnkit_over_plain": round(ours_us / plain_us, 3),
        "speedup": round(plain_us / ours_us, 2), "target_us_per_step": 100, "target_speedup": 20,
        f"max_relative_loss_difference_{EQUAL_STEPS if not quick else 20}_steps": float(f"{worst:.2e}"),
    }
    if quick:  # the fresh-process measurements take minutes
        return result
    with tempfile.TemporaryDirectory() as cache:
        cold = in_fresh_process(COMPILE_SCRIPT, cache)[0]["compile_seconds"]
        warm = in_fresh_process(COMPILE_SCRIPT, cache)[0]["compile_seconds"]
        article, wall = in_fresh_process(ARTICLE_RUN_SCRIPT, cache)
    result.update({
        "compile_seconds": {"cold": round(cold, 1), "warm": round(warm, 1)},
        "projected_1000_epochs_s": {"plain": round(plain_us * steps / 1e6, 1),
                                    "cnnkit_warm": round(ours_us * steps / 1e6 + warm, 1)},
        "article_run": {"process_wall_s": round(wall, 1), "fit_s": round(article["fit_seconds"], 1),
                        "compiled": article["compiled"], "test_accuracy": article["test_accuracy"],
                        "note": "1000 epochs in a fresh process with a warm compile cache: import, data, compile, "
                                "training, the evaluations every 100 epochs and the test"},
    })
    return result
