"""cnnkit's NumPy stratified split is scikit-learn's train_test_split(stratify=..., random_state=...), index for
index, and refuses exactly the inputs scikit-learn refuses."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sklearn.model_selection import train_test_split
from sklearn.utils.extmath import _approximate_mode

from cnnkit.core.errors import CnnkitError
from cnnkit.data.split import approximate_mode, shuffled_stratified_indices, stratified_split


def sklearn_cut(y: np.ndarray, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray] | str:
    """scikit-learn's (kept, held out) positions, or the message of its ValueError."""
    try:
        return tuple(train_test_split(np.arange(len(y)), test_size=fraction, stratify=y, random_state=seed))
    except ValueError as error:
        return str(error)


def ours(y: np.ndarray, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray] | str:
    try:
        return shuffled_stratified_indices(y, fraction, seed)
    except ValueError as error:
        return str(error)


def assert_same(y: np.ndarray, fraction: float, seed: int) -> None:
    expected, got = sklearn_cut(y, fraction, seed), ours(y, fraction, seed)
    if isinstance(expected, str):
        assert got == expected
        return
    assert not isinstance(got, str), got
    for e, g in zip(expected, got, strict=True):
        np.testing.assert_array_equal(g, e)  # same indices in the same order (the order feeds the second cut)
        assert g.dtype == e.dtype


def sklearn_split(labels: np.ndarray, val: float, test: float, seed: int) -> tuple[np.ndarray, ...]:
    """The split as cnnkit made it with scikit-learn (the code this replaced)."""
    index = np.arange(len(labels))

    def cut(part: np.ndarray, fraction: float, s: int) -> tuple[np.ndarray, np.ndarray]:
        if fraction == 0.0:
            return part, part[:0]
        return train_test_split(part, test_size=fraction, stratify=labels[part], random_state=s)

    rest, held = cut(index, test, seed)
    train, valid = cut(rest, val / (1.0 - test), seed + 1)
    return tuple(np.sort(p) for p in (train, valid, held))


labels_strategy = st.lists(st.integers(0, 6), min_size=2, max_size=300).map(lambda v: np.array(v, dtype=np.int64))


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(y=labels_strategy, fraction=st.floats(0.01, 0.99), seed=st.integers(0, 2**32 - 1))
def test_one_cut_matches_sklearn_for_any_labels(y, fraction, seed):
    assert_same(y, fraction, seed)


@settings(max_examples=200, deadline=None)
@given(counts=st.lists(st.integers(2, 40), min_size=1, max_size=12), fraction=st.floats(0.05, 0.6),
       seed=st.integers(0, 10_000), order=st.randoms(use_true_random=False))
def test_imbalanced_and_tiny_classes_match_sklearn(counts, fraction, seed, order):
    y = np.repeat(np.arange(len(counts)), counts)
    order.shuffle(y)
    assert_same(y, fraction, seed)


@pytest.mark.parametrize("seed", range(12))
@pytest.mark.parametrize(("val", "test"), [(0.1, 0.2), (0.0, 0.2), (0.1, 0.0), (0.3, 0.3), (0.05, 0.5)])
def test_whole_split_matches_sklearn_on_the_digits(seed, val, test):
    from sklearn.datasets import load_digits

    y = load_digits().target.astype(np.int64)
    split = stratified_split(torch.from_numpy(y), val, test, seed)
    for got, expected in zip((split.train, split.val, split.test), sklearn_split(y, val, test, seed), strict=True):
        np.testing.assert_array_equal(got.numpy(), expected)


@settings(max_examples=150, deadline=None)
@given(y=labels_strategy, val=st.sampled_from([0.0, 0.1, 0.25]), test=st.sampled_from([0.0, 0.2, 0.4]),
       seed=st.integers(0, 2**31))
def test_whole_split_matches_sklearn_or_both_refuse(y, val, test, seed):
    try:
        expected = sklearn_split(y, val, test, seed)
    except ValueError as error:
        with pytest.raises(CnnkitError) as refused:
            stratified_split(torch.from_numpy(y), val, test, seed)
        assert str(refused.value) == f"cannot split the data by class: {error}"
        return
    split = stratified_split(torch.from_numpy(y), val, test, seed)
    for got, e in zip((split.train, split.val, split.test), expected, strict=True):
        np.testing.assert_array_equal(got.numpy(), e)


def test_refusals_use_sklearn_words():
    cases = [(np.array([0, 0, 1]), 0.5), (np.array([0, 0, 1, 1, 2, 2]), 0.2), (np.array([0, 0, 1, 1, 2, 2]), 0.9),
             (np.array([0, 0]), 0.99), (np.zeros(0, dtype=np.int64), 0.5), (np.array([0, 1, 0, 1]), 1.0)]
    for y, fraction in cases:
        expected = sklearn_cut(y, fraction, 0) if fraction < 1 else None
        got = ours(y, fraction, 0)
        assert isinstance(got, str)
        if expected is not None:
            assert got == expected
    assert "range" in ours(np.array([0, 1, 0, 1]), 1.0, 0)


@settings(max_examples=300, deadline=None)
@given(counts=st.lists(st.integers(0, 50), min_size=1, max_size=10).filter(lambda c: sum(c) > 0),
       share=st.floats(0, 1), seed=st.integers(0, 2**32 - 1))
def test_approximate_mode_matches_sklearn(counts, share, seed):
    counts = np.array(counts)
    draws = int(share * counts.sum())
    expected = _approximate_mode(counts, draws, np.random.RandomState(seed))
    np.testing.assert_array_equal(approximate_mode(counts, draws, np.random.RandomState(seed)), expected)


def test_seed_out_of_range_is_refused():
    with pytest.raises(ValueError, match=r"0\.\.4294967295"):
        shuffled_stratified_indices(np.array([0, 0, 1, 1]), 0.5, 2**32)
