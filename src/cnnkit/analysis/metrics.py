"""Classification scores in NumPy: confusion matrix, per-class precision / recall / F1, their macro average.

They compute what scikit-learn's `confusion_matrix` and `precision_recall_fscore_support(..., zero_division=nan)`
do (tests/test_startup.py compares them), without its 1-2 s import at every `cnnkit evaluate`.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def confusion_matrix(true: np.ndarray, predicted: np.ndarray, classes: Sequence[int]) -> np.ndarray:
    """Counts (len(classes), len(classes)): row = true class, column = predicted class; pairs naming a value
    outside `classes` are left out."""
    position = {label: i for i, label in enumerate(classes)}
    rows = np.array([position.get(int(t), -1) for t in np.asarray(true)], dtype=np.int64)
    cols = np.array([position.get(int(p), -1) for p in np.asarray(predicted)], dtype=np.int64)
    kept = (rows >= 0) & (cols >= 0)
    size = len(classes)
    return np.bincount(rows[kept] * size + cols[kept], minlength=size * size).reshape(size, size)


def precision_recall_f1(true: np.ndarray, predicted: np.ndarray, classes: Sequence[int]
                        ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Per class of `classes`: precision tp / predicted, recall tp / true, F1 2 tp / (true + predicted), each NaN
    where its denominator is 0 (a class never predicted, or absent from the data), and the support (true count)."""
    true, predicted = np.asarray(true), np.asarray(predicted)
    labels = np.asarray(classes)[:, None]  # (K, 1) against (N,)
    is_true, is_predicted = true[None, :] == labels, predicted[None, :] == labels
    tp = (is_true & is_predicted).sum(axis=1)
    support, predicted_count = is_true.sum(axis=1), is_predicted.sum(axis=1)
    return (_divide(tp, predicted_count), _divide(tp, support), _divide(2.0 * tp, support + predicted_count),
            support)


def macro_average(true: np.ndarray, predicted: np.ndarray, classes: Sequence[int]) -> tuple[float, float, float]:
    """Unweighted means of precision, recall and F1 over `classes`, skipping the undefined (NaN) ones; NaN when
    none is defined."""
    precision, recall, f1, _ = precision_recall_f1(true, predicted, classes)
    return _nanmean(precision), _nanmean(recall), _nanmean(f1)


def _divide(numerator: np.ndarray, denominator: np.ndarray) -> np.ndarray:
    """numerator / denominator as floats, NaN where the denominator is 0."""
    result = np.full(len(denominator), np.nan)
    defined = denominator != 0
    result[defined] = numerator[defined].astype(np.float64) / denominator[defined]
    return result


def _nanmean(values: np.ndarray) -> float:
    """The mean of the values that are not NaN; NaN if there are none (and no warning)."""
    return float(np.nanmean(values)) if len(values) and not np.isnan(values).all() else float("nan")
