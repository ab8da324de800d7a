"""Fast start-up without changed answers: the digits and the scores in NumPy equal scikit-learn's, the recorded
models table equals the networks built, and the light commands import neither torch nor scikit-learn."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.datasets import load_digits
from sklearn.metrics import confusion_matrix as sk_confusion_matrix
from sklearn.metrics import precision_recall_fscore_support
from torch import nn

from cnnkit.analysis.metrics import confusion_matrix, macro_average, precision_recall_f1
from cnnkit.data.digits import load_digits_arrays, load_digits_dataset
from cnnkit.models import list_models, model_info, register_model
from cnnkit.models import registry as registry_module
from cnnkit.models.catalog import RECORDED, model_table
from cnnkit.models.stats import model_row
from tests.test_models import PUBLISHED

SRC = Path(__file__).resolve().parents[1] / "src"


def test_digits_equal_scikit_learns_own():
    reference = load_digits()
    images, target = load_digits_arrays()
    np.testing.assert_array_equal(images, reference.images)
    np.testing.assert_array_equal(target, reference.target)
    assert images.dtype == reference.images.dtype and target.dtype == reference.target.dtype
    dataset = load_digits_dataset()
    assert dataset.images.shape == (1797, 1, 8, 8) and float(dataset.images.max()) == 16.0
    np.testing.assert_array_equal(dataset.images.squeeze(1).numpy(), reference.images.astype(np.float32))
    np.testing.assert_array_equal(dataset.labels.numpy(), reference.target)


pairs = st.integers(1, 8).flatmap(lambda k: st.tuples(
    st.just(k), st.lists(st.tuples(st.integers(0, k - 1), st.integers(0, k - 1)), min_size=1, max_size=200)))


@settings(max_examples=300, deadline=None)
@given(pairs)
def test_scores_equal_scikit_learns(case):
    classes, rows = case
    true, predicted = (np.array(column, dtype=np.int64) for column in zip(*rows, strict=True))
    labels = list(range(classes))
    np.testing.assert_array_equal(confusion_matrix(true, predicted, labels),
                                  sk_confusion_matrix(true, predicted, labels=labels))
    ours = precision_recall_f1(true, predicted, labels)
    theirs = precision_recall_fscore_support(true, predicted, labels=labels, zero_division=np.nan)
    for got, expected in zip(ours, theirs, strict=True):
        np.testing.assert_array_equal(got, expected)  # NaN where undefined, in the same places; bit-equal floats
    present = sorted(set(true.tolist()))
    macro = precision_recall_fscore_support(true, predicted, labels=present, average="macro", zero_division=np.nan)
    np.testing.assert_array_equal(macro_average(true, predicted, present), macro[:3])


def test_scores_of_a_hand_example():
    # true 0 0 1 2, predicted 0 1 1 1: class 0 P 1/1 R 1/2; class 1 P 1/3 R 1/1; class 2 never predicted; class 3
    # absent and never predicted.
    true, predicted = np.array([0, 0, 1, 2]), np.array([0, 1, 1, 1])
    precision, recall, f1, support = precision_recall_f1(true, predicted, [0, 1, 2, 3])
    np.testing.assert_allclose(precision[:2], [1.0, 1 / 3])
    assert np.isnan(precision[2:]).all()
    np.testing.assert_allclose(recall[:3], [0.5, 1.0, 0.0])
    assert np.isnan(recall[3])
    np.testing.assert_allclose(f1[:3], [2 / 3, 0.5, 0.0])
    assert support.tolist() == [2, 1, 1, 0]
    assert confusion_matrix(true, predicted, [0, 1, 2, 3]).tolist() == [[1, 1, 0, 0], [0, 1, 0, 0], [0, 1, 0, 0],
                                                                         [0, 0, 0, 0]]
    np.testing.assert_allclose(macro_average(true, predicted, [0, 1, 2]), [(1 + 1 / 3) / 2, 0.5, (2 / 3 + 0.5) / 3])


def test_recorded_table_covers_the_registry_and_agrees_with_it():
    assert set(RECORDED) == set(list_models())
    for name, (_, _, input_size, classes, paper) in RECORDED.items():
        info = model_info(name)
        assert (info.input_size, info.num_classes, info.paper) == (input_size, classes, paper), name


@pytest.mark.parametrize("name", sorted(RECORDED))
def test_recorded_counts_equal_the_built_network(name):
    row = next(r for r in model_table() if r["name"] == name)
    assert row == model_row(name)  # counted from the network built on the meta device


@pytest.mark.parametrize("name", sorted(PUBLISHED))
def test_recorded_counts_equal_the_published_ones(name):
    assert RECORDED[name][0] == PUBLISHED[name]


def test_a_model_registered_at_run_time_is_counted():
    @register_model("startup_probe", paper="a probe", input_size=(1, 4, 4), num_classes=3)
    def probe(num_classes: int, in_channels: int, input_size: tuple[int, int]) -> nn.Module:
        model = nn.Module()
        model.features, model.head = nn.Flatten(), nn.Linear(in_channels * input_size[0] * input_size[1], num_classes)
        model.forward = lambda x: model.head(model.features(x))
        return model

    try:
        rows = {r["name"]: r for r in model_table()}
        assert rows["startup_probe"] == {"name": "startup_probe", "paper": "a probe", "parameters": 16 * 3 + 3,
                                         "inference_parameters": 51, "input_size": "1x4x4", "num_classes": 3}
    finally:
        registry_module._MODELS.pop("startup_probe")


def imported_by(code: str) -> set[str]:
    """The top-level packages a fresh interpreter holds after running `code`."""
    probe = f"{code}\nimport sys\nprint(' '.join(sorted({{m.split('.')[0] for m in sys.modules}})))"
    env = {**os.environ, "PYTHONPATH": str(SRC)}
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, env=env, check=True,
                          timeout=300)
    return set(done.stdout.split("\n")[-2].split())


def test_models_and_help_import_neither_torch_nor_sklearn():
    for argv in (["models"], ["models", "--json"], ["--help"], ["train", "--help"], ["evaluate", "--help"]):
        code = ("import contextlib, io\nfrom cnnkit.cli import main\nwith contextlib.redirect_stdout(io.StringIO()):\n"
                f"    try:\n        main({argv!r})\n    except SystemExit:\n        pass")
        loaded = imported_by(code)
        assert not loaded & {"torch", "sklearn", "scipy", "matplotlib", "PIL"}, (argv, loaded)


def test_model_package_imports_without_torch():
    assert "torch" not in imported_by("import cnnkit.models, cnnkit.models.catalog, cnnkit.models.registry")


def test_training_and_evaluation_paths_do_not_import_sklearn():
    code = ("import torch\nfrom cnnkit.data import load_source, stratified_split\n"
            "import cnnkit.train.loop, cnnkit.analysis.inference\n"
            "stratified_split(load_source('digits').labels, 0.1, 0.2, 0)")
    assert "sklearn" not in imported_by(code)
