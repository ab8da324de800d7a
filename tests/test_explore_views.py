"""The explorer's new endpoints against independent references: cnnkit.tf and `cnnkit explain` for the playground,
a by-hand dot product for the dense view, torch's conv for the animation's scan, the model structure for edges."""

import base64

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


def plane(sent: dict) -> np.ndarray:
    """A scan's float32 base64 plane as an array."""
    return np.frombuffer(base64.b64decode(sent["data"]), dtype="<f4").reshape(sent["shape"]).astype(np.float64)


def test_scan_shares_add_up_to_the_layer_output(client):
    conv = dict(EXPLORER.trained.model.named_modules())["features.3"]
    total = None
    for k in range(conv.in_channels):
        got = client.post("/api/scan", json={"image": IMAGE, "layer": "features.3", "channel": 5,
                                            "input_channel": k}).json()
        share = plane(got["partial_values"])
        total = share if total is None else total + share
    assert np.allclose(total + got["bias"], plane(got["output_values"]), atol=1e-4)


def test_scan_sends_the_post_activation_map_the_model_computes(client):
    """post_values: the conv + BN + ReLU unit's map as the model's own ReLU outputs it (a forward hook), on a map
    the ReLU changes; none for a pool, whose map has nothing after it."""
    model = EXPLORER.trained.model
    seen = {}
    hooks = [model.features[4].register_forward_hook(lambda m, i, out: seen.update(bn=out.detach().clone())),
             model.features[5].register_forward_hook(lambda m, i, out: seen.update(relu=out.detach().clone()))]
    try:
        with torch.no_grad():
            model(EXPLORER.image(pixels=IMAGE["pixels"]))
    finally:
        for hook in hooks:
            hook.remove()
    channel = next(c for c in range(seen["bn"].shape[1]) if (seen["bn"][0, c] < 0).any())  # the ReLU zeroes some
    got = client.post("/api/scan", json={"image": IMAGE, "layer": "features.3", "channel": channel}).json()
    assert got["after"] == ["BatchNorm2d", "ReLU"]
    post = plane(got["post_values"])  # float32 sums of 0..255 pixels: compared to a millionth of their size
    assert np.allclose(post, seen["relu"][0, channel].double().numpy(), rtol=1e-5, atol=1e-6 * np.abs(post).max())
    assert (post == 0).any() and (post >= 0).all()
    pool = client.post("/api/scan", json={"image": IMAGE, "layer": "features.6", "channel": 0}).json()
    assert pool["post_values"] is None and pool["after"] == []


def test_scan_of_a_224_stem_sends_whole_planes_compactly():
    """resnet18's 7x7 stride-2 stem at 224x224 (229x229 padded): every plane sent, torch's conv reproduced from the
    sent input plane and kernel, and the reply a few hundred kB."""
    explorer = Explorer(untrained("resnet18", (3, 224, 224)), "resnet18")
    stem = explorer.units[0]
    pixels = [float((13 * i) % 256) for i in range(3 * 224 * 224)]
    with TestClient(create_app(explorer)) as big:
        reply = big.post("/api/scan", json={"image": {"pixels": pixels}, "layer": stem.id, "channel": 7,
                                            "input_channel": 1})
    assert reply.status_code == 200, reply.text
    assert len(reply.content) < 600_000  # float32 base64, not 1-2 MB of JSON numbers
    got = reply.json()
    x, kernel = plane(got["input_values"]), np.array(got["kernel_values"])
    # torchvision's stem pads 3; the last window ends at (112 - 1) * 2 + 7 = 229 = 3 + 224 + 2, so 2 pads are read
    assert x.shape == (224, 224) and got["pads"] == {"top": 3, "bottom": 2, "left": 3, "right": 2}
    expected = torch.nn.functional.conv2d(torch.tensor(x)[None, None], torch.tensor(kernel)[None, None], stride=2,
                                          padding=3)[0, 0].numpy()
    assert np.allclose(plane(got["partial_values"]), expected, atol=1e-3)
    assert plane(got["output_values"]).shape == (112, 112)


def test_scan_refuses_a_huge_plane_with_its_size():
    explorer = Explorer(untrained("digits_cnn", (1, 400, 400)), "digits_cnn")
    with TestClient(create_app(explorer)) as big:
        reply = big.post("/api/scan", json={"image": {"pixels": [0] * 160_000}, "layer": "features.0", "channel": 0})
    assert reply.status_code == 400 and "402x402 = 161,604 cells" in reply.json()["error"]


def test_overview_edges_follow_the_residual_blocks():
    explorer = Explorer(untrained("resnet18", (3, 32, 32)), "resnet18")
    assert explorer.inputs["features.1.0.fuse"] == ["features.1.0.residual.3", "features.1.0.shortcut"]
    assert explorer.inputs["features.1.0.shortcut"] == ["features.0.0"]  # the identity reads the block's input
    assert explorer.inputs["features.2.0.shortcut.0"] == ["features.1.1.fuse"]
    assert explorer.inputs["features.0.0"] == []
