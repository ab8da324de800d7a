"""Deterministic stratified train/validation/test splits."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from sklearn.model_selection import train_test_split

from cnnkit.core.errors import CnnkitError


@dataclass
class Split:
    """Index tensors into a dataset, each sorted so file order survives within a split."""

    train: torch.Tensor
    val: torch.Tensor
    test: torch.Tensor


def stratified_split(labels: torch.Tensor, val_fraction: float, test_fraction: float, seed: int) -> Split:
    """Split indices so each part keeps the class proportions; the same seed gives the same split."""
    for name, value in (("val_fraction", val_fraction), ("test_fraction", test_fraction)):
        if not 0.0 <= value < 1.0:
            raise CnnkitError(f"{name} must be in [0, 1); received {name}={value}")
    if val_fraction + test_fraction >= 1.0:
        raise CnnkitError(f"val_fraction + test_fraction must leave training data; received {val_fraction} + "
                          f"{test_fraction}")
    y = labels.numpy()
    index = np.arange(len(y))
    try:
        rest, test = _cut(index, y, test_fraction, seed)
        train, val = _cut(rest, y[rest], val_fraction / (1.0 - test_fraction), seed + 1)
    except ValueError as error:
        raise CnnkitError(f"cannot split the data by class: {error}") from None
    return Split(*(torch.from_numpy(np.sort(part)) for part in (train, val, test)))


def _cut(index: np.ndarray, y: np.ndarray, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    if fraction == 0.0:
        return index, index[:0]
    return train_test_split(index, test_size=fraction, stratify=y, random_state=seed)
