"""`cnnkit evaluate | predict | models | summary | explain | visualize | report`: parse, call the library, print."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from cnnkit.cli.common import dims, percent, positive_float, positive_int

WHITE_HELP = ("white's value in array files (.npy, an .npz/.csv --data), e.g. 255 or 1: they are rescaled to the "
              "model's training scale; default: they are in that scale already (16 for digits), and larger values "
              "are refused")


def add_inspect_parsers(commands: argparse._SubParsersAction) -> None:
    """Register the commands that use and show networks."""
    p = commands.add_parser("evaluate", help="accuracy, per-class metrics, confusion matrix of a trained model",
                            description="Evaluate a checkpoint on its run's held-out test split, or on every image "
                                        "of --data (classes matched by name).")
    p.add_argument("checkpoint", help="run directory or checkpoint (.safetensors / .json)")
    p.add_argument("--data", help="labelled data to evaluate on (any `cnnkit train --data` source)")
    p.add_argument("--top-k", type=positive_int, default=5, help="k for top-k accuracy; default 5")
    p.add_argument("--white", type=positive_float, help=WHITE_HELP)
    p.add_argument("--json", action="store_true", help="print JSON")
    p.add_argument("--no-progress", action="store_true", help="no progress bar while decoding images")
    p.set_defaults(run=run_evaluate)

    p = commands.add_parser("predict", help="class and top-k probabilities for images or arrays",
                            description="Predict with a checkpoint; its own preprocessing is applied. Images are "
                                        "converted to the model's channels and size (area filter when shrinking).")
    p.add_argument("checkpoint", help="run directory or checkpoint")
    p.add_argument("inputs", nargs="*", help="image files (PNG, JPEG, BMP, GIF, ...) or .npy arrays (one image or "
                                             "a batch N x C x H x W)")
    p.add_argument("--data", help="a dataset source (folder, .npz, .csv, IDX, CIFAR .bin) to predict all of; "
                                  "each image is named by its file and shown with its true label")
    p.add_argument("--top-k", type=positive_int, default=3, help="how many classes to list; default 3")
    p.add_argument("--white", type=positive_float, help=WHITE_HELP)
    p.add_argument("--json", action="store_true", help="print JSON")
    p.add_argument("--no-progress", action="store_true", help="no progress bar while decoding images")
    p.set_defaults(run=run_predict)

    p = commands.add_parser("models", help="the model registry as a table",
                            description="Every registered model: trainable parameters (and, where auxiliary "
                                        "classifiers exist, the count without them), default input size and "
                                        "classes, and its paper (each recipe's digits accuracy: docs/training.md).")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(run=run_models)

    p = commands.add_parser("summary", help="per-layer table: shapes, parameters, multiply-adds, receptive fields",
                            description="One row per layer that works or holds parameters: output shape, "
                                        "trainable and non-trainable parameters, multiply-adds per image, "
                                        "receptive field and jump, and the article-style parameter formula.")
    p.add_argument("model", help="registered model name (fresh weights) or a checkpoint / run directory")
    p.add_argument("--input-size", help="CxHxW, e.g. 1x8x8 (default: the model's own)")
    p.add_argument("--num-classes", type=positive_int, help="classes for a registry model (default: its own)")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(run=run_summary)

    p = commands.add_parser("explain", help="padding, output size and a picture of a conv/pool window scanning",
                            description="Explain how a convolution or pooling window pads and scans an input: "
                                        "TF SAME/VALID or explicit padding, output size with the formula, and a "
                                        "picture of the first window (or a GIF of every position).")
    p.add_argument("kind", choices=("conv", "pool"), help="a convolution or a pooling window")
    p.add_argument("--input", default="8x8", help="input HxW; default 8x8")
    p.add_argument("--kernel", type=positive_int, default=3, help="kernel size; default 3")
    p.add_argument("--stride", type=positive_int, default=1, help="stride; default 1")
    p.add_argument("--padding", default="same", help="same, valid or a number of cells per side; default same")
    p.add_argument("--dilation", type=positive_int, default=1, help="dilation; default 1")
    p.add_argument("--out", type=Path, help="picture path; default explain.png (explain.gif with --gif)")
    p.add_argument("--gif", action="store_true", help="an animated GIF of the window scanning every position")
    p.add_argument("--overwrite", action="store_true", help="replace an existing picture at --out")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(run=run_explain)

    p = commands.add_parser("visualize", help="PNGs of first-layer filters and feature maps of one image",
                            description="Draw the first conv layer's filters and, per layer, the image beside its "
                                        "feature maps (maps_LAYER.png), titled with the predicted class. A conv or "
                                        "dense layer's maps are drawn after its batch norm and activation unless "
                                        "--pre-activation is given. For saliency and Grad-CAM see "
                                        "`cnnkit explain-decision`.")
    p.add_argument("checkpoint", help="run directory, checkpoint, or a registered model name (random weights)")
    p.add_argument("--image", required=True, help="image file (or .npy array) to pass through the network")
    p.add_argument("--layers", help="comma-separated layer names (default: the first conv layers)")
    p.add_argument("--pre-activation", action="store_true",
                   help="draw each layer's own output (before its batch norm and activation)")
    p.add_argument("--label", help="the image's true class, shown beside the predicted one")
    p.add_argument("--white", type=positive_float, help="white's value in a .npy --image (default: the model's "
                                                          "training scale)")
    p.add_argument("--out", type=Path, default=Path("visualize"), help="output folder; default ./visualize")
    p.add_argument("--overwrite", action="store_true", help="replace pictures already in --out")
    p.set_defaults(run=run_visualize)

    p = commands.add_parser("report", help="one self-contained HTML report of a training run",
                            description="Write one HTML page with the run's configuration, learning curves (best "
                                        "epoch marked, learning rate), metrics, top losses, misclassified images, "
                                        "filters and feature maps; pictures are embedded.")
    p.add_argument("run_dir", help="run directory made by `cnnkit train`")
    p.add_argument("--out", type=Path, help="HTML path; default RUN_DIR/report.html")
    p.add_argument("--overwrite", action="store_true", help="replace an existing report")
    p.set_defaults(run=run_report)


def run_evaluate(args: argparse.Namespace) -> int:
    """Print accuracy, top-k, per-class metrics and the labelled confusion matrix."""
    from cnnkit.analysis.inference import evaluate_checkpoint, score_text

    metrics = evaluate_checkpoint(args.checkpoint, args.data, args.top_k, progress=False if args.no_progress else None,
                                  white=args.white)
    if "note" in metrics:
        print(f"cnnkit evaluate: warning: {metrics['note']}", file=sys.stderr)
    if args.json:
        print(json.dumps(metrics))
        return 0
    top_key = next(k for k in metrics if k.startswith("top"))
    epoch = f" (epoch {metrics['epoch']})" if metrics["epoch"] is not None else ""  # None: imported, never trained here
    print(f"evaluated {metrics['checkpoint']}{epoch} on {metrics['data']}: {metrics['count']} images")
    print(f"accuracy {percent(metrics['accuracy'])}   {top_key.replace('_', ' ')} {percent(metrics[top_key])}")
    print(f"{'class':>12} {'precision':>9} {'recall':>7} {'F1':>6} {'support':>7}")
    for c in metrics["per_class"]:
        print(f"{c['class']:>12} {score_text(c['precision']):>9} {score_text(c['recall']):>7} "
              f"{score_text(c['f1']):>6} {c['support']:7d}")
    macro = metrics["macro_average"]
    print(f"{'macro avg':>12} {score_text(macro['precision']):>9} {score_text(macro['recall']):>7} "
          f"{score_text(macro['f1']):>6} {'':>7}  (over the {macro['classes']} classes in the data; '-': undefined)")
    print(confusion_table(metrics["confusion_matrix"], metrics["classes"]))
    return 0


def confusion_table(matrix: list[list[int]], names: list[str]) -> str:
    """The confusion matrix as text with class names on both axes."""
    width = max(4, *(len(n) for n in names), *(len(str(v)) for row in matrix for v in row)) + 1
    label = max(len("true \\ predicted"), *(len(n) for n in names))
    lines = ["confusion matrix (rows: true class, columns: predicted class)",
             "true \\ predicted".ljust(label) + "".join(n.rjust(width) for n in names)]
    lines += [name.ljust(label) + "".join(str(v).rjust(width) for v in row) for name, row in zip(names, matrix,
                                                                                                  strict=True)]
    return "\n".join(lines)


def run_predict(args: argparse.Namespace) -> int:
    """Print the predicted class and top-k probabilities per input (and the true class when known)."""
    from cnnkit.analysis.inference import predict_sources

    results = predict_sources(args.checkpoint, args.inputs, args.data, args.top_k,
                              progress=False if args.no_progress else None, white=args.white)
    for result in results:
        if "note" in result:
            print(f"cnnkit predict: warning: {result['input']}: {result['note']}", file=sys.stderr)
    if args.json:
        print(json.dumps(results))
        return 0
    for result in results:
        top = ", ".join(f"{t['class']} {percent(t['probability'])}" for t in result["top"])
        truth = f"  true {result['true_class']}" if "true_class" in result else ""
        print(f"{result['input']}: {result['class']}  ({top}){truth}")
    return 0


def run_models(args: argparse.Namespace) -> int:
    """Print the registry."""
    from cnnkit.models.catalog import model_table

    rows = model_table()
    if args.json:
        print(json.dumps(rows))
        return 0
    width = max(len(r["name"]) for r in rows)
    print(f"{'model':<{width}}  {'parameters':>12}  {'in inference':>12}  {'input':>9}  paper")
    for r in rows:
        inference = f"{r['inference_parameters']:,}" if r["inference_parameters"] != r["parameters"] else "same"
        print(f"{r['name']:<{width}}  {r['parameters']:>12,}  {inference:>12}  {r['input_size']:>9}  {r['paper']}")
    print("parameters: every trainable parameter; in inference: those the eval forward uses, where they differ "
          "(GoogLeNet's auxiliary classifiers run only in training)")
    return 0


def run_summary(args: argparse.Namespace) -> int:
    """Print the per-layer table."""
    from cnnkit.analysis.summary import summarize_source

    shape = dims(args.input_size, 3, "--input-size") if args.input_size is not None else None
    summary = summarize_source(args.model, shape, args.num_classes)
    print(json.dumps(summary.to_dict()) if args.json else summary.table())
    return 0


def run_explain(args: argparse.Namespace) -> int:
    """Print the padding arithmetic and draw the window."""
    from cnnkit.analysis.explain import explain

    padding = int(args.padding) if args.padding.isascii() and args.padding.isdigit() else args.padding  # not "³"
    out = args.out or Path("explain.gif" if args.gif else "explain.png")
    info = explain(args.kind, dims(args.input, 2, "--input"), args.kernel, args.stride, padding, args.dilation, out,
                   args.gif, args.overwrite)
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
    from cnnkit.analysis.inference import names_registry_model
    from cnnkit.analysis.pictures import visualize

    layers = [n.strip() for n in args.layers.split(",")] if args.layers else None
    activation = "pre" if args.pre_activation else "post"
    for path in visualize(args.checkpoint, args.image, layers, args.out, activation, args.label, args.overwrite,
                          args.white):
        print(path)
    if names_registry_model(args.checkpoint):
        print(f"UNTRAINED: {args.checkpoint} is a registered model with random weights; its pictures show no "
              "trained network's view (give a run directory or checkpoint for that)")
    return 0


def run_report(args: argparse.Namespace) -> int:
    """Write the HTML report."""
    from cnnkit.analysis.report import build_report

    path, captions = build_report(args.run_dir, args.out, overwrite=args.overwrite)
    print(f"{path} ({len(captions)} pictures: {'; '.join(captions)})")
    return 0
