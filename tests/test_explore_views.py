"""The explorer's new endpoints against independent references: cnnkit.tf and `cnnkit explain` for the playground,
a by-hand dot product for the dense view, torch's conv for the animation's scan, the model structure for edges."""

import numpy as np
import pytest
import torch
from starlette.testclient import TestClient

from cnnkit import tf
from cnnkit.analysis.explain import explain_window
from cnnkit.analysis.inference import untrained
from cnnkit.explore.app import create_app
from cnnkit.explore.session import Explorer

EXPLORER = Explorer(untrained("digits_cnn", (1, 8, 8)), "digits_cnn")  # fresh weights: one model for all checks


@pytest.fixture(scope="module")
def client():
    with TestClient(create_app(EXPLORER)) as test_client:
        yield test_client


IMAGE = {"pixels": [float((7 * i) % 256) for i in range(64)]}


@pytest.mark.parametrize("kind,size,kernel,stride,padding,dilation", [
    ("conv", (7, 6), 3, 2, "same", 1), ("conv", (8, 8), 3, 3, "same", 2), ("conv", (9, 5), 4, 2, 2, 1),
    ("max", (6, 7), 3, 2, "same", 1), ("avg", (5, 5), 2, 2, "same", 1), ("avg", (9, 9), 3, 2, "valid", 1)])
def test_playground_agrees_with_cnnkit_tf_and_explain(client, kind, size, kernel, stride, padding, dilation):
    got = client.post("/api/window", json={"kind": kind, "height": size[0], "width": size[1], "kernel": kernel,
                                          "stride": stride, "padding": padding, "dilation": dilation}).json()
    x = torch.tensor(got["input_values"], dtype=torch.float64)[None, :, :, None]
    pad = padding.upper() if isinstance(padding, str) else [[0, 0], [padding, padding], [padding, padding], [0, 0]]
    if kind == "conv":
        y = tf.conv2d(x, torch.tensor(got["kernel_values"], dtype=torch.float64)[:, :, None, None], stride, pad,
                      dilations=dilation)
    else:
        y = (tf.max_pool if kind == "max" else tf.avg_pool)(x, kernel, stride, pad)
    assert np.allclose(got["output_values"], y[0, :, :, 0].numpy())
    assert got["output"] == list(y.shape[1:3])
    left, right, top, bottom = tf.spatial_pads(size, (kernel, kernel), (stride, stride), pad, (dilation, dilation))
    assert (got["pad_top"], got["pad_bottom"], got["pad_left"], got["pad_right"]) == (top, bottom, left, right)
    explained = explain_window("conv" if kind == "conv" else "pool", size, kernel, stride, padding, dilation)
    assert got["formulas"] == explained["formulas"]


def test_playground_refuses_what_tf_cannot_do(client):
    refused = client.post("/api/window", json={"kind": "max", "height": 5, "width": 5, "kernel": 3, "dilation": 2})
    assert refused.status_code == 400 and "dilation" in refused.json()["error"]
    too_big = client.post("/api/window", json={"height": 5, "width": 5, "kernel": 7, "padding": "valid"})
    assert too_big.status_code == 400 and "larger than" in too_big.json()["error"]


def test_dense_output_is_the_dot_product(client):
    explorer = EXPLORER
    got = client.post("/api/dense", json={"image": IMAGE, "layer": "head.2", "output": 4}).json()
    with torch.no_grad():
        logits = explorer.trained.model.eval()(explorer.trained.prepare(explorer.image(IMAGE["pixels"])))[0]
    assert got["value"] == pytest.approx(float(logits[4]), abs=1e-4)
    assert got["from"] == {"layer": "features.13", "shape": [48, 2, 2]}
    term = got["terms"][0]
    assert term["at"] == [term["index"] // 4, term["index"] // 2 % 2, term["index"] % 2]
    assert sum(t["product"] for t in got["terms"]) + got["rest"] + got["bias"] == pytest.approx(got["value"])


def test_scan_shares_add_up_to_the_layer_output(client):
    conv = dict(EXPLORER.trained.model.named_modules())["features.3"]
    total = None
    for k in range(conv.in_channels):
        got = client.post("/api/scan", json={"image": IMAGE, "layer": "features.3", "channel": 5,
                                            "input_channel": k}).json()
        share = np.array(got["partial_values"])
        total = share if total is None else total + share
    assert np.allclose(total + got["bias"], got["output_values"], atol=1e-4)


def test_overview_edges_follow_the_residual_blocks():
    explorer = Explorer(untrained("resnet18", (3, 32, 32)), "resnet18")
    assert explorer.inputs["features.1.0.fuse"] == ["features.1.0.residual.3", "features.1.0.shortcut"]
    assert explorer.inputs["features.1.0.shortcut"] == ["features.0.0"]  # the identity reads the block's input
    assert explorer.inputs["features.2.0.shortcut.0"] == ["features.1.1.fuse"]
    assert explorer.inputs["features.0.0"] == []
