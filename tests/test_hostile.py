"""Hostile input: every case exits 2 with one line naming the problem, no traceback, under a memory limit, and
leaves existing files untouched.

Add a case with one line in CASES: (name, command line, the first words of the error message). `{files}` is a
folder of hostile and valid files made by `make_files` (add a file there with one line too), `{run}` a small
trained run directory, `{tmp}` an empty folder for outputs. All cases run in one subprocess (cnnkit imported
once) whose address space is capped, so a case that tries to allocate gigabytes fails the test instead of
swapping the machine.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import shlex
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

MEMORY_LIMIT = 6 * 1024**3  # bytes of address space for the whole subprocess (torch itself maps ~1-2 GiB)
RUNNER = Path(__file__).with_name("hostile_runner.py")

CASES: list[tuple[str, str, str]] = [
    # train: names and paths
    ("unknown model", "train --model nosuch --out {tmp}/a", "unknown model 'nosuch'"),
    ("missing data", "train --data /nonexistent --out {tmp}/b", "/nonexistent: no such file or folder"),
    # inspection and use
    ("summary of an unknown name", "summary nosuchmodel", "'nosuchmodel' is neither a registered model"),
    ("evaluate a pickle", "evaluate {files}/weights.pt", "{files}/weights.pt: pickle-based checkpoints are refused"),
    ("predict a missing image", "predict {run} {files}/missing.png", "{files}/missing.png: no such file"),
    # data readers
    ("idx gzip bomb", "train --data {files}/bomb --out {tmp}/c", "{files}/bomb/train-images-idx3-ubyte.gz:"),
]


def make_files(folder: Path) -> None:
    """The files the cases read: one line (or a few) per file."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "weights.pt").write_bytes(b"\x80\x04K\x01.")  # a pickle (of the int 1)
    Image.fromarray(np.zeros((8, 8), dtype=np.uint8)).save(folder / "digit.png")
    bomb = folder / "bomb"
    bomb.mkdir()
    header = (0x803).to_bytes(4, "big") + b"".join(d.to_bytes(4, "big") for d in (70_000, 128, 128))
    (bomb / "train-images-idx3-ubyte.gz").write_bytes(gzip.compress(header + bytes(2**27)))  # claims 1.1 GB
    (bomb / "train-labels-idx1-ubyte").write_bytes((0x801).to_bytes(4, "big") + (70_000).to_bytes(4, "big"))


def snapshot(folder: Path) -> dict[str, str]:
    """Content hash of every file under `folder`."""
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def outcomes(tmp_path_factory) -> dict[str, dict]:
    root = tmp_path_factory.mktemp("hostile")
    files, run, tmp = root / "files", root / "run", root / "tmp"
    make_files(files)
    tmp.mkdir()
    from cnnkit.train import TrainConfig, fit

    fit(TrainConfig(epochs=1), out=run, progress=False)
    before = {"files": snapshot(files), "run": snapshot(run)}
    places = {"files": str(files), "run": str(run), "tmp": str(tmp)}
    commands = {name: shlex.split(command.format(**places)) for name, command, _ in CASES}
    env = {**os.environ, "OMP_NUM_THREADS": "1", "CNNKIT_HOSTILE_MEMORY": str(MEMORY_LIMIT)}
    done = subprocess.run([sys.executable, str(RUNNER)], input=json.dumps(commands), capture_output=True, text=True,
                          timeout=600, env=env, cwd=tmp)
    assert done.returncode == 0, done.stderr[-3000:]
    results = json.loads(done.stdout.splitlines()[-1])
    results["__after__"] = {"files": snapshot(files), "run": snapshot(run)}
    results["__before__"] = before
    results["__places__"] = places
    return results


@pytest.mark.parametrize("name,command,expected", CASES, ids=[case[0] for case in CASES])
def test_case_exits_2_with_one_line(outcomes, name, command, expected):
    result = outcomes[name]
    expected = expected.format(**outcomes["__places__"])
    lines = result["stderr"].strip().splitlines()
    assert result["code"] == 2, (result["code"], result["stderr"][-2000:])
    assert len(lines) == 1 and "Traceback" not in result["stderr"], result["stderr"][-2000:]
    message = lines[0].split(": error: ", 1)[-1]
    assert message.startswith(expected), message


def test_no_case_changed_existing_files(outcomes):
    assert outcomes["__after__"] == outcomes["__before__"]
