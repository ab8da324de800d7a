"""`cnnkit train --seeds 8` against one seed of the same recipe: whole-process wall times, measured in one run."""

from __future__ import annotations

import subprocess
import sys
import tempfile
import time

from common import machine

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


def run(quick: bool = False) -> dict:
    epochs = ["--epochs", "2"] if quick else []  # each model's own recipe otherwise
    rows = {}
    for model in MODELS:
        one = wall_seconds(["--model", model, *epochs])
        many = wall_seconds(["--model", model, "--seeds", str(SEEDS), *epochs])
        rows[model] = {"one_seed_s": one, f"{SEEDS}_seeds_s": many, "ratio": round(many / one, 2)}
    return {"machine": machine(), "seeds": SEEDS, "wall_seconds": rows, "target_ratio": TARGET_RATIO,
            "recipe": "two epochs (quick)" if quick else "each model's own recipe"}
