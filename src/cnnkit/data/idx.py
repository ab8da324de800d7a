"""MNIST IDX files (raw or .gz): images `*-images-idx3-ubyte`, labels `*-labels-idx1-ubyte`."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from cnnkit.data.dataset import ImageDataset, classes_from_labels
from cnnkit.data.safety import gunzip, read_bytes
from cnnkit.errors import CnnkitError

IMAGES_MAGIC, LABELS_MAGIC = 0x00000803, 0x00000801  # unsigned bytes, 3 and 1 dimensions


def read_idx(path: Path, magic: int) -> np.ndarray:
    """Parse one IDX file, checking its magic number and that its size matches its header."""
    data = read_bytes(path)
    if path.suffix == ".gz":
        data = gunzip(data, path)
    if len(data) < 4:
        raise CnnkitError(f"{path}: too short for an IDX header ({len(data)} bytes)")
    found = int.from_bytes(data[:4], "big")
    if found != magic:
        raise CnnkitError(f"{path}: wrong magic number 0x{found:08x}, expected 0x{magic:08x} for an IDX "
                          f"{'image' if magic == IMAGES_MAGIC else 'label'} file")
    ndim = magic & 0xFF
    header = 4 + 4 * ndim
    if len(data) < header:
        raise CnnkitError(f"{path}: truncated IDX header")
    shape = tuple(int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))
    count = int(np.prod(shape))
    if len(data) - header != count:
        raise CnnkitError(f"{path}: header promises {count} bytes of data for shape {shape}, file holds "
                          f"{len(data) - header}")
    return np.frombuffer(data, dtype=np.uint8, offset=header).reshape(shape)


def _pairs(root: Path) -> list[tuple[Path, Path]]:
    images = sorted(p for p in root.iterdir() if "-images-idx3-ubyte" in p.name or p.name.endswith("images.idx3-ubyte"))
    pairs = []
    for image_path in images:
        label_name = image_path.name.replace("images-idx3", "labels-idx1").replace("images.idx3", "labels.idx1")
        label_path = image_path.with_name(label_name)
        if not label_path.exists():
            raise CnnkitError(f"{image_path}: no matching label file {label_name} beside it")
        pairs.append((image_path, label_path))
    return pairs


def looks_like_idx(path: Path) -> bool:
    """True for an IDX image file or a folder holding one."""
    name_match = "idx3-ubyte" in path.name
    return name_match or (path.is_dir() and any("idx3-ubyte" in p.name for p in path.iterdir()))


def load_idx(path: Path) -> ImageDataset:
    """All image/label pairs of a folder (train and t10k together: cnnkit makes its own split), or one pair."""
    pairs = _pairs(path) if path.is_dir() else _pairs(path.parent)
    if not path.is_dir():
        pairs = [p for p in pairs if p[0] == path]
    if not pairs:
        raise CnnkitError(f"{path}: no *-images-idx3-ubyte file found")
    images, labels = [], []
    for image_path, label_path in pairs:
        x, y = read_idx(image_path, IMAGES_MAGIC), read_idx(label_path, LABELS_MAGIC)
        if len(x) != len(y):
            raise CnnkitError(f"{image_path}: {len(x)} images but {label_path.name} holds {len(y)} labels")
        images.append(x)
        labels.append(y)
    label_tensor = torch.tensor(np.concatenate(labels), dtype=torch.long)
    image_tensor = torch.tensor(np.concatenate(images), dtype=torch.float32).unsqueeze(1)
    return ImageDataset(image_tensor, label_tensor, classes_from_labels(label_tensor), source=str(path))
