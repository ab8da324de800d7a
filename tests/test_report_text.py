"""Text the pictures, the report and `cnnkit evaluate` show: log axes read as powers of ten while names stay as
typed, top losses list the misclassified images first, and an imported model has no training epoch."""

import io
import json
import math
import re
from pathlib import Path

import matplotlib
import pytest
import torch

from cnnkit.analysis.pictures import curves_figure, maps_figure, plot_confusion
from cnnkit.analysis.report import losses_caption, rank_losses
from cnnkit.cli import main
from cnnkit.train import TrainConfig, fit

REAL = Path(__file__).parent / "fixtures" / "keras_real"


def drawn_text(fig=None, path: Path | None = None) -> list[str]:
    """Every <text> of a figure's SVG (or an SVG file) as a viewer reads it: glyph runs joined, the source text
    matplotlib keeps in comments left out."""
    if fig is not None:
        buffer = io.StringIO()
        with matplotlib.rc_context({"svg.fonttype": "none"}):  # text stays text, not glyph paths
            fig.savefig(buffer, format="svg")
        svg = buffer.getvalue()
    else:
        svg = path.read_text()
    svg = re.sub(r"<!--.*?-->", "", svg, flags=re.S)
    return [re.sub(r"<[^>]+>|\s", "", text) for text in re.findall(r"<text\b.*?</text>", svg, flags=re.S)]


def test_a_log_axis_reads_as_powers_of_ten():
    history = [{"epoch": e, "train_loss": 10.0 ** -e, "train_accuracy": 0.5} for e in range(1, 5)]
    fig = curves_figure(history)
    assert fig.axes[0].get_yscale() == "log"
    texts = drawn_text(fig)
    assert not [t for t in texts if "$" in t or "mathdefault" in t]
    # mathtext draws 10^-2 as "10" then a smaller "−2" (U+2212): the glyphs run together in one <text>
    assert {"10\u22124", "10\u22123", "10\u22122", "10\u22121"} <= set(texts)
    assert matplotlib.rcParams["text.parse_math"]  # importing cnnkit's pictures leaves the global alone


def test_names_that_look_like_tex_are_drawn_as_typed(tmp_path):
    names = ["$x$", "a$b", "$\\frac{"]
    with matplotlib.rc_context({"svg.fonttype": "none"}):
        plot_confusion([[1, 0, 0], [0, 2, 0], [0, 0, 3]], names, tmp_path / "confusion.svg")
    texts = drawn_text(path=tmp_path / "confusion.svg")
    assert {"$x$", "a$b", "$\\frac{"} <= set(texts)
    fig = maps_figure("features.conv1", torch.rand(4, 3, 3), torch.rand(1, 8, 8), "true $y$", 1.0)
    assert "true$y$" in drawn_text(fig)


def hand_case() -> tuple[torch.Tensor, torch.Tensor, list[float]]:
    """Four images of class 0 with chosen probabilities (logits are their logs, so softmax gives them back)."""
    probabilities = torch.tensor([[0.34, 0.33, 0.33],   # right, by a hair: loss -ln 0.34 = 1.079
                                  [0.40, 0.45, 0.15],   # wrong (predicts 1), a near miss: -ln 0.40 = 0.916
                                  [0.10, 0.20, 0.70],   # wrong: -ln 0.10 = 2.303
                                  [0.90, 0.05, 0.05]])  # right: -ln 0.90 = 0.105
    losses = [-math.log(p) for p in (0.34, 0.40, 0.10, 0.90)]
    return probabilities.log(), torch.zeros(4, dtype=torch.long), losses


def test_top_losses_put_the_misclassified_first():
    logits, labels, losses = hand_case()
    ranked = rank_losses(logits, labels, ["zero", "one", "two"], 4)
    assert [r["index"] for r in ranked] == [2, 1, 0, 3]  # by loss alone it would be 2, 0, 1, 3
    assert [r["loss"] for r in ranked] == pytest.approx([losses[2], losses[1], losses[0], losses[3]], rel=1e-5)
    assert [r["predicted"] for r in ranked] == ["two", "one", "zero", "zero"]
    assert [r["correct"] for r in ranked] == [False, False, True, True]
    assert ranked[1]["p_true"] == pytest.approx(0.40) and ranked[1]["p_predicted"] == pytest.approx(0.45)
    assert losses_caption(ranked) == ("top losses: all 2 misclassified test images (highest loss first), then the 2 "
                                      "correctly classified ones with the highest loss")
    only_wrong = rank_losses(logits, labels, ["zero", "one", "two"], 2)
    assert [r["index"] for r in only_wrong] == [2, 1]
    assert "most wrong about (misclassified" in losses_caption(only_wrong)
    right = rank_losses(logits[[0, 3]], labels[:2], ["zero", "one", "two"], 12)
    assert [r["index"] for r in right] == [0, 1]
    assert losses_caption(right).startswith("top losses: no test image is misclassified; the 2 correctly")


def test_evaluate_names_the_epoch_only_of_a_trained_checkpoint(tmp_path, capsys):
    out = tmp_path / "imported"
    assert main(["import-weights", str(REAL / "digitsnet.keras"), "--model", "digitsnet", "--out", str(out)]) == 0
    capsys.readouterr()
    assert main(["evaluate", str(out), "--data", "digits", "--no-progress"]) == 0
    first = capsys.readouterr().out.splitlines()[0]
    assert first == f"evaluated {out} on all of digits: 1797 images"  # scikit-learn's digits: 1797 images
    assert main(["evaluate", str(out), "--data", "digits", "--no-progress", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["epoch"] is None  # imported: no training epoch, not 0
    fit(TrainConfig(model="digitsnet", epochs=1), out=tmp_path / "run", progress=False)
    capsys.readouterr()
    assert main(["evaluate", str(tmp_path / "run"), "--no-progress"]) == 0
    assert " (epoch 1) on " in capsys.readouterr().out.splitlines()[0]
