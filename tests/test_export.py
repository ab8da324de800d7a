"""ONNX and TorchScript exports give PyTorch's logits, for every registered model and a trained checkpoint."""

import json

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from cnnkit.cli import main
from cnnkit.interop.export import compare, export_onnx, export_torchscript
from cnnkit.models import get_model, list_models, model_info


def small(name: str) -> tuple[int, int, int]:
    return model_info(name).test_size


def depends_on_input(graph, value: str) -> bool:
    """Whether `value` is computed from the graph input or its shape."""
    producers = {out: node for node in graph.node for out in node.output}
    stack, seen = [value], set()
    while stack:
        name = stack.pop()
        if name == graph.input[0].name:
            return True
        node = producers.get(name)
        if node is None or name in seen:
            continue
        seen.add(name)
        if node.op_type == "Shape":
            return True
        stack.extend(node.input)
    return False


DEEP = {"resnet101", "resnet152"}  # resnet50's blocks, more of them: 5-10 s of export each, so in the slow set


@pytest.mark.parametrize("name", [pytest.param(n, marks=pytest.mark.slow) if n in DEEP else n for n in list_models()])
def test_every_model_exports_to_onnx_and_torchscript(name, tmp_path):
    shape = small(name)
    torch.manual_seed(0)
    # Narrow where a family allows it: the graph (every layer kind, pad and branch) is the paper's, the weights
    # fewer (ResNet-152's 240 MB of ONNX took 37 s of the suite for nothing the layout depends on).
    narrow = {k: v for k, v in {"width": 8, "fc_width": 64}.items() if k in model_info(name).options}
    model = get_model(name, num_classes=10, in_channels=shape[0], input_size=shape[1:], **narrow).eval()
    images = torch.rand(3, *shape)  # batch 3 while exported at 2: the batch axis is dynamic
    onnx_path = export_onnx(model, shape, tmp_path / "m.onnx")
    graph = onnx.load(str(onnx_path)).graph
    assert graph.input[0].type.tensor_type.shape.dim[0].dim_param == "batch"
    # TF-SAME pads are static: no Pad amount is computed from the input (no Shape op, no path from the images).
    for node in graph.node:
        if node.op_type == "Pad":
            assert not depends_on_input(graph, node.input[1]), node.name
    with torch.no_grad():
        scale = float(model(images).abs().max()) or 1.0
    for fmt, path in (("onnx", onnx_path), ("torchscript", export_torchscript(model, shape, tmp_path / "m.pt"))):
        result = compare(path, fmt, model, images)
        assert result["top1_agree"], fmt
        # 1e-4 on logits of order 1; randomly initialised deep nets produce logits in the hundreds.
        assert result["max_abs_diff"] <= 1e-4 * max(1.0, scale), (fmt, result, scale)


def test_trained_checkpoint_export_cli(trained_run, tmp_path, capsys):
    run = trained_run  # the session's trained run (tests/conftest.py): exports go to tmp_path, beside nothing of it
    baked = tmp_path / "baked.onnx"
    assert main(["export", str(run), "--out", str(baked), "--with-preprocessing", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["max_abs_diff"] <= 1e-4 and report["top1_agree"]
    plain = tmp_path / "plain.onnx"
    assert main(["export", str(run), "--out", str(plain)]) == 0
    capsys.readouterr()
    side = json.loads((tmp_path / "plain.onnx.json").read_text())
    assert side["preprocessing"]["kind"] == "standardize" and side["class_names"][3] == "3"
    # Raw digits through the baked graph equal the plain graph fed with the JSON's preprocessing.
    raw = np.random.default_rng(0).uniform(0, 16, (5, 1, 8, 8)).astype(np.float32)
    shift, scale = np.array(side["preprocessing"]["shift"]), np.array(side["preprocessing"]["scale"])
    baked_out = ort.InferenceSession(str(baked)).run(None, {"images": raw})[0]
    plain_out = ort.InferenceSession(str(plain)).run(None, {"images": ((raw - shift) * scale).astype(np.float32)})[0]
    np.testing.assert_allclose(baked_out, plain_out, rtol=1e-4, atol=1e-4)
    assert main(["export", str(run), "--out", str(plain)]) == 2  # no silent overwrite
    assert "already exists" in capsys.readouterr().err
    ts = tmp_path / "m.pt"
    assert main(["export", str(run), "--format", "torchscript", "--out", str(ts)]) == 0
    assert torch.jit.load(str(ts))(torch.zeros(4, 1, 8, 8)).shape == (4, 10)
