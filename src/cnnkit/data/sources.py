"""Pick the reader for a data argument: 'digits', an image folder, IDX, CIFAR-10 binary, NPZ or CSV."""

from __future__ import annotations

from pathlib import Path

from cnnkit.data.arrays import load_csv, load_npz
from cnnkit.data.cifar import load_cifar, looks_like_cifar
from cnnkit.data.dataset import ImageDataset
from cnnkit.data.digits import load_digits_dataset
from cnnkit.data.folder import load_folder
from cnnkit.data.idx import load_idx, looks_like_idx
from cnnkit.errors import CnnkitError


def load_source(data: str, image_size: tuple[int, int] | None = None) -> ImageDataset:
    """Load a dataset into memory, resized to `image_size` (H, W) when given."""
    return resize_images(_read(data, image_size), image_size)


def _read(data: str, image_size: tuple[int, int] | None) -> ImageDataset:
    if data == "digits":
        return load_digits_dataset()
    path = Path(data)
    if not path.exists():
        raise CnnkitError(f"{data}: no such file or folder (expected 'digits', an image folder, IDX, CIFAR-10 "
                          ".bin, .npz or .csv)")
    if path.is_file():
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
    if looks_like_idx(path):
        return load_idx(path)
    if looks_like_cifar(path):
        return load_cifar(path)
    if not any(path.iterdir()):
        raise CnnkitError(f"{data}: the folder is empty")
    return load_folder(path, image_size)


def resize_images(dataset: ImageDataset, image_size: tuple[int, int] | None) -> ImageDataset:
    """Resize an in-memory dataset (bilinear, antialiased) when `image_size` differs from its own."""
    if image_size is None or tuple(dataset.images.shape[2:]) == tuple(image_size):
        return dataset
    import torch.nn.functional as F

    images = F.interpolate(dataset.images, size=image_size, mode="bilinear", antialias=True, align_corners=False)
    return ImageDataset(images, dataset.labels, dataset.class_names, dataset.source, dataset.pixel_max)
