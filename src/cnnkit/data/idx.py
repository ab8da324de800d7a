"""MNIST IDX files (raw or .gz): images `*-images-idx3-ubyte`, labels `*-labels-idx1-ubyte`.

A folder holding both the `train-*` and the `t10k-*` pair keeps MNIST's own test set apart: its images are marked
`official_test` and become the test split.
"""

from __future__ import annotations

import gzip
import math
from contextlib import nullcontext
from pathlib import Path
from typing import BinaryIO

import numpy as np
import torch

from cnnkit.core.errors import CnnkitError
from cnnkit.core.limits import check_limit
from cnnkit.data.dataset import ImageDataset, index_labels, official_test_mask
from cnnkit.data.safety import file_size, reason

IMAGES_MAGIC, LABELS_MAGIC = 0x00000803, 0x00000801  # unsigned bytes, 3 and 1 dimensions
READ_CHUNK = 16 * 1024**2  # bytes inflated per read: a 1 GiB file never exists twice in memory


def read_idx(path: Path, magic: int) -> np.ndarray:
    """Parse one IDX file (raw or gzip), checking its magic number and that the size its header declares is within
    the caps before inflating or allocating it, then that the file holds exactly that much data."""
    size = file_size(path, what="an IDX file")
    compressed = path.suffix == ".gz"
    try:
        with path.open("rb") as raw, (gzip.GzipFile(fileobj=raw) if compressed else nullcontext(raw)) as stream:
            shape, header = _header(stream, path, magic)
            count = math.prod(shape)
            check_limit("array_elements", count, f"{path}: values its header declares ({'x'.join(map(str, shape))})")
            if compressed:
                check_limit("decompressed_bytes", header + count, f"{path}: inflated size in bytes")
            elif size - header != count:
                raise _size_error(path, count, shape, size - header)
            data = _read_exactly(stream, count, path, shape)
    except CnnkitError:
        raise
    except Exception as error:  # noqa: BLE001 - gzip/zlib fail in many ways on hostile files
        raise CnnkitError(f"{path}: not a readable {'gzip ' if compressed else ''}IDX file ({reason(error)})") \
            from None
    return data.reshape(shape)


def _header(stream: BinaryIO, path: Path, magic: int) -> tuple[tuple[int, ...], int]:
    """(shape, header bytes) after the magic number."""
    found = stream.read(4)
    if len(found) < 4:
        raise CnnkitError(f"{path}: too short for an IDX header ({len(found)} bytes)")
    if int.from_bytes(found, "big") != magic:
        raise CnnkitError(f"{path}: wrong magic number 0x{int.from_bytes(found, 'big'):08x}, expected "
                          f"0x{magic:08x} for an IDX {'image' if magic == IMAGES_MAGIC else 'label'} file")
    ndim = magic & 0xFF
    dims = stream.read(4 * ndim)
    if len(dims) < 4 * ndim:
        raise CnnkitError(f"{path}: truncated IDX header")
    shape = tuple(int.from_bytes(dims[4 * i: 4 * i + 4], "big") for i in range(ndim))
    if 0 in shape:
        raise CnnkitError(f"{path}: the header declares shape {shape}; every dimension must be at least 1")
    return shape, 4 + 4 * ndim


def _read_exactly(stream: BinaryIO, count: int, path: Path, shape: tuple[int, ...]) -> np.ndarray:
    """`count` bytes into one preallocated array, chunk by chunk; refuse a file holding fewer or more."""
    data = np.empty(count, dtype=np.uint8)
    view, done = memoryview(data), 0
    while done < count:
        chunk = stream.read(min(READ_CHUNK, count - done))
        if not chunk:
            raise _size_error(path, count, shape, done)
        view[done:done + len(chunk)] = chunk
        done += len(chunk)
    if stream.read(1):
        raise _size_error(path, count, shape, f"more than {count:,}")
    return data


def _size_error(path: Path, count: int, shape: tuple[int, ...], held: int | str) -> CnnkitError:
    held = f"{held:,}" if isinstance(held, int) else held
    return CnnkitError(f"{path}: header promises {count:,} bytes of data for shape {shape}, the file holds {held}")


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
    """All image/label pairs of a folder, or one pair; MNIST's `t10k-*` pair is marked as the official test set
    when the folder also holds training pairs."""
    pairs = _pairs(path) if path.is_dir() else [p for p in _pairs(path.parent) if p[0] == path]
    if not pairs:
        raise CnnkitError(f"{path}: no *-images-idx3-ubyte file found")
    images, labels = _read_pairs(pairs)
    check_limit("array_elements", sum(x.size for x in images), f"{path}: pixel values in all files")
    label_tensor, names = index_labels(np.concatenate(labels), str(path))
    is_test = [image_path.name.startswith("t10k") for image_path, _ in pairs]
    test_files = ", ".join(image_path.name for (image_path, _), test in zip(pairs, is_test, strict=True) if test)
    return ImageDataset(_as_float(images), label_tensor, names, source=str(path),
                        official_test=official_test_mask([len(y) for y in labels], is_test),
                        official_test_source=test_files)


def _read_pairs(pairs: list[tuple[Path, Path]]) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """uint8 images (n, H, W) and labels (n,) of each pair, checked to agree in count and image size."""
    images, labels = [], []
    for image_path, label_path in pairs:
        x = read_idx(image_path, IMAGES_MAGIC)
        y = read_idx(label_path, LABELS_MAGIC)
        if len(x) != len(y):
            raise CnnkitError(f"{image_path}: {len(x)} images but {label_path.name} holds {len(y)} labels")
        if images and x.shape[1:] != images[0].shape[1:]:
            raise CnnkitError(f"{image_path}: images are {x.shape[1]}x{x.shape[2]} but {pairs[0][0].name} holds "
                              f"{images[0].shape[1]}x{images[0].shape[2]}")
        images.append(x)
        labels.append(y)
    return images, labels


def _as_float(images: list[np.ndarray]) -> torch.Tensor:
    """(N, 1, H, W) float32 from uint8 (n, H, W) parts, filled part by part; the list is emptied so each part is
    freed once copied (uint8 stays uint8 until this one conversion)."""
    n, (h, w) = sum(len(x) for x in images), images[0].shape[1:]
    out, start = torch.empty((n, 1, h, w), dtype=torch.float32), 0
    while images:
        part = images.pop(0)
        out.numpy()[start:start + len(part), 0] = part  # numpy casts through small buffers: no float64 copy
        start += len(part)
    return out
