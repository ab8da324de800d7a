"""The default digits recipe's epoch time alone, beside one busy process, and beside a second training run, for
cnnkit's thread choice and for two intra-op threads (today's PyTorch default, spinning and passive OpenMP waits).

Each training is a real `cnnkit train` subprocess; the neighbours are started and stopped by the benchmark. The
epoch time is the median of the per-epoch seconds the run records in metrics.jsonl (first epoch left out).
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import machine

POLICIES = {  # name: (extra train flags, environment)
    "cnnkit_auto": ([], {}),
    "two_threads_passive": (["--threads", "2"], {"OMP_WAIT_POLICY": "PASSIVE"}),
    "two_threads_spinning": (["--threads", "2"], {"OMP_WAIT_POLICY": "ACTIVE"}),
}
BUSY = "while True: pass"


def epoch_ms(flags: list[str], env: dict, epochs: int, folder: Path) -> float:
    """Median epoch time (ms) of one default-recipe training run."""
    out = folder / f"run-{time.monotonic_ns()}"
    command = [sys.executable, "-m", "cnnkit", "train", "--epochs", str(epochs), "--compile", "off", "--no-progress",
               "--out", str(out), *flags]
    clean = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "OMP_WAIT_POLICY")}
    subprocess.run(command, env={**clean, **env}, check=True, capture_output=True)
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    seconds = [r["seconds"] for r in records if "seconds" in r][1:]
    return round(1000 * statistics.median(seconds), 1)


def neighbour(kind: str, folder: Path) -> subprocess.Popen | None:
    """Start the competing process for a condition (None when alone)."""
    if kind == "busy_process":
        return subprocess.Popen([sys.executable, "-c", BUSY])
    if kind == "second_training":
        clean = {k: v for k, v in os.environ.items() if k != "OMP_NUM_THREADS"}
        return subprocess.Popen([sys.executable, "-m", "cnnkit", "train", "--epochs", "100000", "--compile", "off",
                                 "--no-progress", "--threads", "2", "--out", str(folder / "neighbour")],
                                env={**clean, "OMP_WAIT_POLICY": "ACTIVE"}, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)
    return None


def run(quick: bool = False) -> dict:
    epochs = 4 if quick else 12
    results: dict[str, dict[str, float]] = {name: {} for name in POLICIES}
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        for condition in ("alone", "busy_process", "second_training"):
            other = neighbour(condition, folder)
            try:
                time.sleep(2.0 if condition == "second_training" else 0.2)  # let the neighbour start its work
                for name, (flags, env) in POLICIES.items():
                    results[name][condition] = epoch_ms(flags, env, epochs, folder)
            finally:
                if other is not None:
                    other.kill()
                    other.wait()
    ratios = {name: {c: round(v / times["alone"], 2) for c, v in times.items() if c != "alone"}
              for name, times in results.items()}
    return {"machine": machine(), "epochs_per_run": epochs, "epoch_ms": results, "ratio_to_alone": ratios,
            "target": "cnnkit_auto beside a busy process <= 2.5x alone, and alone no slower than two threads"}
