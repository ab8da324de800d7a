"""`cnnkit evaluate | predict | models | summary | explain | visualize | report`: argument parsing only."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch

from cnnkit.errors import CnnkitError


def dims(text: str, count: int) -> tuple[int, ...]:
    """'1x8x8' -> (1, 8, 8); a single number repeats ('8' -> (8, 8) for count 2)."""
    try:
        values = tuple(int(v) for v in text.lower().split("x"))
    except ValueError:
        raise CnnkitError(f"expected sizes like {'x'.join(['8'] * count)}; received {text!r}") from None
    if len(values) == 1 and count == 2:
        values = values * 2
    if len(values) != count or min(values) < 1:
        raise CnnkitError(f"expected {count} positive sizes like {'x'.join(['8'] * count)}; received {text!r}")
    return values


def add_inspect_parsers(commands: argparse._SubParsersAction) -> None:
    """Register the commands that use and show networks."""
    p = commands.add_parser("evaluate", help="accuracy, per-class metrics, confusion matrix of a trained model",
                            description="Evaluate a checkpoint on its run's held-out test split, or on --data.")
    p.add_argument("checkpoint", help="run directory or checkpoint (.json/.safetensors)")
    p.add_argument("--data", help="labelled data to evaluate on (any `cnnkit train --data` source)")
    p.add_argument("--top-k", type=int, default=5, help="k for top-k accuracy; default 5")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(run=run_evaluate)

    p = commands.add_parser("predict", help="class and top-k probabilities for images or arrays",
                            description="Predict with a checkpoint; its own preprocessing is applied.")
    p.add_argument("checkpoint", help="run directory or checkpoint")
    p.add_argument("inputs", nargs="*", help="image files (PNG, JPEG, BMP, GIF, ...) or .npy arrays")
    p.add_argument("--data", help="a dataset source (folder, .npz, .csv, IDX, CIFAR .bin) to predict all of")
    p.add_argument("--top-k", type=int, default=3, help="how many classes to list; default 3")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(run=run_predict)

    p = commands.add_parser("models", help="the model registry as a table")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(run=run_models)

    p = commands.add_parser("summary", help="per-layer table: shapes, parameters, multiply-adds, receptive fields")
    p.add_argument("model", help="registered model name or a checkpoint")
    p.add_argument("--input-size", help="CxHxW, e.g. 1x8x8 (default: the model's own)")
    p.add_argument("--num-classes", type=int, help="classes for a registry model")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(run=run_summary)

    p = commands.add_parser("explain", help="padding, output size and a picture of a conv/pool window scanning",
                            description="Explain how a convolution or pooling window pads and scans an input.")
    p.add_argument("kind", choices=("conv", "pool"))
    p.add_argument("--input", default="8x8", help="HxW; default 8x8")
    p.add_argument("--kernel", type=int, default=3, help="kernel size; default 3")
    p.add_argument("--stride", type=int, default=1, help="stride; default 1")
    p.add_argument("--padding", default="same", help="same, valid or an int; default same")
    p.add_argument("--dilation", type=int, default=1, help="dilation; default 1")
    p.add_argument("--out", type=Path, help="picture path; default explain.png (explain.gif with --gif)")
    p.add_argument("--gif", action="store_true", help="an animated GIF of the window scanning every position")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(run=run_explain)

    p = commands.add_parser("visualize", help="PNGs of first-layer filters and feature maps of one image")
    p.add_argument("checkpoint", help="run directory, checkpoint, or a registered model name (random weights)")
    p.add_argument("--image", required=True, help="image file (or .npy array) to pass through the network")
    p.add_argument("--layers", help="comma-separated layer names (default: the first conv layers)")
    p.add_argument("--out", type=Path, default=Path("visualize"), help="output folder; default ./visualize")
    p.set_defaults(run=run_visualize)

    p = commands.add_parser("report", help="one self-contained HTML report of a training run")
    p.add_argument("run_dir", help="run directory made by `cnnkit train`")
    p.add_argument("--out", type=Path, help="HTML path; default RUN_DIR/report.html")
    p.set_defaults(run=run_report)


def _pct(value: float) -> str:
    return f"{100 * value:.2f}%"


def run_evaluate(args: argparse.Namespace) -> int:
    """Print accuracy, top-k, per-class metrics and the confusion matrix."""
    from cnnkit.inference import evaluate_trained, evaluation_data, load_trained

    trained = load_trained(args.checkpoint)
    images, labels, described = evaluation_data(trained, args.data)
    metrics = evaluate_trained(trained, images, labels, args.top_k)
    metrics.pop("predicted")
    if args.json:
        print(json.dumps({"data": described, **metrics}))
        return 0
    top_key = next(k for k in metrics if k.startswith("top"))
    print(f"evaluated on {described}: {metrics['count']} images")
    print(f"accuracy {_pct(metrics['accuracy'])}   {top_key.replace('_', ' ')} {_pct(metrics[top_key])}")
    print(f"{'class':>12} {'precision':>9} {'recall':>7} {'F1':>6} {'support':>7}")
    for c in metrics["per_class"]:
        print(f"{c['class']:>12} {c['precision']:9.3f} {c['recall']:7.3f} {c['f1']:6.3f} {c['support']:7d}")
    print("confusion matrix (rows: true, columns: predicted)")
    for row in metrics["confusion_matrix"]:
        print(" ".join(f"{v:4d}" for v in row))
    return 0


def _load_inputs(paths: list[str], trained) -> torch.Tensor:
    from cnnkit.inference import read_image_files

    arrays, images = [], []
    for path in paths:
        if path.endswith(".npy"):
            try:
                array = np.load(path, allow_pickle=False)
            except (ValueError, OSError) as error:
                raise CnnkitError(f"{path}: not a readable .npy array without pickles ({error})") from None
            array = array[None, None] if array.ndim == 2 else array[None] if array.ndim == 3 else array
            arrays.append(torch.as_tensor(array, dtype=torch.float32))
        else:
            images.append(path)
    parts = ([read_image_files(images, trained)] if images else []) + arrays
    return torch.cat(parts) if len(parts) > 1 else parts[0]


def run_predict(args: argparse.Namespace) -> int:
    """Print the predicted class and top-k probabilities per input."""
    from cnnkit.inference import load_trained, predict, read_data

    if not args.inputs and not args.data:
        raise CnnkitError("give image files / .npy arrays to predict, or --data PATH")
    trained = load_trained(args.checkpoint)
    names, batches = [], []
    if args.inputs:
        batches.append(_load_inputs(args.inputs, trained))
        names += args.inputs
    if args.data:
        images, _ = read_data(trained, args.data)
        batches.append(images)
        names += [f"{args.data}[{i}]" for i in range(len(images))]
    results = predict(trained, torch.cat(batches), args.top_k)
    if args.json:
        print(json.dumps([{"input": n, **r} for n, r in zip(names, results, strict=True)]))
        return 0
    for name, result in zip(names, results, strict=True):
        top = ", ".join(f"{t['class']} {_pct(t['probability'])}" for t in result["top"])
        print(f"{name}: {result['class']}  ({top})")
    return 0


def run_models(args: argparse.Namespace) -> int:
    """Print the registry."""
    from cnnkit.models import get_model, list_models, model_info
    from cnnkit.summary import count_parameters

    rows = []
    for name in list_models():
        info = model_info(name)
        with torch.device("meta"):
            params = count_parameters(get_model(name))
        rows.append({"name": name, "paper": info.paper, "parameters": params,
                     "input_size": "x".join(map(str, info.input_size)), "num_classes": info.num_classes})
    if args.json:
        print(json.dumps(rows))
        return 0
    width = max(len(r["name"]) for r in rows)
    print(f"{'model':<{width}}  {'parameters':>12}  {'input':>9}  paper")
    for r in rows:
        print(f"{r['name']:<{width}}  {r['parameters']:>12,}  {r['input_size']:>9}  {r['paper']}")
    return 0


def _model_or_checkpoint(spec: str, input_size: str | None, num_classes: int | None):
    from cnnkit.models import get_model, list_models

    if spec in list_models() and not Path(spec).exists():
        shape = dims(input_size, 3) if input_size else None
        model = get_model(spec, num_classes=num_classes, in_channels=shape[0] if shape else None,
                          input_size=shape[1:] if shape else None)
        return model.eval(), model.input_shape, None
    from cnnkit.inference import load_trained

    if not Path(spec).exists():
        raise CnnkitError(f"{spec!r} is neither a registered model (see `cnnkit models`) nor a checkpoint path")
    trained = load_trained(spec)
    if input_size and dims(input_size, 3) != trained.input_shape:
        raise CnnkitError(f"the checkpoint's model takes {'x'.join(map(str, trained.input_shape))}; received "
                          f"--input-size {input_size}")
    return trained.model, trained.input_shape, trained


def run_summary(args: argparse.Namespace) -> int:
    """Print the per-layer table."""
    from cnnkit.summary import summarize

    model, shape, _ = _model_or_checkpoint(args.model, args.input_size, args.num_classes)
    summary = summarize(model, shape, name=args.model)
    print(json.dumps(summary.to_dict()) if args.json else summary.table())
    return 0


def run_explain(args: argparse.Namespace) -> int:
    """Print the padding arithmetic and draw the window."""
    from cnnkit.explain import draw_window, explain_window

    padding = int(args.padding) if args.padding.isdigit() else args.padding
    info = explain_window(args.kind, dims(args.input, 2), args.kernel, args.stride, padding, args.dilation)
    out = args.out or Path("explain.gif" if args.gif else "explain.png")
    info["picture"] = str(draw_window(info, out, args.gif))
    if args.json:
        print(json.dumps(info))
        return 0
    print(f"{args.kind} {args.kernel}x{args.kernel}, stride {args.stride}, padding {info['padding']} on "
          f"{info['input'][0]}x{info['input'][1]}")
    print(f"padding: top {info['pad_top']}, bottom {info['pad_bottom']}, left {info['pad_left']}, "
          f"right {info['pad_right']}")
    for line in info["formulas"]:
        print(line)
    print(f"output: {info['output'][0]}x{info['output'][1]}; picture: {info['picture']}")
    return 0


def run_visualize(args: argparse.Namespace) -> int:
    """Write the filter grid and one feature-map grid per layer."""
    from cnnkit.inference import Trained
    from cnnkit.pictures import default_layers, feature_maps, plot_feature_maps, plot_filters

    model, shape, trained = _model_or_checkpoint(args.checkpoint, None, None)
    if trained is None:
        trained = Trained(model, None, {}, [], shape, 255.0)
    x = trained.prepare(_load_inputs([args.image], trained))[:1]
    layers = [n.strip() for n in args.layers.split(",")] if args.layers else default_layers(model)
    maps_by_layer = feature_maps(model, x, layers)  # unknown layer names fail here, before any file is written
    written = [plot_filters(model, args.out / "filters.png")]
    for name, maps in maps_by_layer.items():
        written.append(plot_feature_maps(name, maps, args.out / f"features_{name.replace('.', '_')}.png"))
    for path in written:
        print(path)
    return 0


def run_report(args: argparse.Namespace) -> int:
    """Write the HTML report."""
    from cnnkit.report import build_report

    path, captions = build_report(args.run_dir, args.out)
    print(f"{path} ({len(captions)} pictures: {'; '.join(captions)})")
    return 0
