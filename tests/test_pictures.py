"""The static pictures: post-activation maps beside their input, curves, the report's new parts, explain-decision."""

import json
import re

import numpy as np
import pytest
import torch
from PIL import Image

from cnnkit.analysis.inference import evaluation_data, load_trained, logits_of
from cnnkit.analysis.pictures import curves_figure, feature_maps, maps_figure
from cnnkit.analysis.report import build_report
from cnnkit.analysis.saliency import input_gradient
from cnnkit.cli import main
from cnnkit.layers import BatchNorm2d
from cnnkit.models import get_model


@pytest.fixture(scope="module")
def run(trained_digitsnet):
    """digitsnet evaluated the article's way too (batch statistics), so the article-style accuracy is recorded."""
    return trained_digitsnet


@pytest.fixture(scope="module")
def digit(run, tmp_path_factory):
    """Held-out test image 0 as an 8-bit PNG, and its true class."""
    images, labels, _ = evaluation_data(load_trained(run), None)
    path = tmp_path_factory.mktemp("digit") / "digit.png"
    Image.fromarray((images[0, 0].numpy() * 255 / 16).round().astype(np.uint8)).save(path)
    return path, str(int(labels[0]))


def test_maps_are_post_activation_by_default():
    model = get_model("digits_cnn").eval()
    bn = model.features[1]
    assert isinstance(bn, BatchNorm2d)
    bn.running_mean.uniform_(-1, 1)  # population statistics far from 0 / 1, so batch norm visibly acts
    bn.running_var.uniform_(0.5, 2)
    x = torch.randn(1, 1, 8, 8)
    post = feature_maps(model, x, ["features.0"])["features.0"]
    pre = feature_maps(model, x, ["features.0"], activation="pre")["features.0"]
    with torch.no_grad():  # the reference: the stack's own modules called one after another
        conv = model.features[0](x)
        after = model.features[2](model.features[1](conv.clone()))
    assert post[0] == "features.2" and pre[0] == "features.0"
    torch.testing.assert_close(post[1], after[0])
    torch.testing.assert_close(pre[1], conv[0])
    assert float(post[1].min()) == 0.0 and float(pre[1].min()) < 0.0  # ReLU'd vs raw


def test_maps_figure_shows_the_input_beside_the_maps():
    image = torch.arange(64, dtype=torch.float32).reshape(1, 8, 8) / 4  # 0 .. 15.75 on the digits' 0..16 scale
    maps = torch.rand(5, 4, 4)
    fig = maps_figure("features.0", maps, image, "input: predicted 3 (90.0%)\ntrue 5", 16.0)
    input_axes, maps_axes = fig.axes[:2]
    np.testing.assert_allclose(input_axes.images[0].get_array(), image[0].numpy() / 16)  # white = 16, not stretched
    assert input_axes.get_title() == "input: predicted 3 (90.0%)\ntrue 5"
    tiled = np.ma.filled(maps_axes.images[0].get_array(), np.nan)  # 5 maps: 2 rows x 3 columns, 1-cell gaps
    assert tiled.shape == (2 * 5 - 1, 3 * 5 - 1)
    np.testing.assert_allclose(tiled[5:9, 0:4], maps[3].numpy())  # map 3 = row label 3 + column 0
    assert np.isnan(tiled[5:9, 10:14]).all()  # no sixth map


def history(losses: list[float], best: int) -> list[dict]:
    return [{"epoch": i + 1, "lr": 10 ** -(i + 1), "train_loss": loss, "train_accuracy": 0.5, "val_loss": loss,
             "val_accuracy": 0.9 if i + 1 == best else 0.5, "article_train_accuracy": 0.4}
            for i, loss in enumerate(losses)]


def test_curves_mark_the_best_epoch_and_use_a_log_axis_across_decades():
    fig = curves_figure(history([2.3, 0.2, 0.01, 0.002], best=3), best_epoch=3)
    loss_ax, acc_ax, lr_ax = fig.axes
    assert loss_ax.get_yscale() == "log" and lr_ax.get_yscale() == "log"  # 2.3 / 0.002 and 0.1 / 1e-4 span decades
    for ax in (loss_ax, acc_ax, lr_ax):
        marks = [line for line in ax.lines if line.get_linestyle() == "--"]
        assert [list(line.get_xdata()) for line in marks] == [[3, 3]]
    assert any("article-style" in line.get_label() for line in acc_ax.lines)
    assert list(lr_ax.lines[0].get_ydata()) == [0.1, 0.01, 0.001, 0.0001]
    assert curves_figure(history([1.0, 0.5, 0.3], best=2), best_epoch=2).axes[0].get_yscale() == "linear"


def test_visualize_writes_maps_beside_the_input_with_plain_names(run, digit, tmp_path, capsys):
    path, label = digit
    assert main(["visualize", str(run), "--image", str(path), "--layers", "features.conv2,features.pool2",
                 "--label", label, "--out", str(tmp_path / "vis")]) == 0
    assert sorted(p.name for p in (tmp_path / "vis").iterdir()) == ["filters.png", "maps_features_conv2.png",
                                                                    "maps_features_pool2.png"]
    assert main(["visualize", str(run), "--image", str(path), "--label", "eleven", "--out", str(tmp_path / "bad")]) == 2
    assert "--label 'eleven' is not one of the model's classes: 0, 1" in capsys.readouterr().err
    assert not (tmp_path / "bad").exists()
    assert main(["visualize", str(run), "--image", str(path), "--layers", "features.conv1", "--pre-activation",
                 "--out", str(tmp_path / "pre")]) == 0
    assert (tmp_path / "pre" / "maps_features_conv1.png").exists()


def test_report_gains_top_losses_best_epoch_config_table_and_article_accuracy(run, tmp_path):
    path, captions = build_report(run, tmp_path / "report.html")
    page = path.read_text()
    trained = load_trained(run)
    images, labels, _ = evaluation_data(trained, None)
    logits = logits_of(trained, images).double().numpy()
    log_softmax = logits - logits.max(1, keepdims=True)
    log_softmax -= np.log(np.exp(log_softmax).sum(1, keepdims=True))
    losses = -log_softmax[np.arange(len(labels)), labels.numpy()]  # cross-entropy by hand
    correct = logits.argmax(1) == labels.numpy()
    worst = np.lexsort((-losses, correct))[:12]  # misclassified first, each group by loss
    table = re.search(r"<h2>Top losses</h2><table>(.*?)</table>", page).group(1)
    rows = re.findall(r"<tr><td>(\d+)</td><td>\d+</td><td>\d+</td><td>([\d.]+)</td>", table)
    assert [int(i) for i, _ in rows] == worst.tolist()
    np.testing.assert_allclose([float(v) for _, v in rows], losses[worst], atol=1e-3)
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    epochs = [r for r in records if "epoch" in r]
    best = max(epochs, key=lambda r: (r["val_accuracy"], -r["val_loss"]))["epoch"]
    assert f"Best validation epoch: {best}." in page and f"best validation epoch {best} marked" in captions[0]
    final = records[-1]["final"]
    assert f"each batch normalised with its own statistics) gives <b>{100 * final['article_test_accuracy']:.2f}%" \
        in page
    assert '<table class="config">' in page and "<pre>" not in page
    config = json.loads((run / "config.json").read_text())
    assert all(f'<td class="key">{key}</td>' in page for key in config)
    assert any(c.startswith("top losses") for c in captions)
    assert any(c.startswith("feature maps of features.conv1 -> features.relu1 (post-activation)") for c in captions)


def test_explain_decision_writes_saliency_and_grad_cam(run, digit, tmp_path, capsys):
    path, _ = digit
    other = tmp_path / "other"
    other.mkdir()
    (other / path.name).write_bytes(path.read_bytes())  # the same file name in another folder
    out = tmp_path / "why"
    assert main(["explain-decision", str(run), str(path), str(other / path.name), "--class", "3", "--out",
                 str(out)]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["0_digit_gradcam.png", "0_digit_saliency.png",
                                                     "1_digit_gradcam.png", "1_digit_saliency.png"]
    assert "explaining 3" in capsys.readouterr().out
    with Image.open(out / "0_digit_saliency.png") as png:
        assert png.size[0] > 400
    assert main(["explain-decision", str(run), str(path), "--class", "x", "--out", str(tmp_path / "no")]) == 2
    assert main(["explain-decision", str(run), str(path), "--layer", "conv9", "--out", str(tmp_path / "no")]) == 2
    assert "no layer named 'conv9'" in capsys.readouterr().err
    assert not (tmp_path / "no").exists()


def test_saliency_matches_finite_differences(run):
    trained = load_trained(run)
    images, _, _ = evaluation_data(trained, None)
    x = trained.prepare(images[:1]).double()
    model = trained.model.double()
    try:
        gradient = input_gradient(model, x, 4)
        with torch.no_grad():
            for (i, j) in ((2, 3), (4, 4), (7, 0)):
                step = torch.zeros_like(x)
                step[0, 0, i, j] = 1e-6
                slope = (model(x + step)[0, 4] - model(x - step)[0, 4]) / 2e-6
                assert float(gradient[0, i, j]) == pytest.approx(float(slope), rel=1e-4, abs=1e-6)
    finally:
        model.float()


def test_class_names_with_dollar_signs_are_drawn_as_text(tmp_path):
    """A class folder named like TeX ('$\\frac{') must not reach matplotlib's math parser (it raised before)."""
    import torch

    from cnnkit.analysis.pictures import plot_confusion, plot_examples

    names = ["$\\frac{", "a$b"]
    plot_confusion([[2, 0], [1, 3]], names, tmp_path / "confusion.png")
    plot_examples(torch.zeros(2, 1, 8, 8), [f"pred {n}" for n in names], tmp_path / "wrong.png", "$\\frac{")
    assert (tmp_path / "confusion.png").stat().st_size > 0 and (tmp_path / "wrong.png").stat().st_size > 0


def _texts(fig) -> str:
    """Every title and caption a figure draws."""
    return "\n".join([t.get_text() for t in fig.texts] + [ax.get_title() for ax in fig.axes])


@pytest.mark.parametrize("source", ["digits_cnn", "run"])
def test_pictures_of_a_registered_model_say_untrained(source, run, digit, tmp_path, monkeypatch, capsys):
    from cnnkit.analysis import pictures

    drawn = []
    real_save = pictures._save
    monkeypatch.setattr(pictures, "_save", lambda fig, path: drawn.append(_texts(fig)) or real_save(fig, path))
    model = source if source != "run" else str(run)  # a registered name holds random weights; the run does not
    untrained = source != "run"
    records = pictures.explain_decision(model, [str(digit[0])], tmp_path / "why")
    assert [r["untrained"] for r in records] == [untrained]
    assert main(["visualize", model, "--image", str(digit[0]), "--out", str(tmp_path / "vis")]) == 0
    printed = capsys.readouterr().out
    assert len(drawn) == 2 + len(list((tmp_path / "vis").iterdir()))  # saliency, Grad-CAM; filters and maps
    assert all(("UNTRAINED" in text) == untrained for text in drawn), drawn
    assert ("UNTRAINED: digits_cnn is a registered model with random weights" in printed) == untrained
    assert main(["explain-decision", model, str(digit[0]), "--out", str(tmp_path / "cli")]) == 0
    assert ("UNTRAINED (random weights): predicted" in capsys.readouterr().out) == untrained
