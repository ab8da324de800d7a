"""Start-up of the command line doing real work: whole `cnnkit` processes, quiet and beside a busy process.

Each command is a fresh `python -m cnnkit ...` process, timed from start to exit (`train` to its first epoch line,
and to its exit): models, summary digits_cnn, evaluate RUN, predict RUN IMAGE, explain, --help. The floors are
measured in the same rounds: `python -c "import torch"` for the commands that need torch, `python -c pass` for
those that do not. A command's own overhead is its median beyond its floor's. Commands run in interleaved rounds
(median of 5), so a drift in the machine's load falls on all of them alike. The busy neighbour is a CPU-burning
child process started and stopped here. Bytecode is cached as in an ordinary install (PYTHONDONTWRITEBYTECODE is
dropped; the cache lives in the benchmark's temporary folder, PYTHONPYCACHEPREFIX), warmed by one untimed round.

Targets (2 quiet cores): every command but train within 1.0 s of its floor; train's first epoch line within 2.5 s.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from common import machine
from PIL import Image

BUSY = "while True: pass"
OVERHEAD_TARGET_S = 1.0
FIRST_EPOCH_TARGET_S = 2.5
NO_TORCH = ("models", "--help", "explain")  # commands that need no torch: measured against `python -c pass`


def commands(folder: Path) -> dict[str, list[str]]:
    """Name -> argv of every timed process (`cnnkit ...` commands run as `python -m cnnkit ...`)."""
    run, image = str(folder / "run"), str(folder / "digit.png")
    cnnkit = [sys.executable, "-m", "cnnkit"]
    return {
        "import torch (floor)": [sys.executable, "-c", "import torch"],
        "python (floor)": [sys.executable, "-c", "pass"],
        "--help": [*cnnkit, "--help"],
        "models": [*cnnkit, "models"],
        "summary digits_cnn": [*cnnkit, "summary", "digits_cnn"],
        "evaluate RUN": [*cnnkit, "evaluate", run],
        "predict RUN IMAGE": [*cnnkit, "predict", run, image],
        "explain": [*cnnkit, "explain", "conv", "--out", str(folder / "explain.png"), "--overwrite"],
    }


def train_command(folder: Path) -> list[str]:
    """A fresh one-epoch digits training (the default recipe), in a new run directory each time."""
    return [sys.executable, "-m", "cnnkit", "train", "--epochs", "1", "--no-progress", "--overwrite",
            "--out", str(folder / f"train-{time.monotonic_ns()}")]


def environment(folder: Path) -> dict[str, str]:
    """The children's environment: bytecode cached (in `folder`), as an installed package has it."""
    clean = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    return {**clean, "PYTHONPYCACHEPREFIX": str(folder / "pycache")}


def process_seconds(argv: list[str], env: dict[str, str]) -> float:
    """Wall time of one process, start to exit."""
    started = time.perf_counter()
    subprocess.run(argv, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    return time.perf_counter() - started


def train_seconds(argv: list[str], env: dict[str, str]) -> tuple[float, float]:
    """(seconds to the first `epoch` line on stdout, seconds to exit) of one training process."""
    started = time.perf_counter()
    process = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=env)
    first = None
    for line in process.stdout:
        if first is None and line.startswith("epoch"):
            first = time.perf_counter() - started
    if process.wait() != 0 or first is None:
        raise RuntimeError(f"{' '.join(argv)} failed or printed no epoch line")
    return first, time.perf_counter() - started


def prepare(folder: Path) -> None:
    """A trained run (one epoch) and one small image as a PNG, for evaluate and predict; then one untimed round of every
    command, which fills the bytecode cache."""
    env = environment(folder)
    subprocess.run([sys.executable, "-m", "cnnkit", "train", "--epochs", "1", "--no-progress", "--out",
                    str(folder / "run")], check=True, capture_output=True, env=env)
    stroke = np.zeros((8, 8), dtype=np.uint8)
    stroke[1:7, 3:5] = 255  # a "1": any image will do, the prediction is not what is timed
    Image.fromarray(stroke).save(folder / "digit.png")
    for argv in commands(folder).values():
        process_seconds(argv, env)


def measure(folder: Path, repeats: int) -> dict:
    """Medians of every command (interleaved rounds) and the overheads against the floors."""
    argvs, env = commands(folder), environment(folder)
    load = os.getloadavg()[0]
    samples: dict[str, list[float]] = {name: [] for name in [*argvs, "train: first epoch line", "train: exit"]}
    for _ in range(repeats):
        for name, argv in argvs.items():
            samples[name].append(process_seconds(argv, env))
        first, total = train_seconds(train_command(folder), env)
        samples["train: first epoch line"].append(first)
        samples["train: exit"].append(total)
    medians = {name: round(statistics.median(values), 3) for name, values in samples.items()}
    floors = {"torch": medians["import torch (floor)"], "python": medians["python (floor)"]}
    overhead = {name: round(value - floors["python" if name in NO_TORCH else "torch"], 3)
                for name, value in medians.items() if "floor" not in name and not name.startswith("train")}
    return {"load_average_1min_before": round(load, 2), "median_s": medians, "overhead_s": overhead,
            "overhead_within_target": all(v <= OVERHEAD_TARGET_S for v in overhead.values()),
            "first_epoch_within_target": medians["train: first epoch line"] <= FIRST_EPOCH_TARGET_S}


def run(quick: bool = False) -> dict:
    repeats = 2 if quick else 5
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        prepare(folder)
        results["quiet"] = measure(folder, repeats)
        busy = subprocess.Popen([sys.executable, "-c", BUSY])
        try:
            time.sleep(0.2)
            results["beside_busy_process"] = measure(folder, repeats)
        finally:
            busy.kill()
            busy.wait()
    return {"machine": machine(), "repeats": repeats, **results,
            "targets": {"overhead_s": OVERHEAD_TARGET_S, "first_epoch_line_s": FIRST_EPOCH_TARGET_S,
                        "note": "overhead: median beyond `import torch` (beyond `python -c pass` for models, "
                                "--help, explain); targets apply on 2 quiet cores"}}
