"""The article's recipe (digitsnet, batch 8 in file order, Adam 1e-3): cnnkit's compiled trainer step vs a plain
PyTorch eager loop, per training step, alternating epoch by epoch."""

from __future__ import annotations

import statistics
import time

import torch
from common import PlainDigitsNet, machine

from cnnkit.models import get_model
from cnnkit.train import seed_recipe
from cnnkit.train.compiled import CompiledStep
from cnnkit.train.data import prepare_data
from cnnkit.train.loop import train_one_epoch
from cnnkit.train.losses import article_loss, make_loss


def copy_into_cnnkit(plain: PlainDigitsNet, model) -> None:
    """Same weights in both networks (the layouts coincide; flatten orders are both NHWC)."""
    pairs = {"features.conv1": plain.conv1, "features.conv2": plain.conv2, "features.bn2": plain.bn,
             "head.fc1": plain.fc1, "head.out": plain.out}
    state = {}
    for prefix, module in pairs.items():
        for key, value in module.state_dict().items():
            state[f"{prefix}.{key}"] = value.clone()
    model.load_state_dict(state)


def run(quick: bool = False) -> dict:
    config = seed_recipe(compile="on")
    data = prepare_data(config, torch.device("cpu"))
    x, y = data.train
    usable = len(y) - len(y) % 8
    batches = [(x[i:i + 8], y[i:i + 8]) for i in range(0, usable, 8)]
    torch.manual_seed(0)
    plain = PlainDigitsNet()
    for p in plain.parameters():  # the article's N(0, 1) initialisation
        torch.nn.init.normal_(p)
    model = get_model("digitsnet", seed_faithful=True)
    copy_into_cnnkit(plain, model)
    plain_opt = torch.optim.Adam(plain.parameters(), lr=1e-3)
    loss_fn = make_loss("article")
    compile_started = time.perf_counter()
    step = CompiledStep(model, config, loss_fn, (8, 8))
    step(*batches[0][:2], 1e-3)  # compile (and take the first step, mirrored below)
    compile_seconds = time.perf_counter() - compile_started
    plain.train()
    plain_opt.zero_grad()
    article_loss(plain(batches[0][0]), batches[0][1]).backward()
    plain_opt.step()
    # Identical results: the next 50 steps from the same weights give the same losses.
    diffs = []
    for bx, by in batches[1:51]:
        plain_opt.zero_grad()
        loss = article_loss(plain(bx), by)
        loss.backward()
        plain_opt.step()
        ours, _ = step(bx, by, 1e-3)
        diffs.append(abs(float(ours) - loss.item()) / max(abs(loss.item()), 1e-6))

    def plain_epoch() -> None:
        for bx, by in batches:
            plain_opt.zero_grad()
            article_loss(plain(bx), by).backward()
            plain_opt.step()

    def cnnkit_epoch() -> None:
        train_one_epoch(model, batches, None, loss_fn, lambda s: 1e-3, 0, config, torch.device("cpu"),
                        torch.Generator(), None, step)

    rounds = 2 if quick else 5
    plain_times, ours_times = [], []
    for _ in range(rounds):
        for fn, times in ((plain_epoch, plain_times), (cnnkit_epoch, ours_times)):
            started = time.perf_counter()
            fn()
            times.append((time.perf_counter() - started) / len(batches) * 1e6)
    plain_us, ours_us = statistics.median(plain_times), statistics.median(ours_times)
    steps = len(batches) * 1000
    return {
        "machine": machine(), "steps_per_epoch": len(batches), "plain_eager_us_per_step": round(plain_us, 1),
        "cnnkit_us_per_step": round(ours_us, 1), "ratio_cnnkit_over_plain": round(ours_us / plain_us, 3),
        "speedup": round(plain_us / ours_us, 2), "target_ratio": 0.1,
        "projected_1000_epochs_s": {"plain": round(plain_us * steps / 1e6, 1),
                                    "cnnkit": round(ours_us * steps / 1e6 + compile_seconds, 1)},
        "compile_seconds": round(compile_seconds, 1),
        "max_relative_loss_difference_50_steps": float(f"{max(diffs):.2e}"),
    }
