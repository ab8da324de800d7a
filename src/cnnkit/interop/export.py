"""Leave cnnkit: ONNX and TorchScript files with a dynamic batch axis, checked against PyTorch."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn

from cnnkit.core.errors import CnnkitError
from cnnkit.core.outputs import ensure_parent, refuse_run_files
from cnnkit.data.preprocess import Preprocessing


class WithPreprocessing(nn.Module):
    """The checkpoint's preprocessing baked in front of the model: raw-scale images in, logits out."""

    def __init__(self, model: nn.Module, preprocessing: Preprocessing) -> None:
        super().__init__()
        self.model = model
        self.register_buffer("shift", preprocessing.shift.clone())
        self.register_buffer("scale", preprocessing.scale.clone())

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """(N, C, H, W) images in the training data's scale -> logits."""
        return self.model((images - self.shift) * self.scale)


def export_onnx(model: nn.Module, input_shape: tuple[int, int, int], path: Path, opset: int = 17) -> Path:
    """Write an ONNX file with input 'images' (batch axis dynamic) and output 'logits'; check it with onnx."""
    import onnx

    model = model.eval()
    example = torch.zeros(2, *input_shape)
    ensure_parent(path)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, (example,), str(path), dynamo=False, opset_version=opset, input_names=["images"],
                          output_names=["logits"], dynamic_axes={"images": {0: "batch"}, "logits": {0: "batch"}})
    onnx.checker.check_model(onnx.load(str(path)))
    return path


def export_torchscript(model: nn.Module, input_shape: tuple[int, int, int], path: Path) -> Path:
    """Write a traced TorchScript module (static pads are constants; the batch size is free)."""
    model = model.eval()
    ensure_parent(path)
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        traced = torch.jit.trace(model, torch.zeros(2, *input_shape), check_trace=False)
    traced.save(str(path))
    return path


@torch.no_grad()
def compare(path: Path, fmt: str, model: nn.Module, images: torch.Tensor) -> dict:
    """Max |logit difference| and top-1 agreement between the exported file and the PyTorch model."""
    expected = model.eval()(images)
    if fmt == "onnx":
        import onnxruntime as ort

        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        got = torch.from_numpy(session.run(None, {"images": images.numpy()})[0])
    else:
        got = torch.jit.load(str(path))(images)
    return {"max_abs_diff": float((got - expected).abs().max()),
            "top1_agree": bool(torch.equal(got.argmax(1), expected.argmax(1)))}


def export_checkpoint(checkpoint: str | Path, fmt: str, out: Path, with_preprocessing: bool = False,
                      overwrite: bool = False) -> dict:
    """Export a trained checkpoint; verify it; write the metadata (and preprocessing unless baked in) as
    OUT.json beside it. Neither file may exist unless `overwrite`; nothing is written before the check."""
    from cnnkit.analysis.inference import load_trained

    if fmt not in ("onnx", "torchscript"):
        raise CnnkitError(f"format must be onnx or torchscript; received {fmt!r}")
    side_path = out.with_name(out.name + ".json")
    refuse_run_files([out, side_path], "export")
    for path in (out, side_path):
        if path.exists() and not overwrite:
            raise CnnkitError(f"{path} already exists; pass --overwrite to replace it (export writes {out.name} and "
                              f"{side_path.name})")
        if path.exists() and not path.is_file():
            raise CnnkitError(f"{path}: exists and is not a file")
    trained = load_trained(checkpoint)
    model = trained.model
    if with_preprocessing and trained.preprocessing is not None:
        model = WithPreprocessing(model, trained.preprocessing)
    (export_onnx if fmt == "onnx" else export_torchscript)(model, trained.input_shape, out)
    probe = torch.rand(3, *trained.input_shape) * trained.pixel_max
    if not with_preprocessing and trained.preprocessing is not None:
        probe = trained.preprocessing(probe)
    result = {"path": str(out), "format": fmt, "input_shape": list(trained.input_shape),
              **compare(out, fmt, model, probe)}
    sidecar = {"class_names": trained.class_names, "input_shape": list(trained.input_shape),
               "pixel_max": trained.pixel_max, "preprocessing_baked_in": with_preprocessing}
    if trained.preprocessing is not None and not with_preprocessing:
        sidecar["preprocessing"] = {"kind": trained.preprocessing.kind, "formula": "(x - shift) * scale",
                                    "shift": np.asarray(trained.preprocessing.shift).tolist(),
                                    "scale": np.asarray(trained.preprocessing.scale).tolist()}
    side_path.write_text(json.dumps(sidecar, indent=1))
    result["metadata"] = str(side_path)
    return result
