"""Training and inference images/s at batch 128: cnnkit's trainer step vs a plain PyTorch loop at equal settings
(precision, memory format, compilation), alternating."""

from __future__ import annotations

import contextlib
import statistics
import time

import torch
import torch.nn.functional as F
from common import machine

from cnnkit.models import get_model
from cnnkit.train import TrainConfig
from cnnkit.train.compiled import CompiledStep
from cnnkit.train.epoch import StepPlan, TrainState
from cnnkit.train.loop import make_optimizer, train_one_epoch
from cnnkit.train.losses import make_loss

BATCH = 128
# (model, channels, size, settings measured): the larger nets get fp32 eager only, as 2 CPU cores take seconds
# per step there and the suite must finish in minutes.
CASES = [
    ("lenet5_modern", 1, 28, [(p, cl, c) for p in ("fp32", "bf16") for cl in (False, True) for c in (False, True)
                               if not (c and p == "bf16")]),
    ("resnet18", 3, 32, [("fp32", False, False), ("fp32", True, False)]),
    ("vgg11", 3, 32, [("fp32", False, False), ("fp32", True, False)]),
]


def measure(name: str, channels: int, size: int, precision: str, channels_last: bool, compiled: bool,
            steps: int) -> dict:
    torch.manual_seed(0)
    x = torch.randn(BATCH, channels, size, size)
    y = torch.randint(0, 10, (BATCH,))
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    config = TrainConfig(model=name, precision=precision, channels_last="on" if channels_last else "off", shift=0,
                         label_smoothing=0.0)
    ours = get_model(name, num_classes=10, in_channels=channels, input_size=size)
    plain = get_model(name, num_classes=10, in_channels=channels, input_size=size)
    plain.load_state_dict(ours.state_dict())
    if channels_last:
        ours, plain = ours.to(memory_format=torch.channels_last), plain.to(memory_format=torch.channels_last)
    loss_fn = make_loss("cross_entropy")
    ours_opt, plain_opt = make_optimizer(config, ours), torch.optim.AdamW(plain.parameters(), lr=1e-3)
    step = CompiledStep(ours, config, loss_fn, (size, size)) if compiled else None
    plain_forward = torch.compile(plain) if compiled else plain
    cast = torch.autocast("cpu", dtype=torch.bfloat16) if precision == "bf16" else contextlib.nullcontext()

    def ours_train() -> None:
        train_one_epoch(TrainState(ours, ours_opt, compiled=step), [(x, y)],
                        StepPlan(config, loss_fn, lambda s: 1e-3, torch.device("cpu")))

    def plain_train() -> None:
        plain.train()
        with cast:
            loss = F.cross_entropy(plain_forward(x).float(), y)
        plain_opt.zero_grad()
        loss.backward()
        plain_opt.step()

    def infer(model) -> None:
        model.eval()
        with torch.no_grad(), cast:
            model(x)

    results = {}
    pairs = (("train", (ours_train, plain_train)), ("inference", (lambda: infer(ours), lambda: infer(plain))))
    for label, fns in pairs:
        for fn in fns:
            fn()  # warm-up (and compilation)
        times = ([], [])
        for _ in range(steps):
            for fn, bucket in zip(fns, times, strict=True):
                started = time.perf_counter()
                fn()
                bucket.append(time.perf_counter() - started)
        ours_s, plain_s = statistics.median(times[0]), statistics.median(times[1])
        results[label] = {"cnnkit_images_per_s": round(BATCH / ours_s, 1),
                          "plain_images_per_s": round(BATCH / plain_s, 1),
                          "cnnkit_overhead": round(ours_s / plain_s - 1, 3)}
    return results


def run(quick: bool = False) -> dict:
    rows = []
    for name, channels, size, settings in CASES:
        for precision, channels_last, compiled in settings[:1] if quick else settings:
            result = measure(name, channels, size, precision, channels_last, compiled, 1 if quick else 3)
            rows.append({"model": name, "input": f"{channels}x{size}x{size}", "precision": precision,
                         "channels_last": channels_last, "compiled": compiled, **result})
    fastest = {}
    for row in rows:
        best = fastest.get(row["model"])
        if best is None or row["train"]["cnnkit_images_per_s"] > best["train"]["cnnkit_images_per_s"]:
            fastest[row["model"]] = row
    return {"machine": machine(), "batch": BATCH, "target_overhead": 0.05, "rows": rows,
            "max_train_overhead": max(r["train"]["cnnkit_overhead"] for r in rows),
            "fastest_training_setting": {m: {k: r[k] for k in ("precision", "channels_last", "compiled")}
                                         for m, r in fastest.items()},
            "cnnkit_default": {"precision": "fp32", "channels_last": "auto (CPU always, GPU from 32x32)",
                               "compiled": "auto (runs of 20,000+ steps)"}}
