"""Start-up time of the command line: `cnnkit --help` and `cnnkit COMMAND --help` (median of repeated runs)."""

from __future__ import annotations

import statistics
import subprocess
import sys
import time

from common import machine

COMMANDS = (["--help"], ["train", "--help"], ["predict", "--help"], ["explore", "--help"], ["export", "--help"])
TARGET_S = 0.5


def seconds(argv: list[str], repeats: int) -> float:
    """Median wall time of `python -m cnnkit ARGV` in seconds."""
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        subprocess.run([sys.executable, "-m", "cnnkit", *argv], check=True, capture_output=True)
        times.append(time.perf_counter() - started)
    return round(statistics.median(times), 3)


def run(quick: bool = False) -> dict:
    repeats = 3 if quick else 7
    measured = {" ".join(argv): seconds(argv, repeats) for argv in COMMANDS}
    return {"machine": machine(), "median_seconds": measured, "target_s": TARGET_S,
            "all_within_target": all(v <= TARGET_S for v in measured.values())}
