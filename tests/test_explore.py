"""`cnnkit explore`: the API through Starlette's test client, checked against NumPy and torch.autograd references."""

import base64
import io
import json
import math
import subprocess
import sys
import time
from pathlib import Path

import httpx
import numpy as np
import pytest
import torch
from PIL import Image
from starlette.testclient import TestClient

from cnnkit.analysis.inference import Trained, evaluation_data, load_trained, untrained
from cnnkit.cli import main
from cnnkit.explore.app import MAX_JSON_BYTES, create_app
from cnnkit.explore.server import ExploreServer
from cnnkit.explore.session import MAX_UPLOAD_BYTES, Explorer, map_page
from cnnkit.models import get_model

STATIC = Path(__file__).resolve().parents[1] / "src" / "cnnkit" / "explore" / "static"


@pytest.fixture(scope="module")
def run(trained_digitsnet):
    """The article's digitsnet, trained briefly (tests/conftest.py, read-only): its conv2 is the SAME stride-2 conv
    the article explains."""
    return trained_digitsnet


@pytest.fixture(scope="module")
def client(run):
    with TestClient(create_app(Explorer.open(str(run)))) as test_client:
        yield test_client


def floats(blob: str, shape) -> np.ndarray:
    return np.frombuffer(base64.b64decode(blob), dtype="<f4").reshape(shape)


def digit_pixels(run, index: int) -> list[float]:
    """Held-out digit `index` as display pixels 0..255, as an 8-bit image file would hold it."""
    images, _, _ = evaluation_data(load_trained(run), None)
    return (images[index, 0].numpy() * 255 / 16).round().reshape(-1).tolist()


def post(client, path: str, body: dict) -> dict:
    response = client.post(path, json=body)
    assert response.status_code == 200, response.text
    return response.json()


def numpy_forward(run, pixels: list[float]) -> dict[str, np.ndarray]:
    """digitsnet's feature stack by hand in NumPy from the checkpoint's tensors: TF SAME padding, BN with
    population statistics, ReLU, SAME max pool."""
    trained = load_trained(run)
    state = {k: v.detach().numpy().astype(np.float64) for k, v in trained.model.state_dict().items()}
    shift, scale = trained.preprocessing.shift.numpy(), trained.preprocessing.scale.numpy()
    x = ((np.array(pixels).reshape(1, 8, 8) * 16 / 255) - shift) * scale  # 255 -> the digits' 16

    def conv(x, weight, bias, stride, pads):  # pads: top, bottom, left, right
        top, bottom, left, right = pads
        x = np.pad(x, ((0, 0), (top, bottom), (left, right)))
        k = weight.shape[-1]
        size = (x.shape[1] - k) // stride + 1
        out = np.zeros((weight.shape[0], size, size))
        for o in range(weight.shape[0]):
            for i in range(size):
                for j in range(size):
                    out[o, i, j] = (x[:, i * stride:i * stride + k, j * stride:j * stride + k] * weight[o]).sum()
            out[o] += bias[o]
        return out

    conv1 = conv(x, state["features.conv1.weight"], state["features.conv1.bias"], 1, (1, 1, 1, 1))
    relu1 = np.maximum(conv1, 0)
    # SAME, stride 2, 8x8: out 4, total pad (4-1)*2+3-8 = 1, all of it after (bottom/right), as TF does.
    conv2 = conv(relu1, state["features.conv2.weight"], state["features.conv2.bias"], 2, (0, 1, 0, 1))
    bn = (conv2 - state["features.bn2.running_mean"][:, None, None]) / np.sqrt(
        state["features.bn2.running_var"][:, None, None] + 1e-3) * state["features.bn2.weight"][:, None, None] \
        + state["features.bn2.bias"][:, None, None]
    relu2 = np.maximum(bn, 0)
    padded = np.pad(relu2, ((0, 0), (0, 1), (0, 1)), constant_values=-np.inf)  # 4x4 -> 2x2, pad bottom/right
    pool = np.array([[[padded[c, 2 * i:2 * i + 3, 2 * j:2 * j + 3].max() for j in range(2)] for i in range(2)]
                     for c in range(5)])
    return {"input": x, "conv1": conv1, "relu1": relu1, "conv2": conv2, "relu2": relu2, "pool2": pool}


def test_prediction_and_upload_equal_cnnkit_predict(run, client, tmp_path, capsys):
    pixels = digit_pixels(run, 7)
    path = tmp_path / "digit.png"
    Image.fromarray(np.array(pixels, dtype=np.uint8).reshape(8, 8)).save(path)
    assert main(["predict", str(run), str(path), "--top-k", "5", "--json"]) == 0
    expected = json.loads(capsys.readouterr().out)[0]["top"]
    uploaded = client.post("/api/upload", content=path.read_bytes(), headers={"Content-Type": "image/png"})
    assert uploaded.status_code == 200 and uploaded.json()["pixels"] == pixels
    got = post(client, "/api/predict", {"image": {"pixels": pixels}, "top_k": 5})["top"]
    assert [t["class"] for t in got] == [t["class"] for t in expected]
    np.testing.assert_allclose([t["probability"] for t in got], [t["probability"] for t in expected], atol=1e-6)


def test_maps_equal_the_forward_pass_by_hand(run, client):
    pixels = digit_pixels(run, 3)
    reference = numpy_forward(run, pixels)
    layers = {"features.conv1": 0, "features.conv2": 0, "features.pool2": 0}
    post_maps = post(client, "/api/predict", {"image": {"pixels": pixels}, "layers": layers})["maps"]
    pre_maps = post(client, "/api/predict", {"image": {"pixels": pixels}, "layers": layers,
                                             "activation": "pre"})["maps"]
    for unit, pre, post_name, shape in (("features.conv1", "conv1", "relu1", (10, 8, 8)),
                                        ("features.conv2", "conv2", "relu2", (5, 4, 4)),
                                        ("features.pool2", "pool2", "pool2", (5, 2, 2))):
        np.testing.assert_allclose(floats(post_maps[unit]["data"], shape), reference[post_name], atol=1e-4)
        np.testing.assert_allclose(floats(pre_maps[unit]["data"], shape), reference[pre], atol=1e-4)
        assert post_maps[unit]["low"] == pytest.approx(reference[post_name].min(), abs=1e-4)
    assert post_maps["features.conv2"]["layer"] == "features.relu2"  # after BN and ReLU by default
    assert float(reference["relu1"].min()) == 0 and float(reference["conv1"].min()) < 0  # the toggle matters


def test_cell_of_same_stride2_conv_at_the_border_adds_up(run, client):
    pixels = digit_pixels(run, 3)
    reference = numpy_forward(run, pixels)
    state = load_trained(run).model.state_dict()
    channel, y, x = 2, 3, 3  # bottom-right: its window reads TF SAME's extra bottom row and right column
    cell = post(client, "/api/cell", {"image": {"pixels": pixels}, "layer": "features.conv2", "channel": channel,
                                      "y": y, "x": x})
    assert cell["window"]["rows"] == [6, 7, 8] and cell["window"]["cols"] == [6, 7, 8]
    assert cell["window"]["pads"] == {"top": 0, "bottom": 1, "left": 0, "right": 1}
    weight = state["features.conv2.weight"][channel].double().numpy()
    bias = float(state["features.conv2.bias"][channel])
    total = bias
    for c, entry in enumerate(cell["channels"]):
        patch = entry["patch"]
        assert patch[2] == [None, None, None] and [row[2] for row in patch] == [None, None, None]  # padding
        np.testing.assert_allclose(np.array([row[:2] for row in patch[:2]]), reference["relu1"][c, 6:8, 6:8],
                                   atol=1e-5)
        by_hand = (reference["relu1"][c, 6:8, 6:8] * weight[c, :2, :2]).sum()
        assert entry["sum"] == pytest.approx(by_hand, abs=1e-5)
        total += by_hand
    assert cell["bias"] == pytest.approx(bias)
    assert cell["output"] == pytest.approx(total, abs=1e-5) == pytest.approx(reference["conv2"][channel, y, x],
                                                                            abs=1e-5)
    assert cell["map_value"]["pre"] == pytest.approx(total, abs=1e-4)
    bn, relu = cell["steps"]
    assert (bn["layer"], relu["layer"]) == ("features.bn2", "features.relu2")
    assert cell["value"] == pytest.approx(reference["relu2"][channel, y, x], abs=1e-5)
    assert cell["map_value"]["post"] == pytest.approx(cell["value"], abs=1e-4)
    # conv1 3x3 SAME -> field 3, jump 1, starting at -1; conv2 3x3/2 -> field 5, jump 2: cell 3 sees rows 5..9.
    assert cell["field"] == {"top": 5, "left": 5, "bottom": 9, "right": 9}


def test_max_pool_cell_never_picks_padding(run, client):
    pixels = digit_pixels(run, 11)
    reference = numpy_forward(run, pixels)
    cell = post(client, "/api/cell", {"image": {"pixels": pixels}, "layer": "features.pool2", "channel": 4,
                                      "y": 1, "x": 1})
    assert cell["window"]["rows"] == [2, 3, 4] and cell["channel_patch"][2] == [None, None, None]
    np.testing.assert_allclose(np.array([r[:2] for r in cell["channel_patch"][:2]]), reference["relu2"][4, 2:4, 2:4],
                               atol=1e-5)
    assert cell["output"] == pytest.approx(reference["pool2"][4, 1, 1], abs=1e-5)
    assert cell["map_value"]["post"] == pytest.approx(cell["output"], abs=1e-5)


def test_saliency_and_grad_cam_equal_autograd(run, client):
    pixels = digit_pixels(run, 5)
    why = post(client, "/api/why", {"image": {"pixels": pixels}, "class_index": 3})
    trained = load_trained(run)
    x = trained.prepare(torch.tensor(pixels, dtype=torch.float32).reshape(1, 1, 8, 8) * 16 / 255)
    x.requires_grad_(True)
    model = trained.model.eval()
    relu2 = model.features[:5](x)  # conv1, relu1, conv2, bn2, relu2: Grad-CAM's layer for digitsnet
    logit = model.head(model.features.pool2(relu2))[0, 3]
    gradient, grad_maps = torch.autograd.grad(logit, [x, relu2])
    np.testing.assert_allclose(floats(why["gradient"]["data"], (1, 8, 8)), gradient[0].numpy(), atol=1e-6)
    np.testing.assert_allclose(floats(why["saliency"]["data"], (8, 8)), np.abs(gradient[0].numpy()).max(0),
                               atol=1e-6)
    alpha = grad_maps[0].numpy().mean(axis=(1, 2))  # Selvaraju et al.: global-average-pooled gradients
    cam = np.maximum((alpha[:, None, None] * relu2[0].detach().numpy()).sum(0), 0)
    assert why["grad_cam"]["layer"] == "features.relu2" and why["class_index"] == 3
    np.testing.assert_allclose(floats(why["grad_cam"]["data"], (4, 4)), cam, atol=1e-6)


def test_heldout_strip_lists_misclassified_first(run, client, capsys):
    strip = client.get("/api/heldout").json()
    assert main(["evaluate", str(run), "--json"]) == 0
    metrics = json.loads(capsys.readouterr().out)
    confusion = np.array(metrics["confusion_matrix"])
    assert strip["count"] == confusion.sum() == 360
    assert strip["wrong"] == confusion.sum() - np.trace(confusion)
    flags = [item["correct"] for item in strip["images"]]
    assert flags == sorted(flags)  # every mistake before every correct answer
    wrong = [item for item in strip["images"] if not item["correct"]]
    assert all(a["confidence"] >= b["confidence"] for a, b in zip(wrong, wrong[1:], strict=False))
    first = strip["images"][0]
    top = post(client, "/api/predict", {"image": {"heldout": first["index"]}})["top"][0]
    assert (top["class"], top["probability"]) == (first["predicted"], pytest.approx(first["confidence"], abs=1e-6))


BAD_REQUESTS = [
    ("predict", b"{not json", 400, "Invalid JSON"),
    ("predict", {"image": {"pixels": [0.0] * 63}}, 400, "pixels has 63 values; the model takes 1x8x8 = 64"),
    ("predict", {"image": {"pixels": ["white"] * 64}}, 400, "image.pixels.0"),
    ("predict", {"image": {"pixels": [300.0] * 64}}, 400, "0..255; received 300"),
    ("predict", {"image": {"pixels": [0.0] * 64, "heldout": 1}}, 400, "either pixels or heldout"),
    ("predict", {"image": {"heldout": 100000}}, 400, "heldout index 100000 is out of range"),
    ("predict", {"image": {"path": "/etc/passwd"}}, 400, "image.path"),
    ("predict", {"image": {"heldout": 0}, "layers": {"features.conv9": 0}}, 400, "no layer named 'features.conv9'"),
    ("predict", {"image": {"heldout": 0}, "layers": {"features.conv1": 3}}, 400, "page 3 is out of range"),
    ("cell", {"image": {"heldout": 0}, "layer": "features.conv2", "channel": 5, "y": 0, "x": 0}, 400,
     "channel=5 is out of range"),
    ("cell", {"image": {"heldout": 0}, "layer": "features.conv2", "channel": 0, "y": 4, "x": 0}, 400,
     "y=4 is out of range for features.conv2's 5x4x4 output (0..3)"),
    ("cell", {"image": {"heldout": 0}, "layer": "head.fc1", "channel": 0, "y": 0, "x": 0}, 400,
     "only cells of conv and pool layers"),
    ("cell", {"image": {"heldout": 0}, "layer": "nope", "channel": 0, "y": 0, "x": 0}, 400, "no layer named 'nope'"),
    ("why", {"image": {"heldout": 0}, "class_index": 10}, 400, "class index 10 is out of range"),
]


@pytest.mark.parametrize(("route", "body", "status", "message"), BAD_REQUESTS)
def test_bad_requests_are_refused_and_the_server_keeps_serving(client, route, body, status, message):
    response = client.post(f"/api/{route}", content=body) if isinstance(body, bytes) else \
        client.post(f"/api/{route}", json=body)
    assert response.status_code == status and message in response.json()["error"], response.text
    assert "\n" not in response.json()["error"]
    assert client.post("/api/predict", json={"image": {"heldout": 0}}).status_code == 200


CELL = {"image": {"heldout": 0}, "layer": "features.conv2", "channel": 0, "y": 0, "x": 0}
# Each field given a JSON string, bool or float where an int is meant: refused, never read as 0, 1 or truncated.
WRONG_TYPES = [(route, {**body, field: value} if "." not in field else
                {**body, "image": {field.split(".")[1]: value}}, field)
               for route, body, fields in (
                   ("cell", CELL, ("channel", "y", "x", "image.heldout")),
                   ("scan", {"image": {"heldout": 0}, "layer": "features.conv2", "channel": 0, "input_channel": 0},
                    ("channel", "input_channel")),
                   ("predict", {"image": {"heldout": 0}}, ("top_k", "page_size", "max_side")),
                   ("why", {"image": {"heldout": 0}}, ("class_index",)),
                   ("dense", {"image": {"heldout": 0}, "layer": "head.out", "output": 0}, ("output",)),
                   ("window", {"height": 5, "width": 5, "kernel": 3}, ("height", "width", "kernel", "stride",
                                                                     "dilation")))
               for field in fields for value in ("0", True, 1.0, 0.5)]


@pytest.mark.parametrize(("route", "body", "field"), WRONG_TYPES)
def test_strings_bools_and_floats_for_ints_are_refused_naming_the_field(client, route, body, field):
    response = client.post(f"/api/{route}", json=body)
    assert response.status_code == 400, response.text
    assert response.json()["error"].startswith(f"{field}: "), response.text


def test_strict_requests_keep_what_the_page_sends(client, run):
    """JSON ints for float pixels, layer pages as ints, the padding union: every body shape the page uses."""
    pixels = [int(v) for v in digit_pixels(run, 0)]
    as_ints = post(client, "/api/predict", {"image": {"pixels": pixels}, "layers": {"features.conv1": 0},
                                            "activation": "pre", "top_k": 3, "page_size": 2, "max_side": 16})
    as_floats = post(client, "/api/predict", {"image": {"pixels": [float(v) for v in pixels]},
                                              "layers": {"features.conv1": 0}, "activation": "pre", "top_k": 3,
                                              "page_size": 2, "max_side": 16})
    assert as_ints == as_floats and len(as_ints["top"]) == 3
    post(client, "/api/cell", {**CELL, "image": {"pixels": pixels}})
    post(client, "/api/scan", {"image": {"pixels": pixels}, "layer": "features.conv2", "channel": 1,
                               "input_channel": 2})
    post(client, "/api/why", {"image": {"pixels": pixels}, "class_index": 3})
    post(client, "/api/dense", {"image": {"pixels": pixels}, "layer": "head.out", "output": 2})
    for padding in ("same", "valid", 1):
        post(client, "/api/window", {"kind": "conv", "height": 6, "width": 5, "kernel": 3, "stride": 2,
                                     "dilation": 1, "padding": padding})
    refused = client.post("/api/window", json={"height": 5, "width": 5, "kernel": 3, "padding": "1"})
    assert refused.status_code == 400 and refused.json()["error"].startswith("padding")
    refused = client.post("/api/predict", json={"image": {"heldout": 0}, "layers": {"features.conv1": "0"}})
    assert refused.status_code == 400 and refused.json()["error"].startswith("layers.features.conv1: ")


def test_bad_uploads_and_oversized_bodies(client):
    refused = [
        (client.post("/api/upload", content=b"not an image", headers={"Content-Type": "image/png"}), 400,
         "the uploaded file: unreadable"),
        (client.post("/api/upload", content=b"x", headers={"Content-Type": "text/plain"}), 415, "image/*"),
        (client.post("/api/upload", content=b"\0" * (MAX_UPLOAD_BYTES + 1), headers={"Content-Type": "image/png"}),
         413, "limit is 10,485,760"),
        (client.post("/api/predict", content=b" " * (MAX_JSON_BYTES + 1),
                     headers={"Content-Type": "application/json"}), 413, "limit"),
        (client.get("/api/nothing"), 404, "Not Found"),
    ]
    for response, status, message in refused:
        assert response.status_code == status and message in response.json()["error"], response.text
        assert "/tmp" not in response.json()["error"]  # never a path on the server
    assert client.get("/api/model").status_code == 200


def test_page_and_assets_are_served_without_other_origins(client):
    page = client.get("/")
    assert page.status_code == 200 and "default-src 'self'" in page.headers["content-security-policy"]
    for asset in ("main.js", "latest.js", "explore.css"):
        assert client.get(f"/static/{asset}").status_code == 200
    assert client.get("/static/../session.py").status_code == 404
    for path in STATIC.iterdir():
        text = path.read_text().replace('"http://www.w3.org/2000/svg"', "")  # a namespace name, never fetched
        assert "http://" not in text and "https://" not in text, path  # nothing loads from a CDN


def test_untrained_registry_model_says_so():
    explorer = Explorer.open("lenet5_modern")
    described = explorer.describe()
    assert described["trained"] is False and described["title"] == "lenet5_modern"
    assert explorer.heldout() == {"available": False, "reason": "lenet5_modern has no training run, so no held-out "
                                  "images", "images": []}


@pytest.mark.parametrize(("name", "shape", "blocks", "branches"), [
    ("resnet18", (3, 32, 32), 8, {"residual", "shortcut"}),
    ("googlenet", (3, 32, 32), 9, {f"branches.branches.{i}" for i in range(4)}),
    ("lenet5", (1, 32, 32), 0, set()),
    ("digits_cnn", (1, 8, 8), 0, set()),
])
def test_units_fields_and_branches_for_each_family(name, shape, blocks, branches):
    explorer = Explorer(untrained(name, shape), name)
    units, rows = explorer.units, explorer.rows  # rows: summary.py's table, counted independently
    assert [n for u in units for n in u.names] == list(rows)  # every summary row, in order, in one unit
    for unit in units:  # the receptive field agrees with summary.py's independent count
        expected = rows[unit.id].receptive_field
        assert (unit.field.size[0] if unit.field else None) == expected, unit.id
    assert len({u.block for u in units if u.block}) == blocks
    assert {u.branch for u in units if u.branch} == branches
    fusions = [u for u in units if u.block and u.branch is None]
    assert all(u.types[0] == "Fuse" for u in fusions) and len(fusions) == blocks
    if name == "resnet18":
        assert fusions[0].names[1:] == [f"{fusions[0].block}.relu"]  # the ReLU after the addition joins it
    # Conv and pool units across the model (about six): the last cell's arithmetic reaches the map value.
    image = explorer.image(pixels=torch.rand(math.prod(shape)).mul(255).tolist())
    explainable = [u for u in units if u.kind != "other"]
    for unit in explainable[::math.ceil(len(explainable) / 6)] + explainable[-1:]:
        c, h, w = unit.shape
        cell = explorer.cell(image, unit.id, c - 1, h - 1, w - 1)
        assert cell["value"] == pytest.approx(cell["map_value"]["post"], rel=1e-4, abs=1e-4), unit.id
        assert cell["output"] == pytest.approx(cell["map_value"]["pre"], rel=1e-4, abs=1e-4), unit.id


def test_grouped_conv_cell_reads_only_its_group():
    model = get_model("alexnet", num_classes=10, in_channels=3, input_size=32, groups=2).eval()
    explorer = Explorer(Trained(model, None, {}, list("0123456789"), (3, 32, 32), 255.0, trained=False), "alexnet")
    image = explorer.image(pixels=torch.rand(3 * 32 * 32).mul(255).tolist())
    cell = explorer.cell(image, "features.conv2", 200, 3, 4)  # conv2: 96 -> 256 in two groups of 48 -> 128
    assert [c["input_channel"] for c in cell["channels"]] == list(range(48, 96))
    assert cell["output"] == pytest.approx(cell["map_value"]["pre"], rel=1e-4, abs=1e-4)


def test_map_pages_average_big_maps_down():
    maps = torch.randn(40, 130, 70)
    page = map_page(maps, 1, page_size=32, max_side=64)
    assert (page["first"], page["count"], page["pages"], page["scale"], page["size"]) == (32, 8, 2, 3, [44, 24])
    shown = floats(page["data"], (8, 44, 24))
    array = maps.numpy()[32:]
    for i, j in ((0, 0), (43, 23), (20, 5)):  # the last row/column blocks hold only the real cells (130 = 43*3+1)
        block = array[:, 3 * i:3 * i + 3, 3 * j:3 * j + 3]
        np.testing.assert_allclose(shown[:, i, j], block.mean(axis=(1, 2)), atol=1e-5)
    assert (page["low"], page["high"]) == (float(maps.min()), float(maps.max()))
    vector = map_page(torch.arange(10_000, dtype=torch.float32), 0)
    assert (vector["scale"], vector["size"]) == (3, [3334])
    assert floats(vector["data"], 3334)[-1] == pytest.approx(9999.0)  # the last "block" is one value


def test_cli_explore_prints_the_url_and_warns_for_all_interfaces():
    process = subprocess.Popen([sys.executable, "-m", "cnnkit", "explore", "digitsnet", "--no-browser", "--host",
                                "0.0.0.0"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = process.stdout.readline()
        assert line.startswith("exploring digitsnet at http://127.0.0.1:"), line + process.stderr.read()
        url = line.split()[3]
        assert httpx.get(url + "api/model", timeout=30).json()["model"] == "digitsnet"
    finally:
        process.terminate()
        _, err = process.communicate(timeout=30)
    assert "warning: --host 0.0.0.0 makes the explorer and its model reachable by other machines" in err


def test_keep_alive_requests_are_not_held_back_by_delayed_acks():
    # A listening socket made without IPPROTO_TCP leaves Nagle on for its connections: every keep-alive response
    # then waits ~40 ms for the client's delayed ACK, most of the 50 ms budget of a stroke.
    server = ExploreServer(Explorer.open("digitsnet")).start()
    try:
        with httpx.Client(base_url=server.url) as client:
            times = []
            for _ in range(11):
                started = time.perf_counter()
                client.post("/api/predict", json={"image": {"pixels": [0.0] * 64}}).raise_for_status()
                times.append(time.perf_counter() - started)
    finally:
        server.stop()
    assert sorted(times)[5] < 0.025, times


def test_cli_explore_refuses_unknown_sources_and_ports(capsys):
    assert main(["explore", "nosuchmodel", "--no-browser"]) == 2
    assert "neither a registered model" in capsys.readouterr().err
    assert main(["explore", "digitsnet", "--no-browser", "--port", "70000"]) == 2
    assert "cannot listen on 127.0.0.1:70000 (bind(): port must be 0-65535" in capsys.readouterr().err


def test_upload_decoder_handles_colour_files(client):
    buffer = io.BytesIO()
    Image.new("RGB", (40, 30), (255, 255, 255)).save(buffer, format="PNG")
    uploaded = client.post("/api/upload", content=buffer.getvalue(), headers={"Content-Type": "image/png"}).json()
    assert uploaded["shape"] == [1, 8, 8] and uploaded["pixels"] == [255.0] * 64  # white, grey, 8x8


def huge_copy(run, folder: Path, layer: str) -> Path:
    """The stem of a copy of the run's best checkpoint whose `layer` weights are 3e38: finite, so the load-time
    NaN/inf check passes, but float32 overflows on any image."""
    from safetensors.torch import save_file

    from cnnkit.store.checkpoint import META_KEY, load_checkpoint

    tensors, meta = load_checkpoint(run / "best")
    weight = tensors[f"model.{layer}.weight"].clone()
    weight[:] = 3e38
    tensors[f"model.{layer}.weight"] = weight
    stem = folder / f"huge_{layer.replace('.', '_')}"
    text = json.dumps(meta, indent=1)
    save_file(tensors, f"{stem}.safetensors", metadata={META_KEY: text})
    Path(f"{stem}.json").write_text(text)
    return stem


@pytest.mark.parametrize("layer", ["features.conv1", "head.out"])
def test_finite_but_huge_weights_are_refused_naming_the_layer(run, tmp_path, layer):
    stem = huge_copy(run, tmp_path, layer)
    white = [255.0] * 64
    first = first_overflow(stem, white)  # the reference: the forward pass really overflows, at this layer
    assert first is not None and first_or_after(first, layer)
    expected = ("the model's output for this image is not finite (inf/NaN): its weights are out of range "
                f"(layer {first} overflows first; its largest weight is 3e+38)")
    with TestClient(create_app(Explorer.open(str(stem))), raise_server_exceptions=False) as client:
        for route, body in (("predict", {"image": {"pixels": white}, "layers": {"features.conv1": 0}}),
                            ("why", {"image": {"pixels": white}}), ("predict", {"image": {"pixels": white}})):
            response = client.post(f"/api/{route}", json=body)
            assert response.status_code == 400, response.text
            assert response.json()["error"] == expected
        strip = client.get("/api/heldout").json()
        assert strip["available"] is False and strip["reason"].startswith(expected.split(" (layer")[0])
        assert client.get("/api/model").status_code == 200  # the page still opens


def first_overflow(stem: Path, pixels: list[float]) -> str | None:
    """The first leaf layer whose output is not finite, by forward hooks on cnnkit.load's model."""
    import cnnkit

    trained = cnnkit.load(str(stem)).trained
    order = []
    handles = [m.register_forward_hook(lambda _m, _i, out, n=n: order.append((n, bool(torch.isfinite(out).all()))))
               for n, m in trained.model.named_modules() if n and not list(m.children())]
    with torch.no_grad():
        trained.model(trained.prepare(torch.tensor(pixels).reshape(1, 1, 8, 8) * (16 / 255)))
    for handle in handles:
        handle.remove()
    return next((n for n, finite in order if not finite), None)


def first_or_after(found: str, layer: str) -> bool:
    """Whether `found` is `layer` or runs after it (digitsnet's forward order)."""
    order = ["features.conv1", "features.relu1", "features.conv2", "features.bn2", "features.relu2",
             "features.pool2", "head.flatten", "head.fc1", "head.relu3", "head.out"]
    return order.index(found) >= order.index(layer)


def test_every_json_answer_is_strict_and_a_non_finite_one_is_a_400():
    from cnnkit.explore.respond import ApiError, reply

    assert json.loads(reply({"a": [1.5, 3e38]}).body) == {"a": [1.5, 3e38]}
    for bad in (math.inf, -math.inf, math.nan):
        with pytest.raises(ApiError, match="not finite") as raised:
            reply({"top": [{"probability": bad}]})
        assert raised.value.status == 400
    explore = Path(__file__).resolve().parents[1] / "src" / "cnnkit" / "explore"
    for path in explore.glob("*.py"):  # the one encoder: no route builds a JSONResponse (allow_nan) of its own
        assert "JSONResponse" not in path.read_text(), path.name


def test_a_checkpoint_stem_opens_as_compare_takes_it(run, capsys):
    stem = str(run / "best")  # runA/best: no such file, but runA/best.safetensors is
    assert not Path(stem).exists()
    explorer = Explorer.open(stem)
    assert explorer.trained.trained and explorer.title == "best"
    assert main(["explore", str(run / "nothing"), "--no-browser"]) == 2
    assert "neither a registered model" in capsys.readouterr().err
