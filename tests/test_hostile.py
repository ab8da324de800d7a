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
import io
import json
import os
import shlex
import subprocess
import sys
import zipfile
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
    # data readers: sizes a file declares are capped before inflating; one line naming the file for the rest
    ("idx gzip bomb", "train --data {files}/bomb --out {tmp}/c",
     "{files}/bomb/train-images-idx3-ubyte.gz: values its header declares (70000x128x128): 1,146,880,000 exceeds"),
    ("idx dims overflow", "train --data {files}/overflow --out {tmp}/e",
     "{files}/overflow/train-images-idx3-ubyte: values its header declares (4294967295x4294967295x4294967295)"),
    ("npz deflate bomb", "train --data {files}/bomb.npz --out {tmp}/f",
     "{files}/bomb.npz: x.npy values (shape (50331648, 8, 8)): 3,221,225,472 exceeds the limit"),
    ("npz too many classes", "train --data {files}/classes.npz --out {tmp}/g",
     "{files}/classes.npz: distinct labels: 100,001 exceeds the limit of 100,000 (classes)"),
    ("npz 0-d arrays", "train --data {files}/scalar.npz --out {tmp}/h", "{files}/scalar.npz: x has shape ()"),
    ("npz huge pixels", "train --data {files}/huge.npz --out {tmp}/i", "{files}/huge.npz: x: pixel values reach 1e+30"),
    ("npz random bytes", "train --data {files}/noise.npz --out {tmp}/j", "{files}/noise.npz: not an NPZ file"),
    ("npz of objects", "evaluate {run} --data {files}/objects.npz", "{files}/objects.npz: x.npy holds Python objects"),
    ("csv field over csv's limit", "train --data {files}/long.csv --out {tmp}/k",
     "{files}/long.csv: line 2 holds a field longer than 131,072 characters"),
    ("csv of binary", "train --data {files}/binary.csv --out {tmp}/l", "{files}/binary.csv: not a UTF-8 text CSV"),
    ("cifar meta is a folder", "train --data {files}/cifar --out {tmp}/m",
     "{files}/cifar/batches.meta.txt: is a folder, expected a file"),
    ("data /dev/null", "train --data /dev/null --out {tmp}/n", "/dev/null: not a regular file or folder"),
    ("data empty", "train --data '' --out {tmp}/o", "the data path is empty"),
    ("folder truncated image", "train --data {files}/broken --out {tmp}/p",
     "{files}/broken/b/3.png: unreadable or truncated image"),
    ("stream truncated image", "train --data {files}/broken --stream --out {tmp}/q",
     "{files}/broken/b/3.png: unreadable or truncated image"),
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
    labels = (0x801).to_bytes(4, "big") + (70_000).to_bytes(4, "big") + bytes(70_000)
    (bomb / "train-labels-idx1-ubyte.gz").write_bytes(gzip.compress(labels))  # named as the images are
    (folder / "overflow").mkdir()
    (folder / "overflow" / "train-images-idx3-ubyte").write_bytes(bytes.fromhex("00000803" + "ffffffff" * 3) + bytes(9))
    (folder / "overflow" / "train-labels-idx1-ubyte").write_bytes(bytes.fromhex("00000801" + "00000002") + bytes(2))

    def npy(shape: tuple, data: bytes) -> bytes:  # a uint8 .npy whose header declares `shape`, whatever it holds
        buffer = io.BytesIO()
        np.lib.format.write_array_header_1_0(buffer, {"descr": "|u1", "fortran_order": False, "shape": shape})
        return buffer.getvalue() + data

    with zipfile.ZipFile(folder / "bomb.npz", "w") as archive:  # the header of 3 GiB of pixels, as a deflate bomb's
        archive.writestr("x.npy", npy((50_331_648, 8, 8), bytes(64)))
        archive.writestr("y.npy", npy((50_331_648,), bytes(64)))
    np.savez_compressed(folder / "classes.npz", x=np.zeros((100_001, 1, 1), np.uint8), y=np.arange(100_001))
    np.savez(folder / "scalar.npz", x=np.array(5.0), y=np.array(1))
    np.savez(folder / "huge.npz", x=np.full((20, 4, 4), 1e30), y=np.arange(20) % 2)
    (folder / "noise.npz").write_bytes(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    np.savez(folder / "objects.npz", x=np.array([object()] * 2), y=np.array([0, 1]))
    (folder / "long.csv").write_text("label,p0,p1,p2,p3\n1,0," + "9" * 200_000 + ",3,4\n")
    (folder / "binary.csv").write_bytes(b"1,2,3,4,5\n\xff\xfe\x00\x81\n")
    (folder / "cifar").mkdir()
    (folder / "cifar" / "data_batch_1.bin").write_bytes(bytes(3073))
    (folder / "cifar" / "batches.meta.txt").mkdir()
    for name in (f"{c}/{i}.png" for c in "ab" for i in range(10)):  # 20 grey 8x8 images; b/3.png cut short
        (folder / "broken" / name).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.random.default_rng(0).integers(0, 256, (8, 8), np.uint8)).save(folder / "broken" / name)
    (folder / "broken" / "b" / "3.png").write_bytes((folder / "broken" / "b" / "3.png").read_bytes()[:60])


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
