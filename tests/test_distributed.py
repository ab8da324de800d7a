"""Two CPU processes under torchrun (gloo, SyncBatchNorm) train to the same accuracy band as one process."""

import json
import os
import subprocess
import sys

import pytest

from cnnkit.cli import main
from cnnkit.store.checkpoint import load_checkpoint
from cnnkit.train.run_dir import RUN_FILES


def run(args: list[str], cwd, env_extra: dict) -> tuple[dict, str]:
    """(the JSON summary, the log on stderr) of a `cnnkit train --json` command."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", **env_extra}
    done = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    assert len(lines) == 1, done.stdout  # only rank 0 prints the summary
    assert "Grad strides do not match" not in done.stderr  # DDP's layout warning is fixed at its cause
    return json.loads(lines[0]), done.stderr


@pytest.mark.slow  # three Python processes and a gloo group
def test_two_processes_match_one(tmp_path, capsys):
    train = ["-m", "cnnkit", "train", "--epochs", "6", "--json", "--no-progress"]
    two, log = run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", *train,
                    "--sync-bn", "--out", "two"], tmp_path, {})
    one, _ = run([sys.executable, *train, "--out", "one"], tmp_path, {})
    assert one["test_accuracy"] > 0.95 and two["test_accuracy"] > 0.95
    assert abs(one["test_accuracy"] - two["test_accuracy"]) < 0.03
    meta = load_checkpoint(tmp_path / "two" / "last")[1]
    assert meta["epoch"] == 6
    # Only rank 0 writes: one metrics line per epoch plus the final line, not one per process.
    lines = (tmp_path / "two" / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line).get("epoch") for line in lines[:-1]] == list(range(1, 7))
    assert "final" in json.loads(lines[-1])
    # The run records its processes and the images of one step over both (digits_cnn's batch 128, twice), says
    # them once, and a resume in one process (another steps per epoch, another schedule) is refused untouched.
    assert (meta["processes"], meta["global_batch"]) == (2, 256)
    assert log.count("2 processes, global batch 256 (128 per process)") == 1
    before = {name: (tmp_path / "two" / name).read_bytes() for name in RUN_FILES}
    capsys.readouterr()
    assert main(["train", "--resume", str(tmp_path / "two"), "--epochs", "7", "--no-progress"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"cnnkit train: error: {tmp_path / 'two'} was trained with 2 processes (global batch 256)")
    assert {name: (tmp_path / "two" / name).read_bytes() for name in RUN_FILES} == before
