"""Run cnnkit's benchmarks: python benchmarks/run.py [--out DIR] [--quick] [seed_recipe time_to_accuracy ...]."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import emit  # noqa: E402

BENCHMARKS = ("seed_recipe", "time_to_accuracy", "contention", "seeds", "startup", "throughput", "inference_latency",
              "explore_latency")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("names", nargs="*", choices=[*BENCHMARKS, []], help="benchmarks to run (default: all)")
    parser.add_argument("--out", type=Path, help="also write NAME.json files here")
    parser.add_argument("--quick", action="store_true", help="short measurements (smoke test)")
    args = parser.parse_args()
    import torch

    torch.set_num_threads(torch.get_num_threads())
    for name in args.names or BENCHMARKS:
        module = __import__(f"bench_{name}")
        started = time.perf_counter()
        result = module.run(quick=args.quick)
        result["benchmark_seconds"] = round(time.perf_counter() - started, 1)
        emit(name, result, args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
