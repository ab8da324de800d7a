"""Pick the reader for a data argument: 'digits', an image folder, IDX, CIFAR-10 binary, NPZ or CSV."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import torch

from cnnkit.core.errors import CnnkitError
from cnnkit.core.limits import check_limit
from cnnkit.data.arrays import load_csv, load_npz
from cnnkit.data.cifar import load_cifar, looks_like_cifar
from cnnkit.data.dataset import ImageDataset
from cnnkit.data.digits import load_digits_dataset
from cnnkit.data.folder import load_folder
from cnnkit.data.idx import load_idx, looks_like_idx
from cnnkit.data.resize import resize

EXPECTED = "expected 'digits', an image folder, IDX, CIFAR-10 .bin, .npz or .csv"
RESIZE_CHUNK_PIXELS = 2**24  # input pixels resized at once: the area filter's float64 sums stay small


def load_source(data: str, image_size: tuple[int, int] | None = None, progress: bool | None = None) -> ImageDataset:
    """Load a dataset into memory, resized to `image_size` (H, W) when given (area filter when shrinking).

    `progress` draws a bar while decoding image folders: None draws it only when stderr is a terminal.
    """
    return resize_images(_read(data, image_size, progress), image_size)


def _read(data: str, image_size: tuple[int, int] | None, progress: bool | None) -> ImageDataset:
    if data == "digits":
        return load_digits_dataset()
    if not data.strip():
        raise CnnkitError(f"the data path is empty ({data!r}); {EXPECTED}")  # Path("") would be the current folder
    path = Path(data)
    if not path.exists():
        raise CnnkitError(f"{data}: no such file or folder ({EXPECTED})")
    if path.is_dir():
        return _read_folder(path, image_size, progress)
    if not path.is_file():
        raise CnnkitError(f"{data}: not a regular file or folder (a device or pipe?); {EXPECTED}")
    suffix = path.suffix.lower()
    if suffix == ".npz":
        return load_npz(path)
    if suffix == ".csv":
        return load_csv(path)
    if looks_like_idx(path):
        return load_idx(path)
    if looks_like_cifar(path):
        return load_cifar(path)
    raise CnnkitError(f"{data}: unknown data file type {suffix or '(none)'}; expected .npz, .csv, IDX or .bin")


def _read_folder(path: Path, image_size: tuple[int, int] | None, progress: bool | None) -> ImageDataset:
    if looks_like_idx(path):
        return load_idx(path)
    if looks_like_cifar(path):
        return load_cifar(path)
    if not any(path.iterdir()):
        raise CnnkitError(f"{path}: the folder is empty")
    return load_folder(path, image_size, progress)


def resize_images(dataset: ImageDataset, image_size: tuple[int, int] | None) -> ImageDataset:
    """Resize an in-memory dataset when `image_size` differs from its own: an area (box) filter when shrinking,
    as TensorFlow's resize_area, bilinear when enlarging (the same filter image files get)."""
    if image_size is None or tuple(dataset.images.shape[2:]) == tuple(image_size):
        return dataset
    n, c, h, w = dataset.images.shape
    check_limit("array_elements", n * c * math.prod(image_size), f"{dataset.source}: pixel values of {n:,} images "
                f"resized to {image_size[0]}x{image_size[1]}")
    images = torch.empty((n, c, *image_size), dtype=torch.float32)
    step = max(1, RESIZE_CHUNK_PIXELS // (c * h * w))
    for start in range(0, n, step):
        images[start:start + step] = resize(dataset.images[start:start + step], image_size)
    return dataclasses.replace(dataset, images=images)

