"""The built-in dataset: scikit-learn's 1,797 8x8 handwritten digits (shipped with scikit-learn, offline).

The file is read here with NumPy, as `sklearn.datasets.load_digits` reads it, without importing scikit-learn
(its import costs 1-2 s at every start); tests/test_startup.py checks the arrays equal scikit-learn's own.
"""

from __future__ import annotations

import gzip
from importlib.util import find_spec
from pathlib import Path

import numpy as np
import torch

from cnnkit.core.errors import CnnkitError
from cnnkit.data.dataset import ImageDataset

DIGITS_FILE = ("datasets", "data", "digits.csv.gz")  # inside the scikit-learn package: 64 pixels, then the label


def digits_file() -> Path:
    """Where scikit-learn keeps the digits, found without importing it."""
    spec = find_spec("sklearn")
    if spec is None or not spec.submodule_search_locations:
        raise CnnkitError("the built-in digits ship with scikit-learn, which is not installed: pip install "
                          "scikit-learn")
    path = Path(next(iter(spec.submodule_search_locations)), *DIGITS_FILE)
    if not path.is_file():
        raise CnnkitError(f"the digits file of scikit-learn is missing: {path}; reinstall scikit-learn")
    return path


def load_digits_arrays() -> tuple[np.ndarray, np.ndarray]:
    """(images (1797, 8, 8) float64 0..16, labels (1797,) int), equal to `load_digits()`'s images and target."""
    with gzip.open(digits_file(), mode="rt", encoding="utf-8") as text:
        data = np.loadtxt(text, delimiter=",")
    return data[:, :-1].reshape(-1, 8, 8), data[:, -1].astype(int, copy=False)


def load_digits_dataset() -> ImageDataset:
    """(1797, 1, 8, 8) images with values 0..16, in the file order the article uses."""
    images, target = load_digits_arrays()
    return ImageDataset(torch.tensor(images, dtype=torch.float32).unsqueeze(1), torch.tensor(target, dtype=torch.long),
                        [str(i) for i in range(10)], source="digits", pixel_max=16.0)
