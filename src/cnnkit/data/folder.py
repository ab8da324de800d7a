"""Image folders: one sub-folder per class holding PNG/JPEG/BMP/GIF files, grey or RGB.

Class names are the folder names exactly as they are on disk (`$x$`, spaces and all).
"""

from __future__ import annotations

import math
import sys
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from cnnkit.core.errors import CnnkitError
from cnnkit.core.limits import check_limit
from cnnkit.data.dataset import ImageDataset
from cnnkit.data.safety import IMAGE_SUFFIXES, decode_image, image_is_grey, inside

BAR_MIN_FILES = 500  # fewer images decode in a blink: no bar


def scan_folder(root: Path) -> tuple[list[tuple[Path, int]], list[str], list[Path]]:
    """(files with class indices, class names, skipped symlinks that lead outside `root`)."""
    if not root.is_dir():
        raise CnnkitError(f"{root}: no such folder")
    classes = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not classes:
        raise CnnkitError(f"{root}: no class sub-folders (expected ROOT/CLASS/IMAGE files)")
    check_limit("classes", len(classes), f"{root}: class folders")
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


def report_skipped(root: Path, skipped: list[Path]) -> None:
    """Say which symlinks were left out because they lead outside the folder."""
    for path in skipped:
        print(f"cnnkit: skipped {path}: it leads outside {root}", file=sys.stderr)


def check_same_size(first: tuple[Path, tuple[int, int]], path: Path, array: np.ndarray) -> None:
    """Refuse an image whose size differs from the folder's first one (without --image-size)."""
    if array.shape[1:] != first[1]:
        raise CnnkitError(f"mixed image sizes: {first[0]} is {first[1][0]}x{first[1][1]} but {path} is "
                          f"{array.shape[1]}x{array.shape[2]}; pass --image-size to resize them all")


def show_progress(progress: bool | None) -> bool:
    """Whether to draw a bar: as asked, or (None) only when stderr is a terminal, so logs hold no bar noise."""
    return sys.stderr.isatty() if progress is None else progress


def load_folder(root: Path, image_size: tuple[int, int] | None = None, progress: bool | None = None) -> ImageDataset:
    """Decode every image into memory; all must share one size unless `image_size` resizes them."""
    files, classes, skipped = scan_folder(root)
    report_skipped(root, skipped)
    grey = all(image_is_grey(path) for path, _ in files)
    first = decode_image(files[0][0], image_size, grey)
    check_limit("array_elements", len(files) * math.prod(first.shape), f"{root}: pixel values of {len(files):,} "
                f"{'x'.join(map(str, first.shape))} images")
    images = torch.empty((len(files), *first.shape), dtype=torch.float32)  # filled in place: no list, no stack
    bar = tqdm(files, desc="decoding images", disable=not show_progress(progress) or len(files) < BAR_MIN_FILES,
               leave=False, file=sys.stderr)
    for i, (path, _) in enumerate(bar):
        array = first if i == 0 else decode_image(path, image_size, grey)
        check_same_size((files[0][0], first.shape[1:]), path, array)
        images.numpy()[i] = array
    labels = torch.tensor([label for _, label in files], dtype=torch.long)
    names = [str(path.relative_to(root)) if path.is_relative_to(root) else str(path) for path, _ in files]
    return ImageDataset(images, labels, classes, source=str(root), item_names=names)
