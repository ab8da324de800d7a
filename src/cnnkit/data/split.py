"""Deterministic stratified train/validation/test splits.

The split is scikit-learn's `train_test_split(index, test_size=f, stratify=y, random_state=seed)` (one draw of
StratifiedShuffleSplit) written in NumPy, index for index: the same NumPy RandomState calls in the same order, so
every split recorded with scikit-learn is reproduced without importing it (1-2 s at every start).
tests/test_split_reference.py holds it against scikit-learn itself.
"""

from __future__ import annotations

from dataclasses import dataclass
from math import ceil

import numpy as np
import torch

from cnnkit.core.errors import CnnkitError

SEED_LIMIT = 2**32 - 1  # NumPy's RandomState (and scikit-learn's random_state) take seeds 0..2^32-1


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
    train, test = shuffled_stratified_indices(y, fraction, seed)
    return index[train], index[test]


def shuffled_stratified_indices(y: np.ndarray, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(kept, held out) positions of `y`, ceil(fraction * n) held out, drawn as scikit-learn's
    `train_test_split(..., stratify=y, random_state=seed)` draws them; its refusals are ValueErrors with its words."""
    n_train, n_test = _sizes(len(y), fraction)
    if not 0 <= seed <= SEED_LIMIT:
        raise ValueError(f"the seed must be a whole number in 0..{SEED_LIMIT}; received {seed}")
    classes, y_indices, class_counts = np.unique(y, return_inverse=True, return_counts=True)
    _check_classes(classes, class_counts, n_train, n_test)
    # Each class's positions in order: a stable sort keeps file order within a class.
    class_indices = np.split(np.argsort(y_indices, kind="stable"), np.cumsum(class_counts)[:-1])
    rng = np.random.RandomState(seed)
    n_i = approximate_mode(class_counts, n_train, rng)
    t_i = approximate_mode(class_counts - n_i, n_test, rng)
    train, test = [], []
    for members, kept, held in zip(class_indices, n_i, t_i, strict=True):
        shuffled = members[rng.permutation(len(members))]
        train.extend(shuffled[:kept])
        test.extend(shuffled[kept:kept + held])
    return rng.permutation(train), rng.permutation(test)


def _sizes(n_samples: int, fraction: float) -> tuple[int, int]:
    """(kept, held out) counts: ceil(fraction * n) held out, as scikit-learn's `_validate_shuffle_split`."""
    if not 0.0 < fraction < 1.0:
        raise ValueError(f"test_size={fraction} should be either positive and smaller than the number of samples "
                         f"{n_samples} or a float in the (0, 1) range")
    n_test = ceil(fraction * n_samples)
    n_train = n_samples - n_test
    if n_train == 0:
        raise ValueError(f"With n_samples={n_samples}, test_size={fraction} and train_size=None, the resulting train "
                         "set will be empty. Adjust any of the aforementioned parameters.")
    return n_train, n_test


def _check_classes(classes: np.ndarray, counts: np.ndarray, n_train: int, n_test: int) -> None:
    """Refuse a class of one member, or parts too small to hold every class (scikit-learn's checks and words)."""
    if np.min(counts) < 2:
        raise ValueError("The least populated classes in y have only 1 member, which is too few. The minimum number "
                         "of groups for any class cannot be less than 2. Classes with too few members are: "
                         f"{classes[counts < 2].tolist()}")
    for part, size in (("train", n_train), ("test", n_test)):
        if size < len(classes):
            raise ValueError(f"The {part}_size = {size} should be greater or equal to the number of classes = "
                             f"{len(classes)}")


def approximate_mode(class_counts: np.ndarray, n_draws: int, rng: np.random.RandomState) -> np.ndarray:
    """How many of `n_draws` each class gets: its floored share, then one more for the largest remainders, ties
    broken by `rng` (scikit-learn's `_approximate_mode`, the same calls in the same order)."""
    continuous = class_counts / class_counts.sum() * n_draws
    floored = np.floor(continuous)
    need_to_add = int(n_draws - floored.sum())
    if need_to_add > 0:
        remainder = continuous - floored
        for value in np.sort(np.unique(remainder))[::-1]:
            (tied,) = np.where(remainder == value)
            add_now = min(len(tied), need_to_add)
            floored[rng.choice(tied, size=add_now, replace=False)] += 1
            need_to_add -= add_now
            if need_to_add == 0:
                break
    return floored.astype(int)
