"""evaluate, predict, models, summary, explain, visualize and report on real checkpoints and registry models."""

import json
import re
import shutil
import subprocess

import numpy as np
import pytest
from PIL import Image

from cnnkit.analysis.explain import explain_window
from cnnkit.analysis.inference import evaluate_trained, evaluation_data, load_trained, predict, read_image_files
from cnnkit.analysis.summary import summarize
from cnnkit.cli import main
from cnnkit.models import get_model, list_models


@pytest.fixture
def run_dir(trained_run):
    """The session's trained default run with TensorBoard logs (tests/conftest.py), read-only."""
    return trained_run


def test_summary_of_digitsnet_by_hand():
    rows = {r.name: r for r in summarize(get_model("digitsnet"), (1, 8, 8)).rows}
    conv1, conv2, bn, pool = (rows[f"features.{n}"] for n in ("conv1", "conv2", "bn2", "pool2"))
    fc1, out = rows["head.fc1"], rows["head.out"]
    assert (conv1.trainable, conv1.macs, conv1.output_shape) == (100, 8 * 8 * 10 * 3 * 3, [10, 8, 8])
    assert (conv2.trainable, conv2.macs, conv2.output_shape) == (455, 4 * 4 * 5 * 3 * 3 * 10, [5, 4, 4])
    assert (bn.trainable, bn.non_trainable) == (10, 10)  # gamma/beta; population mean/variance
    assert (fc1.trainable, fc1.macs, out.trainable, out.macs) == (1_050, 20 * 50, 510, 50 * 10)
    assert conv1.formula == "(3*3*1+1)*10 = 100" and fc1.formula == "(20+1)*50 = 1,050"
    # Receptive fields: 3 (conv1), 3 + 2*1 = 5 with jump 2 (conv2), 5 + 2*2 = 9 with jump 4 (pool2).
    assert [(r.receptive_field, r.jump) for r in (conv1, conv2, pool)] == [(3, 1), (5, 2), (9, 4)]
    assert "features.pool1" not in rows  # the article's dead layer never runs


def test_summary_totals_match_torch_and_resnet18_arithmetic():
    model = get_model("resnet18", input_size=224)
    summary = summarize(model, (3, 224, 224))
    assert summary.totals["trainable"] == sum(p.numel() for p in model.parameters()) == 11_689_512
    bn_buffers = sum(m.running_mean.numel() * 2 for m in model.modules() if hasattr(m, "running_mean"))
    assert summary.totals["non_trainable"] == bn_buffers
    assert abs(summary.totals["macs"] / 1e9 - 1.8) < 0.05  # the paper's 1.8 GFLOPs
    # Receptive field along the main path: 7x7/2 stem -> 7 (jump 2); 3x3/2 pool -> 11 (jump 4); four 3x3 -> 43;
    # then each later stage: a strided 3x3 (field + 2*jump, jump doubles) and three more 3x3 convs.
    rf, jump = 7, 2
    rf, jump = rf + 2 * jump, jump * 2
    rf += 4 * 2 * jump
    for _ in range(3):
        rf, jump = rf + 2 * jump, jump * 2
        rf += 3 * 2 * jump
    assert rf == 435
    last_conv = [r for r in summary.rows if r.type == "Conv2d"][-1]
    assert (last_conv.receptive_field, last_conv.jump) == (435, 32)


def test_predict_one_image_alone_equals_in_batch_and_png_roundtrip(run_dir, tmp_path):
    trained = load_trained(run_dir)
    images, labels, _ = evaluation_data(trained, None)
    batch = predict(trained, images[:20])
    alone = [predict(trained, images[i:i + 1])[0] for i in range(20)]
    assert [b["class"] for b in batch] == [a["class"] for a in alone]
    assert all(abs(b["probability"] - a["probability"]) < 1e-5 for a, b in zip(alone, batch, strict=True))
    # The same digits as 8-bit PNG files (0..16 scaled to 0..255) get the same answers.
    paths = []
    for i in range(5):
        path = tmp_path / f"d{i}.png"
        Image.fromarray((images[i, 0].numpy() * 255 / 16).round().astype(np.uint8)).save(path)
        paths.append(path)
    from_files = predict(trained, read_image_files(paths, trained))
    assert [r["class"] for r in from_files] == [b["class"] for b in batch[:5]]
    top = [t["probability"] for t in batch[0]["top"]]
    assert len(top) == 3 and top == sorted(top, reverse=True) and top[0] == batch[0]["probability"]
    every_class = predict(trained, images[:1], top_k=10)[0]["top"]  # all ten classes: a distribution
    assert abs(sum(t["probability"] for t in every_class) - 1) < 1e-5
    assert [t["probability"] for t in every_class[:3]] == pytest.approx(top, abs=1e-6)


def test_evaluate_metrics_are_consistent(run_dir):
    trained = load_trained(run_dir)
    images, labels, _ = evaluation_data(trained, None)
    metrics = evaluate_trained(trained, images, labels)
    confusion = np.array(metrics["confusion_matrix"])
    assert confusion.sum() == metrics["count"] == 360
    assert metrics["accuracy"] == pytest.approx(np.trace(confusion) / confusion.sum())
    recall = [c["recall"] for c in metrics["per_class"]]
    np.testing.assert_allclose(recall, np.diag(confusion) / confusion.sum(1))
    assert metrics["top5_accuracy"] >= metrics["accuracy"]
    assert metrics["macro_average"]["recall"] == pytest.approx(np.mean(recall))
    # Data holding only classes 0-2: the other classes' recall is undefined, not 0, and the averages skip them.
    some = labels < 3
    subset = evaluate_trained(trained, images[some], labels[some])
    confusion = np.array(subset["confusion_matrix"])
    assert [c["recall"] for c in subset["per_class"][3:]] == [None] * 7
    expected = np.diag(confusion)[:3] / confusion.sum(1)[:3]
    assert subset["macro_average"]["recall"] == pytest.approx(expected.mean())
    assert subset["macro_average"]["classes"] == 3


def test_cli_evaluate_predict_summary_models(run_dir, tmp_path, capsys):
    assert main(["evaluate", str(run_dir), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["count"] == 360 and len(report["per_class"]) == 10
    np.save(tmp_path / "x.npy", np.zeros((8, 8), dtype=np.float32))
    assert main(["predict", str(run_dir), str(tmp_path / "x.npy"), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)[0]["input"].endswith("x.npy")
    assert main(["predict", str(run_dir), "--top-k", "2", str(tmp_path / "x.npy"), "--json"]) == 0  # files last
    assert len(json.loads(capsys.readouterr().out)[0]["top"]) == 2
    Image.fromarray(np.zeros((29, 13), dtype=np.uint8)).save(tmp_path / "tall.png")
    assert main(["predict", str(run_dir), str(tmp_path / "tall.png"), str(tmp_path / "x.npy"), "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert "13x29 image was stretched to the model's 8x8" in rows[0]["note"] and "note" not in rows[1]
    with pytest.raises(SystemExit) as exited:
        main(["predict", str(run_dir), str(tmp_path / "x.npy"), "--bogus"])
    assert exited.value.code == 2
    assert capsys.readouterr().err.startswith("cnnkit predict: error: unrecognized arguments: --bogus")
    np.save(tmp_path / "rgb.npy", np.zeros((3, 8, 8), dtype=np.float32))
    assert main(["predict", str(run_dir), str(tmp_path / "rgb.npy")]) == 2
    assert "the model expects (N, 1, 8, 8) (1 channel(s))" in capsys.readouterr().err
    assert main(["summary", "digitsnet", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["totals"]["trainable"] == 2_125
    assert main(["summary", str(run_dir)]) == 0
    held = sum(p.numel() for p in load_trained(run_dir).model.parameters())  # what PyTorch actually holds
    assert f"trainable parameters {held:,}" in capsys.readouterr().out
    assert main(["models", "--json"]) == 0
    rows = {r["name"]: r for r in json.loads(capsys.readouterr().out)}
    assert set(rows) == set(list_models()) and rows["lenet5"]["parameters"] == 60_000


def test_explain_numbers_and_pictures(tmp_path, capsys):
    info = explain_window("conv", (5, 5), 2, 2, "same")
    assert (info["pad_top"], info["pad_bottom"], info["pad_left"], info["pad_right"]) == (0, 1, 0, 1)
    assert info["output"] == [3, 3]
    assert explain_window("pool", (7, 6), 3, 2, "valid")["output"] == [3, 2]
    assert main(["explain", "conv", "--input", "5x5", "--kernel", "2", "--stride", "2", "--gif",
                 "--out", str(tmp_path / "scan.gif")]) == 0
    assert "split 0 before / 1 after" in capsys.readouterr().out
    with Image.open(tmp_path / "scan.gif") as gif:
        assert gif.n_frames == 9  # one frame per output cell
    assert main(["explain", "pool", "--input", "2x2", "--kernel", "3", "--padding", "valid"]) == 2
    assert "larger than the VALID input" in capsys.readouterr().err


def test_visualize_files_and_errors(run_dir, tmp_path, capsys):
    image = tmp_path / "digit.png"
    Image.fromarray(np.zeros((8, 8), dtype=np.uint8)).save(image)
    assert main(["visualize", str(run_dir), "--image", str(image), "--layers", "features.0,features.7",
                 "--out", str(tmp_path / "vis")]) == 0
    names = sorted(p.name for p in (tmp_path / "vis").iterdir())
    assert names == ["filters.png", "maps_features_0.png", "maps_features_7.png"]  # no doubled prefixes
    with Image.open(tmp_path / "vis" / "filters.png") as png:
        assert png.size[0] > 200
    assert main(["visualize", str(run_dir), "--image", str(image), "--layers", "conv9",
                 "--out", str(tmp_path / "bad")]) == 2
    assert "no layer named 'conv9'; layers: features, features.0" in capsys.readouterr().err
    assert not (tmp_path / "bad").exists()  # a bad request writes nothing
    assert main(["visualize", "resnet18", "--image", str(image), "--out", str(tmp_path / "rv")]) == 0  # RGB model
    assert (tmp_path / "rv" / "filters.png").exists()


def test_tensorboard_logs_were_written(run_dir):
    assert list((run_dir / "tensorboard").glob("events.out.tfevents.*"))


def test_report_renders_in_headless_chromium(run_dir, tmp_path):
    assert main(["report", str(run_dir), "--out", str(tmp_path / "report.html")]) == 0
    page = (tmp_path / "report.html").read_text()
    assert page.count("<img") == len(re.findall(r'src="data:image/png;base64,', page)) >= 6
    assert "http://" not in page and "https://" not in page  # self-contained
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    assert browser, "the report test needs Debian's chromium (apt-get install chromium); .ci/run installs it"
    probe = ("<script>window.__errors=0;window.addEventListener('error',()=>window.__errors++,true);"
             "const e=console.error;console.error=(...a)=>{window.__errors++;e(...a)};"
             "window.addEventListener('load',()=>{const i=[...document.images];"
             "document.title='IMAGES '+i.filter(x=>x.complete&&x.naturalWidth>0).length+'/'+i.length+"
             "' ERRORS '+window.__errors;});</script>")
    (tmp_path / "probe.html").write_text(page.replace("<head>", "<head>" + probe, 1))
    done = subprocess.run([browser, "--headless", "--no-sandbox", "--disable-gpu", "--virtual-time-budget=5000",
                           "--dump-dom", (tmp_path / "probe.html").as_uri()], capture_output=True, text=True,
                          timeout=120)
    title = re.search(r"<title>(IMAGES (\d+)/(\d+) ERRORS (\d+))</title>", done.stdout)
    assert title, done.stdout[:500] + done.stderr[-1000:]
    loaded, total, errors = map(int, title.groups()[1:])
    assert loaded == total == page.count("<img") and errors == 0


def test_summary_of_unknown_name(capsys):
    assert main(["summary", "nosuchmodel"]) == 2
    assert "neither a registered model" in capsys.readouterr().err


def _digit_folder(root, indices, images, labels, invert=False):
    for i in indices:
        folder = root / str(int(labels[i]))
        folder.mkdir(parents=True, exist_ok=True)
        pixels = (images[i, 0].numpy() * 255 / 16).round().astype(np.uint8)
        Image.fromarray(255 - pixels if invert else pixels).save(folder / f"{i}.png")
    return root


def test_evaluate_matches_classes_by_name(run_dir, tmp_path, capsys):
    """A folder holding only digits 3 and 7 is scored as 3s and 7s, not as the model's classes 0 and 1."""
    trained = load_trained(run_dir)
    images, labels, _ = evaluation_data(trained, None)
    picked = [i for i in range(len(labels)) if int(labels[i]) in (3, 7)]
    _digit_folder(tmp_path / "pair", picked, images, labels)
    assert main(["evaluate", str(run_dir), "--data", str(tmp_path / "pair"), "--json"]) == 0
    metrics = json.loads(capsys.readouterr().out)
    correct = sum(p["class"] == str(int(labels[i])) for p, i in zip(predict(trained, images[picked]), picked,
                                                                        strict=True))
    assert metrics["count"] == len(picked) and metrics["accuracy"] == pytest.approx(correct / len(picked))
    assert metrics["accuracy"] > 0.8 and metrics["classes"][3] == "3"
    confusion = np.array(metrics["confusion_matrix"])
    assert confusion.sum(1)[[3, 7]].tolist() == [labels[picked].eq(3).sum().item(), labels[picked].eq(7).sum().item()]
    (tmp_path / "pair" / "cat").mkdir()
    Image.fromarray(np.zeros((8, 8), dtype=np.uint8)).save(tmp_path / "pair" / "cat" / "0.png")
    assert main(["evaluate", str(run_dir), "--data", str(tmp_path / "pair")]) == 2
    assert "class 'cat' is not one of the model's classes (0, 1, 2" in capsys.readouterr().err


def test_predict_data_names_files_with_true_class_and_warns_on_inverted_drawings(run_dir, tmp_path, capsys):
    trained = load_trained(run_dir)
    images, labels, _ = evaluation_data(trained, None)
    _digit_folder(tmp_path / "few", range(4), images, labels)
    assert main(["predict", str(run_dir), "--data", str(tmp_path / "few"), "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert sorted(r["input"] for r in rows) == sorted(f"{int(labels[i])}/{i}.png" for i in range(4))
    assert all(r["true_class"] == r["input"].split("/")[0] for r in rows)
    _digit_folder(tmp_path / "paper", [0], images, labels, invert=True)  # a dark digit on white paper
    path = next((tmp_path / "paper").rglob("*.png"))
    assert main(["predict", str(run_dir), str(path)]) == 0
    err = capsys.readouterr().err
    assert f"warning: {path}: this image is mostly light" in err and "invert it" in err
    np.save(tmp_path / "batch.npy", images[:3].numpy())  # a batch of three in one .npy: three answers
    assert main(["predict", str(run_dir), str(tmp_path / "batch.npy"), "--json"]) == 0
    assert [r["input"] for r in json.loads(capsys.readouterr().out)] == [f"{tmp_path / 'batch.npy'}[{i}]"
                                                                         for i in range(3)]


def test_googlenet_parameter_counts_are_both_shown_and_labelled(capsys):
    """13,378,280 with the auxiliary classifiers (training only), 6,998,552 without: the eval forward's count."""
    import torch

    from cnnkit.models.stats import count_parameters

    with torch.device("meta"):
        with_aux = count_parameters(get_model("googlenet"))
        without_aux = count_parameters(get_model("googlenet", aux=False))
    assert main(["models", "--json"]) == 0
    row = next(r for r in json.loads(capsys.readouterr().out) if r["name"] == "googlenet")
    assert (row["parameters"], row["inference_parameters"]) == (with_aux, without_aux) == (13_378_280, 6_998_552)
    assert main(["summary", "googlenet", "--input-size", "3x64x64"]) == 0
    out = capsys.readouterr().out
    assert "trainable parameters 6,998,552" in out and "the model holds 13,378,280 trainable parameters" in out


@pytest.fixture
def test_split_digits(run_dir):
    """scikit-learn's own digits (0..16) and labels at the run's held-out test indices."""
    import torch
    from sklearn.datasets import load_digits

    from cnnkit.data import stratified_split

    digits = load_digits()
    config = json.loads((run_dir / "config.json").read_text())
    split = stratified_split(torch.as_tensor(digits.target), config["val_fraction"], config["test_fraction"],
                             config["seed"])
    index = split.test.numpy()
    return digits.images[index], digits.target[index]


def _evaluated(capsys, *argv) -> dict:
    assert main(["evaluate", *argv, "--json"]) == 0
    return json.loads(capsys.readouterr().out)


def test_array_files_are_read_in_the_models_scale_or_refused(run_dir, test_split_digits, tmp_path, capsys):
    from sklearn.metrics import accuracy_score

    x, y = test_split_digits  # digits: white is 16, the scale the run was trained on
    reference = _evaluated(capsys, str(run_dir))  # the run's own test split
    for name, scale in (("d16", 1), ("d255", 255 / 16), ("d1", 1 / 16)):
        np.savez(tmp_path / f"{name}.npz", x=x * scale, y=y)
        np.save(tmp_path / f"{name}.npy", (x * scale)[:, None])
    same = _evaluated(capsys, str(run_dir), "--data", str(tmp_path / "d16.npz"))
    assert (same["count"], same["accuracy"]) == (reference["count"], reference["accuracy"])
    assert main(["predict", str(run_dir), str(tmp_path / "d16.npy"), "--json"]) == 0
    classes = [int(r["class"]) for r in json.loads(capsys.readouterr().out)]
    assert accuracy_score(y, classes) == reference["accuracy"]
    for kind in ("npz", "npy"):  # 0..255: refused, naming the file, its top value, the model's scale and the flag
        command = "evaluate" if kind == "npz" else "predict"
        argv = [command, str(run_dir), *(["--data"] if kind == "npz" else []), str(tmp_path / f"d255.{kind}")]
        assert main(argv) == 2
        assert capsys.readouterr().err.strip() == (
            f"cnnkit {command}: error: {tmp_path / f'd255.{kind}'}: values reach 255, above white in the model's "
            "training scale (0..16); pass --white 255 if white is 255 in this file, or rescale it to 0..16")
    stated = _evaluated(capsys, str(run_dir), "--data", str(tmp_path / "d255.npz"), "--white", "255")
    assert abs(stated["accuracy"] - reference["accuracy"]) <= 1 / len(y)  # x * 255/16 * 16/255: float round-off
    assert main(["predict", str(run_dir), str(tmp_path / "d255.npy"), "--white", "255", "--json"]) == 0
    classes = [int(r["class"]) for r in json.loads(capsys.readouterr().out)]
    assert abs(accuracy_score(y, classes) - reference["accuracy"]) <= 1 / len(y)
    faint = _evaluated(capsys, str(run_dir), "--data", str(tmp_path / "d1.npz"))  # 0..1: taken as asked, warned
    assert "if white is 1 in this file, pass --white 1" in faint["note"]
    assert abs(_evaluated(capsys, str(run_dir), "--data", str(tmp_path / "d1.npz"), "--white", "1")["accuracy"]
               - reference["accuracy"]) <= 1 / len(y)


def test_white_is_refused_where_the_scale_is_known(run_dir, tmp_path, capsys):
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(tmp_path / "d.png")
    for argv, expected in (
            (["evaluate", str(run_dir), "--white", "255"], "--white states the scale of an array file given with "
                                                           "--data; the run's own test split"),
            (["evaluate", str(run_dir), "--data", "digits", "--white", "1"], "--white states the scale of an array "
                                                                              "file (.npz, .csv, .npy); white in "
                                                                              "digits is 16 already"),
            (["predict", str(run_dir), str(tmp_path / "d.png"), "--white", "255"], "--white states the scale of .npy")):
        assert main(argv) == 2
        assert capsys.readouterr().err.startswith(f"cnnkit {argv[0]}: error: {expected}")


def test_registry_only_flags_are_refused_for_a_run(run_dir, capsys):
    from cnnkit.analysis.inference import open_model

    assert main(["summary", str(run_dir), "--num-classes", "5"]) == 2
    assert capsys.readouterr().err == (f"cnnkit summary: error: --num-classes 5 applies to a registered model name; "
                                       f"{run_dir} is a checkpoint whose model has 10 classes\n")
    assert main(["summary", str(run_dir), "--input-size", "3x8x8"]) == 2
    assert "the checkpoint's model takes 1x8x8; received --input-size 3x8x8" in capsys.readouterr().err
    with pytest.raises(Exception, match="--num-classes 3 applies to a registered model name"):
        open_model(str(run_dir), None, 3)  # what `cnnkit explore RUN --num-classes 3` opens
    assert main(["summary", str(run_dir), "--num-classes", "10", "--input-size", "1x8x8", "--json"]) == 0
    stated = json.loads(capsys.readouterr().out)  # the run's own values are what it has: the same table
    assert main(["summary", str(run_dir), "--json"]) == 0
    assert stated == json.loads(capsys.readouterr().out)
    assert main(["summary", "digits_cnn", "--num-classes", "5", "--json"]) == 0  # a registry name takes it
    assert json.loads(capsys.readouterr().out)["layers"][-1]["output_shape"] == [5]


def test_to_model_scale_by_hand():
    import torch

    from cnnkit.analysis.inference import Trained, to_model_scale
    from cnnkit.core.errors import CnnkitError

    x_over_255 = Trained(get_model("digits_cnn"), None, {}, [str(i) for i in range(10)], (1, 8, 8), 1.0)  # white 1
    values = torch.tensor([0.0, 4.0, 16.0])
    assert to_model_scale(values, x_over_255, "a.npy", white=16).tolist() == [0.0, 0.25, 1.0]  # 4 / 16
    assert to_model_scale(values / 16, x_over_255, "a.npy").tolist() == [0.0, 0.25, 1.0]  # in its scale: as is
    for top, suggested in ((16.0, "16"), (200.0, "255"), (1000.0, "1000")):
        with pytest.raises(CnnkitError, match=rf"a.npy: values reach {top:g}, above white in the model's training "
                                              rf"scale \(0..1\); pass --white {suggested} if"):
            to_model_scale(torch.tensor([0.0, top]), x_over_255, "a.npy")
    with pytest.raises(CnnkitError, match=r"a.npy: values reach 16, above the stated --white 8"):
        to_model_scale(values, x_over_255, "a.npy", white=8)
