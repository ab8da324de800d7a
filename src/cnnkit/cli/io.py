"""`cnnkit export` and `cnnkit import-weights`: parse, call the library, print."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from cnnkit.cli.common import dims
from cnnkit.core.errors import CnnkitError


def add_io_parsers(commands: argparse._SubParsersAction) -> None:
    """Register the commands that move weights in and out of cnnkit."""
    p = commands.add_parser("export", help="write a checkpoint as ONNX or TorchScript (checked against PyTorch)",
                            description="Export a trained model with a dynamic batch axis; the file is run once "
                                        "and its logits compared with PyTorch's.")
    p.add_argument("checkpoint", help="run directory or checkpoint")
    p.add_argument("--format", choices=("onnx", "torchscript"), default="onnx", help="default onnx")
    p.add_argument("--out", type=Path, required=True, help="file to write (e.g. model.onnx or model.pt)")
    p.add_argument("--with-preprocessing", action="store_true",
                   help="bake the checkpoint's preprocessing into the graph (raw-scale images in); otherwise it "
                        "is written as JSON beside the model")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --out file")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(run=run_export)

    p = commands.add_parser("import-weights", help="convert Keras 3 or PyTorch/torchvision weights into a checkpoint",
                            description="Read a Keras 3 .keras / .weights.h5 file, or (with --trust) a PyTorch state "
                                        "dict in cnnkit's or torchvision's names, for a matching cnnkit model, check "
                                        "that both compute the same thing layer by layer, and write a safetensors "
                                        "checkpoint that feeds the model the input it was trained on.")
    p.add_argument("weights", type=Path, help=".keras, .weights.h5, or (with --trust) .pt/.pth")
    p.add_argument("--model", required=True, help="registered model name the weights belong to")
    p.add_argument("--model-option", action="append", default=[], metavar="KEY=VALUE",
                   help="model option, e.g. width=4 (repeatable)")
    p.add_argument("--num-classes", type=int, help="classes of the output layer (default: the file's)")
    p.add_argument("--input-size", help="CxHxW (default: the Keras model's input, else the model's)")
    p.add_argument("--white", type=float, default=255.0,
                   help="the value of white in the images the model was trained on: 1 for x/255 inputs, 16 for "
                        "scikit-learn's digits, 255 (default) for raw 8-bit pixels")
    p.add_argument("--mean", help="per-channel mean subtracted after scaling to --white, e.g. 0.485,0.456,0.406")
    p.add_argument("--std", help="per-channel divisor applied after --mean, e.g. 0.229,0.224,0.225")
    p.add_argument("--bgr", action="store_true",
                   help="the weights were trained on BGR images (Caffe; keras.applications' 'caffe' mode): the "
                        "first conv's input channels are reversed so the model takes RGB (give --mean in RGB order)")
    p.add_argument("--keras-config", type=Path,
                   help="the model's config (model.to_json(), a config.json, or the .keras file) for a bare "
                        ".weights.h5: needed for branched models, and it lets pools and padding be checked")
    p.add_argument("--bn-epsilon", type=float,
                   help="BatchNormalization epsilon for a .weights.h5 without config (default Keras' 1e-3)")
    p.add_argument("--trust", action="store_true", help="allow a pickled .pt/.pth state dict (weights_only=True)")
    p.add_argument("--out", type=Path, required=True, help="checkpoint path stem (writes STEM.json, STEM.safetensors)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing checkpoint at --out")
    p.add_argument("--verbose", action="store_true", help="print the mapping table (Keras layer -> cnnkit module)")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(run=run_import)


def run_export(args: argparse.Namespace) -> int:
    """Export and report the check."""
    from cnnkit.interop.export import export_checkpoint

    result = export_checkpoint(args.checkpoint, args.format, args.out, args.with_preprocessing, args.overwrite)
    if args.json:
        print(json.dumps(result))
    else:
        print(f"wrote {result['path']} ({result['format']}, input N x {'x'.join(map(str, result['input_shape']))}); "
              f"metadata {result['metadata']}; max |logit difference| vs PyTorch {result['max_abs_diff']:.2e}, "
              f"top-1 {'agrees' if result['top1_agree'] else 'DIFFERS'}")
    return 0 if result["top1_agree"] and result["max_abs_diff"] <= 1e-4 else 1


def run_import(args: argparse.Namespace) -> int:
    """Convert, write a checkpoint, and say what was done."""
    from cnnkit.cli.train import parse_option
    from cnnkit.interop import ImportOptions, import_weights

    shape = dims(args.input_size, 3, "--input-size") if args.input_size is not None else None
    options = ImportOptions(
        num_classes=args.num_classes, input_shape=shape,
        model_options=dict(map(parse_option, args.model_option)), white=args.white,
        mean=numbers(args.mean, "--mean"), std=numbers(args.std, "--std"), bgr=args.bgr, bn_epsilon=args.bn_epsilon,
        keras_config=args.keras_config, trust=args.trust, overwrite=args.overwrite)
    result = import_weights(args.weights, args.model, args.out, options)
    if args.json:
        print(json.dumps(result))
        return 0
    if args.verbose and result["rows"]:
        print(mapping_table(result["rows"]))
    print(f"wrote {result['files'][0]} and {result['files'][1]}: {result['loaded']} layers/tensors from "
          f"{args.weights.name} ({result['format']})")
    for note in result["notes"]:
        print(f"  {note}")
    return 0


def numbers(text: str | None, flag: str) -> tuple[float, ...] | None:
    """'0.485,0.456,0.406' -> (0.485, 0.456, 0.406)."""
    if text is None:
        return None
    try:
        return tuple(float(v) for v in text.split(","))
    except ValueError:
        raise CnnkitError(f"{flag} takes numbers separated by commas (one per channel); received {text!r}") from None


def mapping_table(rows: list[dict]) -> str:
    """The Keras layer -> cnnkit module table of an import, one op per line."""
    header = ("Keras layer", "file path", "Keras op", "cnnkit module", "module", "output", "weights")
    lines = [(r["keras"], r["path"], r["keras_type"], r["cnnkit"], r["cnnkit_type"], r["output"], r["weights"])
             for r in rows]
    widths = [max(len(str(line[i])) for line in [header, *lines]) for i in range(len(header) - 1)]
    return "\n".join("  ".join(str(v).ljust(w) for v, w in zip(line, widths, strict=False)) + "  " + line[-1]
                     for line in [header, *lines])
