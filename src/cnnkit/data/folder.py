"""Image folders: one sub-folder per class holding PNG/JPEG/BMP/GIF files, grey or RGB."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from cnnkit.data.dataset import ImageDataset
from cnnkit.data.safety import IMAGE_SUFFIXES, decode_image, image_is_grey, inside
from cnnkit.errors import CnnkitError


def scan_folder(root: Path) -> tuple[list[tuple[Path, int]], list[str], list[Path]]:
    """(files with class indices, class names, skipped symlinks that lead outside `root`)."""
    if not root.is_dir():
        raise CnnkitError(f"{root}: no such folder")
    classes = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not classes:
        raise CnnkitError(f"{root}: no class sub-folders (expected ROOT/CLASS/IMAGE files)")
    files, skipped = [], []
    for index, name in enumerate(classes):
        class_dir = root / name
        if not inside(root, class_dir):
            skipped.append(class_dir)
            continue
        found = []
        for path in sorted(class_dir.rglob("*")):
            if path.suffix.lower() not in IMAGE_SUFFIXES or path.name.startswith("."):
                continue
            if not inside(root, path):
                skipped.append(path)
                continue
            if path.is_file():
                found.append((path, index))
        if not found:
            raise CnnkitError(f"{class_dir}: class folder holds no images ({', '.join(IMAGE_SUFFIXES)})")
        files += found
    return files, classes, skipped


def load_folder(root: Path, image_size: tuple[int, int] | None = None, progress: bool = True) -> ImageDataset:
    """Decode every image into memory; all must share one size unless `image_size` resizes them."""
    files, classes, skipped = scan_folder(root)
    for path in skipped:
        print(f"cnnkit: skipped {path}: it leads outside {root}", file=sys.stderr)
    grey = all(image_is_grey(path) for path, _ in files)
    arrays, first = [], None
    for path, _ in tqdm(files, desc="decoding images", disable=not progress or len(files) < 500, leave=False):
        array = decode_image(path, image_size, grey)
        if first is None:
            first = (path, array.shape[1:])
        elif array.shape[1:] != first[1]:
            raise CnnkitError(f"mixed image sizes: {first[0].name} is {first[1][0]}x{first[1][1]} but {path.name} is "
                              f"{array.shape[1]}x{array.shape[2]}; pass --image-size to resize them all")
        arrays.append(array)
    images = torch.from_numpy(np.stack(arrays)).float()
    labels = torch.tensor([label for _, label in files], dtype=torch.long)
    return ImageDataset(images, labels, classes, source=str(root))
