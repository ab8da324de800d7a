"""The Python API used for real: list and build models, fit on the digits, load the run, predict, evaluate, summary."""

import json
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image
from sklearn.datasets import load_digits

import cnnkit
from cnnkit.cli import main


def test_import_cnnkit_and_the_help_load_neither_torch_nor_pydantic():
    probe = ("import sys, cnnkit\nfrom cnnkit.cli import main\ntry:\n    main(['--help'])\nexcept SystemExit:\n"
             "    pass\nprint(sorted(m for m in ('torch', 'pydantic') if m in sys.modules))")
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60)
    assert done.stdout.strip().splitlines()[-1] == "[]", done.stdout[-500:] + done.stderr[-500:]


def test_models_are_listed_and_built_as_plain_modules():
    assert {"digits_cnn", "resnet18", "vgg16"} <= set(cnnkit.list_models())
    resnet = cnnkit.get_model("resnet18")
    assert isinstance(resnet, torch.nn.Module)
    assert sum(p.numel() for p in resnet.parameters()) == 11_689_512  # torchvision's resnet18, ImageNet head
    small = cnnkit.get_model("resnet18", num_classes=10, width=16)
    assert small(torch.zeros(2, 3, 224, 224)).shape == (2, 10)
    with pytest.raises(cnnkit.CnnkitError, match="digits_cnn has no option 'depth'"):
        cnnkit.get_model("digits_cnn", depth=3)


@pytest.fixture(scope="module")
def fitted(tmp_path_factory):
    out = tmp_path_factory.mktemp("api") / "run"
    return cnnkit.fit(model="digits_cnn", epochs=2, out=out, verbose=False), out


def test_fit_trains_like_cnnkit_train_and_reports_the_best_epoch(fitted, capsys):
    result, out = fitted
    assert result.run_dir == out and (out / "best.safetensors").exists() and (out / "config.json").exists()
    assert 0.5 < result.test_accuracy <= 1.0  # 2 epochs of the digits recipe: measured 0.9+
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    scored = [r for r in records if "val_accuracy" in r]
    best = max(scored, key=lambda r: r["val_accuracy"])  # first of the highest: the run keeps the earlier
    assert result.best_epoch == best["epoch"] and result.best_val_accuracy == best["val_accuracy"]
    final = next(r["final"] for r in records if "final" in r)
    assert result.test_accuracy == final["test_accuracy"]
    config = json.loads((out / "config.json").read_text())
    assert config["epochs"] == 2 and config["model"] == "digits_cnn" and config["lr"] == cnnkit.TrainConfig().lr


def test_fit_logs_like_the_command_unless_quiet(tmp_path, capsys):
    capsys.readouterr()
    cnnkit.fit(epochs=1, verbose=False, test_fraction=0.5)
    assert capsys.readouterr().out == ""
    cnnkit.fit(epochs=1, test_fraction=0.5)
    assert "test accuracy" in capsys.readouterr().out


def test_fit_refuses_bad_settings_in_one_line():
    for settings, message in (({"lr": -1.0}, "lr must be a finite number above 0 and at most 1e6; received -1.0"),
                              ({"threads": 0}, "threads must be a whole number of threads between 1"),
                              ({"epochs": 0}, "epochs must be a whole number between 1 and 1,000,000; received 0"),
                              ({"freeze": "features"}, "freeze='features' keeps a checkpoint's features: it needs "
                                                       "init_from"),
                              ({"optimiser": "sgd"}, "optimiser: no such setting")):
        with pytest.raises(cnnkit.CnnkitError) as error:
            cnnkit.fit(verbose=False, **{"epochs": 1, **settings})
        # The fields the caller passed, not `cnnkit train`'s flags.
        assert str(error.value).startswith(message) and "--" not in str(error.value), error.value


def test_load_predicts_files_and_tensors_as_cnnkit_predict(fitted, tmp_path, capsys):
    _, out = fitted
    run = cnnkit.load(out)
    assert isinstance(run.model, torch.nn.Module) and not run.model.training
    digits = load_digits()
    pixels = np.clip(digits.images[:3] * 16, 0, 255).astype(np.uint8)  # the digits' 0..16 as 8-bit pixels
    Image.fromarray(pixels[0]).save(tmp_path / "digit.png")
    stored = torch.from_numpy(pixels.astype(np.float32) * 16 / 255).unsqueeze(1)  # back to the digits' 0..16
    np.save(tmp_path / "digits.npy", stored.numpy())
    capsys.readouterr()
    assert main(["predict", str(out), str(tmp_path / "digit.png"), str(tmp_path / "digits.npy"), "--json"]) == 0
    cli = json.loads(capsys.readouterr().out)
    from_file = run.predict(tmp_path / "digit.png", top_k=3)
    from_tensor = run.predict(stored, top_k=3)
    assert [p["class"] for p in from_file] == [cli[0]["class"]]
    np.testing.assert_allclose([t["probability"] for t in from_file[0]["top"]],
                               [t["probability"] for t in cli[0]["top"]], atol=1e-6)
    assert [p["class"] for p in from_tensor] == [c["class"] for c in cli[1:]]
    np.testing.assert_allclose([p["probability"] for p in from_tensor], [c["probability"] for c in cli[1:]], atol=1e-6)
    assert run.predict(stored[0])[0]["class"] == from_tensor[0]["class"]  # one (C, H, W) image
    assert len(run.predict(stored, top_k=5)[0]["top"]) == 5
    with pytest.raises(cnnkit.CnnkitError, match="the model expects 8x8"):
        run.predict(torch.zeros(1, 1, 9, 9))


def test_evaluate_equals_cnnkit_evaluate_json(fitted, capsys):
    result, out = fitted
    capsys.readouterr()
    assert main(["evaluate", str(out), "--json"]) == 0
    cli = json.loads(capsys.readouterr().out)
    assert cnnkit.load(out).evaluate() == cli
    assert cli["accuracy"] == pytest.approx(result.test_accuracy)  # the run's own test split, best weights


def test_summary_is_the_per_layer_table(fitted):
    _, out = fitted
    run = cnnkit.load(out)
    summary = run.summary()
    assert summary.totals["trainable"] == sum(p.numel() for p in run.model.parameters() if p.requires_grad)
    conv = next(m for m in run.model.modules() if isinstance(m, torch.nn.Conv2d))
    row = next(r for r in summary.rows if r.type == "Conv2d")
    out_channels, in_channels, kh, kw = conv.weight.shape  # by hand: a weight per tap, channel pair; a bias each
    assert row.trainable == out_channels * in_channels * kh * kw + (out_channels if conv.bias is not None else 0)
    assert row.macs == row.output_shape[-1] * row.output_shape[-2] * out_channels * in_channels * kh * kw
    assert row.name in summary.table()


def test_the_train_subpackage_is_not_shadowed():
    import cnnkit.train as package

    assert cnnkit.train is package and callable(cnnkit.fit) and cnnkit.TrainConfig is package.TrainConfig
    with pytest.raises(AttributeError):
        cnnkit.no_such_name  # noqa: B018


def test_wrong_argument_types_are_refused_in_one_line(fitted, tmp_path):
    """What the attack on the API found: no traceback from deep inside, no silent NaN, no truthy 'no'."""
    _, out = fitted
    run = cnnkit.load(out)
    before = (out / "last.safetensors").read_bytes()
    cases = [
        (lambda: run.predict(torch.full((1, 1, 8, 8), float("nan"))), "pixel values must be finite numbers"),
        (lambda: run.predict(np.array(["a", "b"])),
         "predict: the array: holds dtype <U1 (strings); expected pixel values as integers"),
        (lambda: run.predict(torch.zeros(0, 1, 8, 8)), "with N >= 1; received shape (0, 1, 8, 8)"),
        (lambda: run.predict([]), "the list of images is empty"),
        (lambda: run.predict(torch.zeros(1, 1, 8, 8), top_k="3"), "top_k must be a whole number of 1 or more"),
        (lambda: run.evaluate(top_k=0), "top_k must be a whole number of 1 or more; received 0"),
        (lambda: cnnkit.load(5), "path must be a path (str or pathlib.Path); received 5"),
        (lambda: cnnkit.fit(epochs=1, out=out, overwrite="no"), "overwrite must be True or False"),
        (lambda: cnnkit.get_model("digits_cnn", num_classes="10"), "num_classes must be a whole number"),
        # the head alone: (192 + 1) x 10^12 values (772 TB), refused on the meta device before anything is allocated
        (lambda: cnnkit.get_model("digits_cnn", num_classes=10**12), "parameter values: 193,000,000,037,228 exceeds"),
    ]
    for call, message in cases:
        with pytest.raises(cnnkit.CnnkitError) as refused:
            call()
        assert message in str(refused.value) and "\n" not in str(refused.value)
    assert (out / "last.safetensors").read_bytes() == before


def _plain(value) -> bool:
    """Whether a result holds only JSON's own Python types (no numpy or torch scalars)."""
    if isinstance(value, dict):
        return all(isinstance(k, str) and _plain(v) for k, v in value.items())
    if isinstance(value, list):
        return all(_plain(v) for v in value)
    return value is None or type(value) in (bool, int, float, str)


def test_evaluate_returns_plain_numbers_equal_to_sklearn(fitted, tmp_path):
    from sklearn.metrics import accuracy_score, confusion_matrix

    from cnnkit.data import stratified_split

    _, out = fitted
    run = cnnkit.load(out)
    digits = load_digits()
    config = json.loads((out / "config.json").read_text())
    test = stratified_split(torch.as_tensor(digits.target), config["val_fraction"], config["test_fraction"],
                            config["seed"]).test.numpy()
    x, y = digits.images[test], digits.target[test]
    predicted = [int(p["class"]) for p in run.predict(torch.from_numpy(x[:, None]).float())]
    for metrics in (run.evaluate(), run.evaluate(data=self_npz(tmp_path, x, y))):
        assert _plain(metrics) and json.loads(json.dumps(metrics)) == metrics
        assert type(metrics["accuracy"]) is float and metrics["accuracy"] == accuracy_score(y, predicted)
        assert type(metrics["count"]) is int and metrics["count"] == len(y)
        assert metrics["confusion_matrix"] == confusion_matrix(y, predicted, labels=range(10)).tolist()
        hits = metrics["top5_accuracy"] * len(y)
        assert hits == round(hits)  # an exact fraction of the images, not a float32 mean
    assert all(type(p["probability"]) is float for p in run.predict(torch.from_numpy(x[:2, None]).float()))
    assert run.predict(torch.from_numpy(x[:5, None] * 255 / 16).float(), white=255)[0]["class"] == str(predicted[0])
    with pytest.raises(cnnkit.CnnkitError, match=r"predict: the pixels: values reach 255, above white in the "
                                                 r"model's training scale \(0\.\.16\); pass white=255"):
        run.predict(torch.from_numpy(x[:5, None] * 255 / 16).float())


def self_npz(folder, x, y) -> str:
    """scikit-learn's digits written as an .npz data file (0..16, the scale the run was trained on)."""
    np.savez(folder / "test.npz", x=x, y=y)
    return str(folder / "test.npz")
