"""CIFAR-10 binary batches: records of 1 label byte + 3,072 pixel bytes (1,024 red, green, blue, row-major).

A folder holding both `data_batch_*.bin` and `test_batch.bin` keeps CIFAR-10's own test set apart: its images are
marked `official_test` and become the test split.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from cnnkit.core.errors import CnnkitError
from cnnkit.core.limits import check_limit
from cnnkit.data.dataset import ImageDataset, official_test_mask
from cnnkit.data.safety import file_size, read_bytes

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
    """Every batch in a folder, or one file; `test_batch*.bin` is the official test set beside training batches."""
    files = [path] if path.is_file() else sorted(p for p in path.iterdir() if p.suffix == ".bin" and "batch" in p.name)
    if not files:
        raise CnnkitError(f"{path}: no CIFAR-10 .bin batch files")
    records = sum(file_size(f, what="a CIFAR-10 .bin batch") // RECORD for f in files)
    check_limit("array_elements", records * (RECORD - 1), f"{path}: pixel values in {len(files)} batch files")
    images = torch.empty((records, 3, 32, 32), dtype=torch.float32)
    labels, start = [], 0
    for file in files:
        x, y = read_batch(file)
        images.numpy()[start:start + len(x)] = x  # one batch at a time: uint8 never held whole
        labels.append(torch.from_numpy(y.astype(np.int64)))
        start += len(x)
    is_test = [f.name.startswith("test_batch") for f in files]
    return ImageDataset(images[:start], torch.cat(labels), _class_names(path), source=str(path),
                        official_test=official_test_mask([len(y) for y in labels], is_test),
                        official_test_source=", ".join(f.name for f, test in zip(files, is_test, strict=True) if test))


def _class_names(path: Path) -> list[str]:
    """The ten names of `batches.meta.txt` beside the batches when it lists ten, else CIFAR-10's own."""
    meta = (path if path.is_dir() else path.parent) / "batches.meta.txt"
    if not meta.exists() and not meta.is_symlink():
        return CIFAR10_CLASSES
    text = read_bytes(meta, cap="text_bytes").decode("utf-8", errors="replace")
    listed = [line.strip() for line in text.splitlines() if line.strip()]
    return listed if len(listed) == 10 else CIFAR10_CLASSES
