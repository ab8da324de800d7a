"""`cnnkit report`: one self-contained HTML page about a training run, pictures embedded."""

from __future__ import annotations

import base64
import html
import json
import tempfile
from pathlib import Path

import torch
import torch.nn.functional as F

from cnnkit.analysis.inference import Trained, evaluate_trained, evaluation_data, load_trained, logits_of, score_text
from cnnkit.analysis.pictures import (
    default_layers,
    feature_maps,
    map_title,
    plot_confusion,
    plot_curves,
    plot_examples,
    plot_feature_maps,
    plot_filters,
)
from cnnkit.analysis.summary import summarize
from cnnkit.core.errors import CnnkitError
from cnnkit.core.outputs import ensure_parent, refuse_existing
from cnnkit.store.metadata import metrics_records
from cnnkit.train.config import TrainConfig

STYLE = """body{font-family:sans-serif;max-width:1100px;margin:2em auto;color:#222}
table{border-collapse:collapse;font-size:13px}td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}
th{background:#f3f3f3}td:first-child,td:nth-child(2){text-align:left}img{max-width:100%;margin:.5em 0}
table.config td{text-align:left}table.config td.key{background:#f7f7f7;font-weight:600}"""
CONFIG_COLUMNS = 3  # key/value pairs per row of the configuration table
TOP_LOSSES = 12


def _image(path: Path, alt: str) -> str:
    data = base64.b64encode(path.read_bytes()).decode()
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{data}">'


def _table(header: list[str], rows: list[list]) -> str:
    head = "".join(f"<th>{html.escape(str(h))}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def config_table(config: dict, columns: int = CONFIG_COLUMNS) -> str:
    """The run's configuration as a compact key/value table, `columns` pairs per row (nested values as JSON)."""
    pairs = [(key, json.dumps(value) if isinstance(value, (dict, list)) else str(value)) for key, value in
             config.items()]
    rows = []
    for start in range(0, len(pairs), columns):
        cells = "".join(f'<td class="key">{html.escape(k)}</td><td>{html.escape(v)}</td>'
                        for k, v in pairs[start:start + columns])
        rows.append(f"<tr>{cells}</tr>")
    return f'<table class="config">{"".join(rows)}</table>'


def top_losses(trained: Trained, images: torch.Tensor, labels: torch.Tensor, count: int = TOP_LOSSES) -> list[dict]:
    """The misclassified test images, highest cross-entropy loss first, then (when fewer are wrong than `count`)
    the correctly classified ones with the highest loss (fastai's plot_top_losses, wrong ones first)."""
    return rank_losses(logits_of(trained, images), labels, trained.class_names, count)


def rank_losses(logits: torch.Tensor, labels: torch.Tensor, class_names: list[str], count: int) -> list[dict]:
    """The `count` images most wrong about: misclassified before correct (a correct guess can cost more loss
    than a near miss), each group by loss, highest first."""
    losses = F.cross_entropy(logits, labels, reduction="none")
    probabilities = torch.softmax(logits, dim=1)
    correct = probabilities.argmax(dim=1) == labels
    worst = sorted(range(len(losses)), key=lambda i: (bool(correct[i]), -float(losses[i])))[:count]
    return [{"index": i, "loss": float(losses[i]), "true": class_names[int(labels[i])],
             "predicted": class_names[int(probabilities[i].argmax())], "correct": bool(correct[i]),
             "p_true": float(probabilities[i, labels[i]]), "p_predicted": float(probabilities[i].max())}
            for i in worst]


def losses_caption(worst: list[dict]) -> str:
    """What the top-losses picture shows: only misclassified images, or how many of them before the correct."""
    wrong = sum(not w["correct"] for w in worst)
    if wrong == len(worst):
        return "top losses: the test images the model is most wrong about (misclassified, highest loss first)"
    if wrong == 0:
        return (f"top losses: no test image is misclassified; the {len(worst)} correctly classified ones with the "
                "highest loss")
    return (f"top losses: all {wrong} misclassified test images (highest loss first), then the "
            f"{len(worst) - wrong} correctly classified ones with the highest loss")


def _read_history(run: Path) -> list[dict]:
    path = run / "metrics.jsonl"
    return metrics_records(path.read_text(errors="replace"), path)[0] if path.exists() else []


def build_report(run_dir: str | Path, out: Path | None = None, max_examples: int = 24,
                 overwrite: bool = False) -> tuple[Path, list[str]]:
    """Write RUN_DIR/report.html (or `out`); return its path and the captions of the pictures it holds."""
    run = Path(run_dir)
    if not (run / "config.json").exists():
        raise CnnkitError(f"{run}: not a run directory (no config.json)")
    target = out or run / "report.html"
    refuse_existing([target], overwrite)
    trained = load_trained(run)
    config = TrainConfig.from_run_dir(run).to_dict()
    history = _read_history(run)
    final = next((r["final"] for r in reversed(history) if "final" in r), {})
    best_epoch = (trained.meta.get("best") or {}).get("epoch")
    images, labels, described = evaluation_data(trained, None)
    metrics = evaluate_trained(trained, images, labels)
    summary = summarize(trained.model, trained.input_shape)
    names = trained.class_names
    pictures: list[tuple[str, str]] = []
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)

        def add(caption: str, path: Path) -> None:
            pictures.append((caption, _image(path, caption)))

        curves = "learning curves" + (f" (best validation epoch {best_epoch} marked)" if best_epoch else "")
        add(curves, plot_curves(history, folder / "curves.png", best_epoch))
        add("confusion matrix", plot_confusion(metrics["confusion_matrix"], names, folder / "confusion.png"))
        worst = top_losses(trained, images, labels)
        titles = [f"true {w['true']} / pred {w['predicted']}\nloss {w['loss']:.2f}, p(true) {w['p_true']:.2f}"
                  for w in worst]
        add(losses_caption(worst),
            plot_examples(images[[w["index"] for w in worst]], titles, folder / "losses.png",
                          "top losses (true / predicted, loss, probability of the true class)", trained.pixel_max))
        predicted = torch.tensor(metrics["predicted"])
        wrong = torch.nonzero(predicted != labels).flatten()[:max_examples]
        if len(wrong):
            titles = [f"pred {names[int(predicted[i])]} / true {names[int(labels[i])]}" for i in wrong]
            add("misclassified test images", plot_examples(images[wrong], titles, folder / "wrong.png",
                                                           "misclassified test images", trained.pixel_max))
        add("first-layer filters", plot_filters(trained.model, folder / "filters.png"))
        probability = float(torch.softmax(logits_of(trained, images[:1])[0], dim=0).max())
        caption = f"test image 0\ntrue {names[int(labels[0])]}, predicted {names[int(predicted[0])]} " \
                  f"({100 * probability:.1f}%)"
        maps = feature_maps(trained.model, trained.prepare(images[:1]), default_layers(trained.model, 4))
        for i, (name, (shown, values)) in enumerate(maps.items()):
            title = map_title(name, shown)
            add(f"feature maps of {title} for test image 0 (true {names[int(labels[0])]})",
                plot_feature_maps(title, values, folder / f"maps{i}.png", images[0], caption, trained.pixel_max))
    per_class = [[c["class"], score_text(c["precision"]), score_text(c["recall"]), score_text(c["f1"]), c["support"]]
                 for c in metrics["per_class"]]
    layers = [[r.name, r.type, "x".join(map(str, r.output_shape)), f"{r.trainable:,}", f"{r.non_trainable:,}",
               f"{r.macs:,}", r.receptive_field or "all", r.formula] for r in summary.rows]
    losses = [[w["index"], w["true"], w["predicted"], f"{w['loss']:.3f}", f"{w['p_true']:.3f}",
               f"{w['p_predicted']:.3f}"] for w in worst]
    totals = summary.totals
    article = ""
    if "article_test_accuracy" in final:
        article = (f" The article's own measure (each batch normalised with its own statistics) gives "
                   f"<b>{100 * final['article_test_accuracy']:.2f}%</b>.")
    best = f" Best validation epoch: {best_epoch}." if best_epoch else ""
    parts = [
        f"<h1>cnnkit run: {html.escape(run.name)}</h1>",
        f"<p>model <b>{html.escape(config['model'])}</b> on <b>{html.escape(str(config['data']))}</b>; test accuracy "
        f"<b>{100 * metrics['accuracy']:.2f}%</b> on {metrics['count']} images ({html.escape(described)}).{article}"
        f"{best}</p>",
        "<h2>Configuration</h2>", config_table(config),
        "<h2>Per-class metrics</h2>", _table(["class", "precision", "recall", "F1", "support"], per_class),
        "<h2>Top losses</h2>",
        _table(["test image", "true", "predicted", "loss", "p(true)", "p(predicted)"], losses),
        f"<p>{html.escape(losses_caption(worst).removeprefix('top losses: '))}.</p>",
        "<h2>Model summary</h2>",
        _table(["layer", "type", "output", "params", "non-trainable", "mult-adds", "RF", "formula"], layers),
        f"<p>trainable parameters {totals['trainable']:,}; multiply-adds per image {totals['macs']:,}</p>",
    ]
    for caption, tag in pictures:
        parts += [f"<h2>{html.escape(caption)}</h2>", tag]
    page = (f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>cnnkit report: "
            f"{html.escape(run.name)}</title><style>{STYLE}</style></head><body>{''.join(parts)}</body></html>")
    ensure_parent(target).write_text(page, encoding="utf-8")
    return target, [caption for caption, _ in pictures]
