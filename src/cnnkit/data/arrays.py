"""Array files: NPZ with `x` and `y` (no pickles), and CSV with a label column then pixel columns (Kaggle MNIST)."""

from __future__ import annotations

import csv
import io
import math
from pathlib import Path

import numpy as np
import torch

from cnnkit.data.dataset import ImageDataset, classes_from_labels
from cnnkit.data.safety import read_bytes
from cnnkit.errors import CnnkitError


def to_nchw(x: np.ndarray, path: Path) -> np.ndarray:
    """(N, H, W) grey, (N, H, W, C) or (N, C, H, W) with C in 1, 3 or 4 -> (N, C, H, W)."""
    if x.ndim == 3:
        return x[:, None]
    if x.ndim == 4 and x.shape[-1] in (1, 3, 4) and x.shape[1] not in (1, 3, 4):
        return x.transpose(0, 3, 1, 2)
    if x.ndim == 4 and x.shape[1] in (1, 3, 4):
        return x
    raise CnnkitError(
        f"{path}: x has shape {x.shape}; expected (N, H, W), (N, H, W, C) or (N, C, H, W) with C 1, 3 or 4"
    )


def labels_from(y: np.ndarray, path: Path) -> tuple[torch.Tensor, list[str]]:
    """Integer class indices and names from numeric or string labels."""
    if y.ndim != 1:
        raise CnnkitError(f"{path}: y has shape {y.shape}; expected one label per image")
    if y.dtype.kind in "iu" or (y.dtype.kind == "f" and np.all(np.isfinite(y)) and np.all(y == np.round(y))):
        labels = torch.tensor(y.astype(np.int64))
        if labels.numel() and labels.min() < 0:
            raise CnnkitError(f"{path}: negative label {int(labels.min())}")
        return labels, classes_from_labels(labels)
    if y.dtype.kind in "US":
        names = sorted({str(v) for v in y})
        return torch.tensor([names.index(str(v)) for v in y]), names
    raise CnnkitError(f"{path}: labels must be integers or strings; found dtype {y.dtype}")


def load_npz(path: Path) -> ImageDataset:
    """`x` (images) and `y` (labels); pickled object arrays are refused."""
    try:
        with np.load(io.BytesIO(read_bytes(path)), allow_pickle=False) as archive:
            if "x" not in archive or "y" not in archive:
                raise CnnkitError(f"{path}: an NPZ dataset needs arrays 'x' and 'y'; found {sorted(archive.files)}")
            x, y = archive["x"], archive["y"]
    except CnnkitError:
        raise
    except Exception as error:  # noqa: BLE001 - numpy/zipfile fail in many ways on hostile files
        raise CnnkitError(f"{path}: not a readable NPZ file without pickles ({type(error).__name__}: {error})") \
            from None
    if x.dtype.kind not in "uif" or not np.all(np.isfinite(x)):
        raise CnnkitError(f"{path}: x must hold finite numbers; found dtype {x.dtype}")
    if len(x) != len(y):
        raise CnnkitError(f"{path}: {len(x)} images but {len(y)} labels")
    labels, names = labels_from(np.asarray(y), path)
    images = torch.tensor(to_nchw(x, path), dtype=torch.float32)
    return ImageDataset(images, labels, names, source=str(path), pixel_max=pixel_max(images))


def load_csv(path: Path) -> ImageDataset:
    """First column the label, the rest pixels of a square grey image; a header row is detected and skipped."""
    try:
        text = read_bytes(path).decode("utf-8")
    except UnicodeDecodeError:
        raise CnnkitError(f"{path}: not a UTF-8 text CSV file") from None
    rows = list(csv.reader(io.StringIO(text)))
    rows = [r for r in rows if r]
    if rows and not _is_number(rows[0][0]):
        rows = rows[1:]  # header such as label,pixel0,pixel1,...
    if not rows:
        raise CnnkitError(f"{path}: no data rows")
    width = len(rows[0])
    side = math.isqrt(width - 1)
    if width < 2 or side * side != width - 1:
        raise CnnkitError(f"{path}: {width - 1} pixel columns do not form a square image")
    values = np.empty((len(rows), width), dtype=np.float32)
    for line, row in enumerate(rows, start=1):
        if len(row) != width:
            raise CnnkitError(f"{path}: data row {line} has {len(row)} columns, expected {width}")
        try:
            values[line - 1] = [float(v) for v in row]
        except ValueError:
            bad = next(v for v in row if not _is_number(v))
            raise CnnkitError(f"{path}: data row {line} holds a non-numeric value {bad[:20]!r}") from None
    if not np.all(np.isfinite(values)):
        raise CnnkitError(f"{path}: non-finite pixel or label values")
    labels, names = labels_from(values[:, 0], path)
    images = torch.tensor(values[:, 1:].reshape(-1, 1, side, side))
    return ImageDataset(images, labels, names, source=str(path), pixel_max=pixel_max(images))


def pixel_max(images: torch.Tensor) -> float:
    """White is 1.0 for arrays already in [0, 1], else 255."""
    return 1.0 if images.numel() and float(images.max()) <= 1.0 else 255.0


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True
