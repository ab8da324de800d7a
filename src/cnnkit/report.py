"""`cnnkit report`: one self-contained HTML page about a training run, pictures embedded."""

from __future__ import annotations

import base64
import html
import json
import tempfile
from pathlib import Path

import torch

from cnnkit.errors import CnnkitError
from cnnkit.inference import evaluate_trained, evaluation_data, load_trained
from cnnkit.pictures import (
    default_layers,
    feature_maps,
    plot_confusion,
    plot_curves,
    plot_examples,
    plot_feature_maps,
    plot_filters,
)
from cnnkit.summary import summarize

STYLE = """body{font-family:sans-serif;max-width:1100px;margin:2em auto;color:#222}
table{border-collapse:collapse;font-size:13px}td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}
th{background:#f3f3f3}td:first-child,td:nth-child(2){text-align:left}img{max-width:100%;margin:.5em 0}
pre{background:#f7f7f7;padding:1em;overflow-x:auto}"""


def _image(path: Path, alt: str) -> str:
    data = base64.b64encode(path.read_bytes()).decode()
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{data}">'


def _table(header: list[str], rows: list[list]) -> str:
    head = "".join(f"<th>{html.escape(str(h))}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def build_report(run_dir: str | Path, out: Path | None = None, max_examples: int = 24) -> tuple[Path, list[str]]:
    """Write RUN_DIR/report.html (or `out`); return its path and the captions of the pictures it holds."""
    run = Path(run_dir)
    if not (run / "config.json").exists():
        raise CnnkitError(f"{run}: not a run directory (no config.json)")
    trained = load_trained(run)
    config = json.loads((run / "config.json").read_text())
    history = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines() if line.strip()] \
        if (run / "metrics.jsonl").exists() else []
    images, labels, described = evaluation_data(trained, None)
    metrics = evaluate_trained(trained, images, labels)
    summary = summarize(trained.model, trained.input_shape)
    pictures: list[tuple[str, str]] = []
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        pictures.append(("learning curves", _image(plot_curves(history, folder / "curves.png"), "learning curves")))
        pictures.append(("confusion matrix", _image(plot_confusion(metrics["confusion_matrix"], trained.class_names,
                                                                   folder / "confusion.png"), "confusion matrix")))
        predicted = torch.tensor(metrics["predicted"])
        wrong = torch.nonzero(predicted != labels).flatten()[:max_examples]
        if len(wrong):
            titles = [f"pred {trained.class_names[int(predicted[i])]} / true {trained.class_names[int(labels[i])]}"
                      for i in wrong]
            path = plot_examples(images[wrong], titles, folder / "wrong.png", "misclassified test images")
            pictures.append(("misclassified test images", _image(path, "misclassified test images")))
        pictures.append(("first-layer filters", _image(plot_filters(trained.model, folder / "filters.png"),
                                                       "first-layer filters")))
        example = trained.prepare(images[:1])
        for name, maps in feature_maps(trained.model, example, default_layers(trained.model, 4)).items():
            caption = f"feature maps of {name} for test image 0 (true {trained.class_names[int(labels[0])]})"
            pictures.append((caption, _image(plot_feature_maps(name, maps, folder / f"{name}.png"), caption)))
    per_class = [[c["class"], f"{c['precision']:.3f}", f"{c['recall']:.3f}", f"{c['f1']:.3f}", c["support"]]
                 for c in metrics["per_class"]]
    layers = [[r.name, r.type, "x".join(map(str, r.output_shape)), f"{r.trainable:,}", f"{r.non_trainable:,}",
               f"{r.macs:,}", r.receptive_field or "all", r.formula] for r in summary.rows]
    totals = summary.totals
    parts = [
        f"<h1>cnnkit run: {html.escape(run.name)}</h1>",
        f"<p>model <b>{html.escape(config['model'])}</b> on <b>{html.escape(str(config['data']))}</b>; test accuracy "
        f"<b>{100 * metrics['accuracy']:.2f}%</b> on {metrics['count']} images ({html.escape(described)}).</p>",
        "<h2>Configuration</h2>", f"<pre>{html.escape(json.dumps(config, indent=1))}</pre>",
        "<h2>Per-class metrics</h2>", _table(["class", "precision", "recall", "F1", "support"], per_class),
        "<h2>Model summary</h2>",
        _table(["layer", "type", "output", "params", "non-trainable", "mult-adds", "RF", "formula"], layers),
        f"<p>trainable parameters {totals['trainable']:,}; multiply-adds per image {totals['macs']:,}</p>",
    ]
    for caption, tag in pictures:
        parts += [f"<h2>{html.escape(caption)}</h2>", tag]
    page = (f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>cnnkit report: "
            f"{html.escape(run.name)}</title><style>{STYLE}</style></head><body>{''.join(parts)}</body></html>")
    target = out or run / "report.html"
    target.write_text(page, encoding="utf-8")
    return target, [caption for caption, _ in pictures]
