"""CIFAR-10 binary batches: records of 1 label byte + 3,072 pixel bytes (1,024 red, green, blue, row-major)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from cnnkit.data.dataset import ImageDataset
from cnnkit.data.safety import read_bytes
from cnnkit.errors import CnnkitError

RECORD = 1 + 3 * 32 * 32
CIFAR10_CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


def looks_like_cifar(path: Path) -> bool:
    """True for a .bin batch or a folder holding data_batch_*.bin / test_batch.bin."""
    if path.is_file():
        return path.suffix == ".bin"
    return path.is_dir() and any(p.suffix == ".bin" and "batch" in p.name for p in path.iterdir())


def read_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """(images (N, 3, 32, 32) uint8, labels (N,)) of one batch file."""
    data = read_bytes(path)
    if len(data) == 0 or len(data) % RECORD:
        raise CnnkitError(f"{path}: {len(data)} bytes is not a whole number of {RECORD}-byte CIFAR-10 records")
    records = np.frombuffer(data, dtype=np.uint8).reshape(-1, RECORD)
    labels = records[:, 0]
    if labels.max() >= 10:
        raise CnnkitError(f"{path}: label {int(labels.max())} out of range 0..9: not a CIFAR-10 binary batch")
    return records[:, 1:].reshape(-1, 3, 32, 32), labels


def load_cifar(path: Path) -> ImageDataset:
    """Every batch in a folder (training and test together: cnnkit makes its own split), or one file."""
    files = [path] if path.is_file() else sorted(p for p in path.iterdir() if p.suffix == ".bin" and "batch" in p.name)
    if not files:
        raise CnnkitError(f"{path}: no CIFAR-10 .bin batch files")
    batches = [read_batch(f) for f in files]
    names = CIFAR10_CLASSES
    meta = (path if path.is_dir() else path.parent) / "batches.meta.txt"
    if meta.exists():
        listed = [line.strip() for line in meta.read_text(errors="replace").splitlines() if line.strip()]
        if len(listed) == 10:
            names = listed
    images = torch.tensor(np.concatenate([b[0] for b in batches]), dtype=torch.float32)
    labels = torch.tensor(np.concatenate([b[1] for b in batches]), dtype=torch.long)
    return ImageDataset(images, labels, names, source=str(path))
