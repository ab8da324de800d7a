"""`cnnkit explore`'s checkpoint comparison: each side equals its checkpoint loaded alone (cnnkit.load, torch forward
hooks), the changes equal NumPy's, and other networks, unknown names and bad requests are refused."""

import base64
import io

import numpy as np
import pytest
import torch
from starlette.testclient import TestClient

import cnnkit
from cnnkit.cli import main
from cnnkit.core.errors import CnnkitError
from cnnkit.explore.app import create_app
from cnnkit.explore.compare import Checkpoints
from cnnkit.explore.session import Explorer
from cnnkit.store.checkpoint import read_metadata


@pytest.fixture(scope="module")
def runs(tmp_path_factory, trained_run):
    """The session's 5-epoch digits_cnn run (read-only), a 1-epoch run of the same network and a 1-epoch run of a
    narrower one."""
    from cnnkit.train import TrainConfig, fit

    folder = tmp_path_factory.mktemp("compare")
    made = {"two": trained_run}
    for name, epochs, options in (("one", 1, {}), ("narrow", 1, {"width": 8})):
        made[name] = folder / name
        fit(TrainConfig(model="digits_cnn", epochs=epochs, model_options=options), out=made[name], progress=False,
            stream=io.StringIO())
    return made


@pytest.fixture(scope="module")
def client(runs):
    explorer = Explorer.open(str(runs["two"]))
    Checkpoints.attach(explorer, str(runs["two"]), [str(runs["one"])])
    with TestClient(create_app(explorer)) as test_client:
        yield test_client


def floats(blob: str, shape) -> np.ndarray:
    return np.frombuffer(base64.b64decode(blob), dtype="<f4").reshape(shape)


def post(client, body: dict) -> dict:
    response = client.post("/api/compare", json=body)
    assert response.status_code == 200, response.text
    return response.json()


def reference(path, display: np.ndarray, layer: str) -> dict:
    """Top-5, first-conv weights and a layer's output of one checkpoint loaded alone, for display pixels 0..255."""
    loaded = cnnkit.load(path)
    images = torch.tensor(display, dtype=torch.float32).reshape(1, 1, 8, 8) * (16.0 / 255)  # digits: white is 16
    top = loaded.predict(images, top_k=5)[0]["top"]
    seen = {}
    module = dict(loaded.model.named_modules())[layer]
    handle = module.register_forward_hook(lambda _m, _i, output: seen.setdefault("out", output.detach().clone()))
    with torch.no_grad():
        loaded.model(loaded.trained.preprocessing(images))
    handle.remove()
    return {"top": top, "weights": loaded.model.features[0].weight.detach().numpy(), "out": seen["out"][0].numpy()}


def change(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a, b = a.reshape(len(a), -1).astype(np.float64), b.reshape(len(b), -1).astype(np.float64)
    return np.linalg.norm(b - a, axis=1) / np.linalg.norm(a, axis=1)


def digit(index: int = 7) -> np.ndarray:
    from sklearn.datasets import load_digits

    return (load_digits().images[index] * 255 / 16).round().reshape(-1)


def test_listing_names_labels_defaults_and_same_epoch_note(runs, client):
    listed = client.get("/api/checkpoints").json()
    one = str(runs["one"] / "best")  # the 1-epoch run's last is its best: listed once
    assert [c["name"] for c in listed["checkpoints"]] == ["best", "last", one]
    for entry, path in zip(listed["checkpoints"], [runs["two"] / "best", runs["two"] / "last", runs["one"] / "best"],
                           strict=True):
        meta = read_metadata(path)
        assert entry["epoch"] == meta["epoch"]
        assert entry["label"].endswith(f"(epoch {meta['epoch']}, val {100 * meta['metrics']['val_accuracy']:.1f}%)")
    assert (listed["a"], listed["b"]) == (one, "best")  # the earliest vs the best
    same = read_metadata(runs["two"] / "best")["epoch"] == read_metadata(runs["two"] / "last")["epoch"]
    assert ("same epoch" in listed["note"]) == same
    assert listed["first_conv"] == "features.0" and listed["live"] is False


@pytest.mark.parametrize("layer, page", [("features.0", 0), ("features.0", 1), ("features.6", 0), ("head.2", 0)])
def test_each_side_equals_its_checkpoint_loaded_alone(runs, client, layer, page):
    pixels = digit()
    result = post(client, {"image": {"pixels": pixels.tolist()}, "a": str(runs["one"] / "best"), "b": "best",
                           "layer": layer, "page": page})
    model = cnnkit.load(runs["two"]).model
    unit_names = [n for n, _ in model.named_modules()]
    post_name = result["output"]  # the unit's last member (its activation), checked to follow `layer`
    assert unit_names.index(post_name) >= unit_names.index(layer)
    sides = {"a": reference(runs["one"] / "best", pixels, post_name), "b": reference(runs["two"] / "best", pixels,
                                                                                  post_name)}
    for side, expected in sides.items():
        shown = result[side]
        assert [t["class"] for t in shown["top"]] == [t["class"] for t in expected["top"]]
        assert [t["probability"] for t in shown["top"]] == pytest.approx([t["probability"] for t in expected["top"]],
                                                                         abs=1e-6)
        weights = floats(shown["filters"]["data"], shown["filters"]["shape"])
        np.testing.assert_allclose(weights, expected["weights"], rtol=0, atol=1e-7)
        if expected["out"].ndim == 1:
            np.testing.assert_allclose(floats(shown["maps"]["data"], shown["maps"]["size"]), expected["out"], atol=1e-5)
        else:
            first, count = 16 * page, shown["maps"]["count"]
            assert first == shown["maps"]["first"] and count == min(16, len(expected["out"]) - first)
            maps = floats(shown["maps"]["data"], (count, *shown["maps"]["size"]))
            np.testing.assert_allclose(maps, expected["out"][first:first + count], atol=1e-5)
    a, b = sides["a"], sides["b"]
    np.testing.assert_allclose(result["filters"]["change"], change(a["weights"], b["weights"]), rtol=1e-6)
    rows = (lambda x: x[None]) if a["out"].ndim == 1 else (lambda x: x)
    np.testing.assert_allclose(result["maps"]["change"], change(rows(a["out"]), rows(b["out"])), rtol=1e-4, atol=1e-6)
    assert result["maps"]["low"] == pytest.approx(min(a["out"].min(), b["out"].min()), abs=1e-6)
    assert result["maps"]["high"] == pytest.approx(max(a["out"].max(), b["out"].max()), abs=1e-6)
    both = np.concatenate([a["weights"].ravel(), b["weights"].ravel()])
    assert (result["filters"]["low"], result["filters"]["high"]) == pytest.approx((both.min(), both.max()), abs=1e-7)


def test_heldout_image_and_identical_checkpoints(runs, client):
    result = post(client, {"image": {"heldout": 3}, "a": "best", "b": "last", "layer": "features.3"})
    same = read_metadata(runs["two"] / "best")["epoch"] == read_metadata(runs["two"] / "last")["epoch"]
    assert (max(result["filters"]["change"]) == 0) == same
    assert (max(result["maps"]["change"]) == 0) == same


def test_another_network_is_refused_on_the_command_line(runs, capsys):
    assert main(["explore", str(runs["two"]), "--compare", str(runs["narrow"]), "--no-browser"]) == 2
    error = capsys.readouterr().err.strip()
    assert len(error.splitlines()) == 1
    assert f"--compare {runs['narrow']}" in error and str(runs["two"]) in error
    assert "width=8" in error and "width=24" in error
    assert main(["explore", str(runs["two"]), "--compare", str(runs["two"] / "nothing"), "--no-browser"]) == 2
    assert f"--compare {runs['two'] / 'nothing'}: no checkpoint here" in capsys.readouterr().err


@pytest.mark.parametrize("body, message", [
    ({"a": "nope", "b": "best", "layer": "features.0"}, "no checkpoint named 'nope'"),
    ({"a": "best", "b": "last", "layer": "features.99"}, "no layer named 'features.99'"),
    ({"a": "best", "b": "last", "layer": "features.0", "page": 5}, "page 5 is out of range"),
    ({"a": "best", "b": "last", "layer": "features.0", "extra": 1}, "extra: Extra inputs are not permitted"),
    ({"a": "best", "layer": "features.0"}, "b: Field required"),
])
def test_bad_requests_are_refused(client, body, message):
    response = client.post("/api/compare", json={"image": {"heldout": 0}, **body})
    assert response.status_code == 400 and message in response.json()["error"], response.text


class FakeTraining:
    """What `explore --train` hangs on the explorer: label -> state dict."""

    def __init__(self, states: dict, records: list[dict] | None = None) -> None:
        self.states, self.records = states, records or []

    def snapshots(self) -> dict:
        return self.states


def test_live_training_snapshots_are_listed_and_compared(runs):
    explorer = Explorer.open(str(runs["two"]))  # no attach: the snapshots alone
    one, two = cnnkit.load(runs["one"]), cnnkit.load(runs["two"])
    first, second = one.model.state_dict(), two.model.state_dict()  # as learn.py: 'best', 'latest' alias epochs
    explorer.training = FakeTraining({"epoch 1": first, "epoch 2": second, "best": second, "latest": second},
                                     [{"epoch": 1, "val_accuracy": 0.8}, {"epoch": 2, "val_accuracy": 0.9}])
    with TestClient(create_app(explorer)) as client:
        listed = client.get("/api/checkpoints").json()
        assert [c["label"] for c in listed["checkpoints"]] == [
            "training epoch 1 (val 80.0%)", "training epoch 2 (val 90.0%)", "training best (epoch 2, val 90.0%)",
            "training latest (epoch 2, val 90.0%)"]
        assert [c["epoch"] for c in listed["checkpoints"]] == [1, 2, 2, 2] and listed["live"] is True
        assert (listed["a"], listed["b"]) == ("training: epoch 1", "training: best")
        pixels = digit(11)
        result = post(client, {"image": {"pixels": pixels.tolist()}, "a": listed["a"], "b": listed["b"],
                               "layer": "features.0"})
        images = torch.tensor(pixels, dtype=torch.float32).reshape(1, 1, 8, 8) * (16.0 / 255)
        for side, loaded in (("a", one), ("b", two)):
            expected = loaded.predict(images, top_k=5)[0]["top"]
            assert [t["probability"] for t in result[side]["top"]] == pytest.approx(
                [t["probability"] for t in expected], abs=1e-6)
        narrow = cnnkit.load(runs["narrow"]).model.state_dict()
        explorer.training.states["epoch 3"] = narrow  # a snapshot of another network
        response = client.post("/api/compare", json={"image": {"heldout": 0}, "a": "training: epoch 3",
                                                     "b": listed["b"], "layer": "features.0"})
        assert response.status_code == 400 and "does not fit the explored network" in response.json()["error"]


def test_attach_refuses_another_network_for_a_registry_model(runs):
    explorer = Explorer.open("digits_cnn")  # fresh weights: no spec recorded, so tensor shapes decide
    Checkpoints.attach(explorer, "digits_cnn", [str(runs["one"])])
    assert [e.name for e in explorer.checkpoints.files] == [str(runs["one"] / "best")]
    with pytest.raises(CnnkitError, match=r"--compare .*narrow is digits_cnn \(dropout=0.2, width=8\)"):
        Checkpoints.attach(explorer, "digits_cnn", [str(runs["narrow"])])


def test_a_rewritten_checkpoint_is_relabelled_and_reloaded(runs, tmp_path):
    """A live run rewrites last (an atomic rename): the label and the weights compared follow the file, never a
    cached copy of the old one under the new label or the old label on the new weights."""
    import shutil

    from tests.conftest import copy_run

    run = copy_run(runs["two"], tmp_path)
    explorer = Explorer.open(str(run))
    Checkpoints.attach(explorer, str(run), [str(runs["one"])])
    pixels = digit(5)
    body = {"image": {"pixels": pixels.tolist()}, "a": "last", "b": "best", "layer": "features.0"}
    images = torch.tensor(pixels, dtype=torch.float32).reshape(1, 1, 8, 8) * (16.0 / 255)
    with TestClient(create_app(explorer)) as client:
        before = post(client, body)["a"]  # loads and caches last
        old = read_metadata(run / "last")
        assert before["label"].startswith(f"last (epoch {old['epoch']},")
        for suffix in (".safetensors", ".json"):  # another epoch's weights written over last, as a rename does
            shutil.copyfile(runs["one"] / f"best{suffix}", run / f"new{suffix}")
            (run / f"new{suffix}").replace(run / f"last{suffix}")
        new = read_metadata(run / "last")
        assert new["epoch"] == 1 != old["epoch"]
        listed = {c["name"]: c for c in client.get("/api/checkpoints").json()["checkpoints"]}
        assert listed["last"]["epoch"] == 1
        assert listed["last"]["label"] == f"last (epoch 1, val {100 * new['metrics']['val_accuracy']:.1f}%)"
        after = post(client, body)["a"]
        assert after["label"] == listed["last"]["label"]
        expected = cnnkit.load(runs["one"] / "best").predict(images, top_k=5)[0]["top"]
        assert [t["probability"] for t in after["top"]] == pytest.approx([t["probability"] for t in expected],
                                                                          abs=1e-6)


def test_a_checkpoint_whose_huge_weights_overflow_is_refused_naming_it(runs, tmp_path):
    """3e38 weights pass the load-time NaN/inf check; comparing them is a one-line 400, never a 500."""
    import json

    from safetensors.torch import save_file

    from cnnkit.store.checkpoint import META_KEY, load_checkpoint

    tensors, meta = load_checkpoint(runs["one"] / "best")
    tensors["model.head.2.weight"] = torch.full_like(tensors["model.head.2.weight"], 3e38)
    stem = tmp_path / "huge"
    save_file(tensors, f"{stem}.safetensors", metadata={META_KEY: json.dumps(meta)})
    explorer = Explorer.open(str(runs["two"]))
    Checkpoints.attach(explorer, str(runs["two"]), [str(stem)])
    with TestClient(create_app(explorer), raise_server_exceptions=False) as client:
        response = client.post("/api/compare", json={"image": {"pixels": [255.0] * 64}, "a": "best", "b": str(stem),
                                                     "layer": "features.0"})
        assert response.status_code == 400, response.text
        assert response.json()["error"] == (
            f"checkpoint {str(stem)!r}: the model's output for this image is not finite (inf/NaN): its weights are out "
            "of range (layer head.2 overflows first; its largest weight is 3e+38)")
        assert post(client, {"image": {"heldout": 0}, "a": "best", "b": "last", "layer": "features.0"})
