"""`cnnkit export` and `cnnkit import-weights`: parse, call the library, print."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from cnnkit.cli_common import dims
from cnnkit.errors import CnnkitError


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

    p = commands.add_parser("import-weights", help="convert Keras 3 weights (or a trusted .pt) into a checkpoint",
                            description="Read a Keras 3 .weights.h5 / .keras file for a matching cnnkit model and "
                                        "write a safetensors checkpoint. Pickled .pt files are refused unless "
                                        "--trust is given, and then loaded with weights_only=True.")
    p.add_argument("weights", type=Path, help=".weights.h5, .keras, or (with --trust) .pt/.pth")
    p.add_argument("--model", required=True, help="registered model name the weights belong to")
    p.add_argument("--num-classes", type=int, help="classes of the output layer (default: the model's)")
    p.add_argument("--input-size", help="CxHxW (default: the model's)")
    p.add_argument("--bn-epsilon", type=float, help="the Keras model's BatchNormalization epsilon (default 1e-3)")
    p.add_argument("--trust", action="store_true", help="allow a pickled .pt/.pth state dict (weights_only=True)")
    p.add_argument("--out", type=Path, required=True, help="checkpoint path stem (writes STEM.json, STEM.safetensors)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing checkpoint at --out")
    p.set_defaults(run=run_import)


def run_export(args: argparse.Namespace) -> int:
    """Export and report the check."""
    from cnnkit.export import export_checkpoint

    if args.out.exists() and not args.overwrite:
        raise CnnkitError(f"{args.out} already exists; pass --overwrite to replace it")
    result = export_checkpoint(args.checkpoint, args.format, args.out, args.with_preprocessing)
    if args.json:
        print(json.dumps(result))
    else:
        print(f"wrote {result['path']} ({result['format']}, input N x {'x'.join(map(str, result['input_shape']))}); "
              f"metadata {result['metadata']}; max |logit difference| vs PyTorch {result['max_abs_diff']:.2e}, "
              f"top-1 {'agrees' if result['top1_agree'] else 'DIFFERS'}")
    return 0 if result["top1_agree"] and result["max_abs_diff"] <= 1e-4 else 1


def run_import(args: argparse.Namespace) -> int:
    """Convert and write a checkpoint."""
    from cnnkit.interop import import_weights

    shape = dims(args.input_size, 3) if args.input_size else None
    result = import_weights(args.weights, args.model, args.out, args.num_classes, shape, args.bn_epsilon, args.trust,
                            args.overwrite)
    print(f"wrote {result['files'][0]} and {result['files'][1]} ({result['loaded']} layers/tensors from "
          f"{args.weights.name}; no preprocessing: inputs are used as given)")
    return 0
