"""`cnnkit explore` round trip over real HTTP (the command's own uvicorn server in its own process, an httpx client):
a stroke's pixels in, the top classes and the maps of the visible layers out; targets 50 ms (digitsnet, digits_cnn)
and 150 ms (resnet18 at 32x32); also the overview (six small maps of every layer), the playground, and the animation's
scan of the first conv's map (round trip and reply size), at 224x224 too for resnet18's stem; and the digits_cnn
redraw while the same server trains the model (`cnnkit explore digits_cnn --train`), against the same target."""

from __future__ import annotations

import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import torch
from common import latency_ms, machine, percentile

from cnnkit.analysis.inference import untrained
from cnnkit.explore.session import Explorer

CASES = [("digitsnet", (1, 8, 8), 50.0), ("digits_cnn", (1, 8, 8), 50.0), ("resnet18", (3, 32, 32), 150.0)]
SCAN_ONLY = [("resnet18", (3, 224, 224))]  # the animation at ImageNet size: no redraw target, the scan timed
VISIBLE = 4  # cards on the first screen of the page (each card: one layer with its batch norm and activation)


def timings(fn, repeats: int) -> dict:
    values = latency_ms(fn, repeats)
    return {"median_ms": round(percentile(values, 50), 2), "p95_ms": round(percentile(values, 95), 2)}


def strokes(shape: tuple[int, int, int], count: int) -> list[list[float]]:
    """A growing stroke: each image adds a few white pixels to the last, as a drawing does."""
    image = torch.zeros(shape)
    generator = torch.Generator().manual_seed(0)
    frames = []
    for _ in range(count):
        y, x = (int(torch.randint(0, s, (1,), generator=generator)) for s in shape[1:])
        image[:, y, x] = 255.0
        frames.append(image.reshape(-1).tolist())
    return frames


def start_server(name: str, shape: tuple[int, int, int], *extra: str) -> tuple[subprocess.Popen, str]:
    """`cnnkit explore NAME` in its own process, as a user runs it (the browser is another process too)."""
    size = ["--input-size", "x".join(map(str, shape))] if not extra else []  # --train takes the recipe's size
    process = subprocess.Popen([sys.executable, "-m", "cnnkit", "explore", name, "--no-browser", *size, *extra],
                               stdout=subprocess.PIPE, text=True)
    line = process.stdout.readline()  # "exploring NAME at URL  (Ctrl+C stops)"
    if " at http" not in line:
        process.kill()
        raise RuntimeError(f"cnnkit explore {name} did not start: {line!r}")
    return process, line.split(" at ")[1].split()[0]


def scan_timing(client: httpx.Client, body: dict, repeats: int) -> tuple[dict, float]:
    """The scan's round trip and its reply size in kB."""
    size = len(client.post("/api/scan", json=body).raise_for_status().content) / 1000
    return timings(lambda: client.post("/api/scan", json=body).raise_for_status(), repeats), round(size, 1)


def measure_scan(name: str, shape: tuple[int, int, int], repeats: int) -> dict:
    """The first conv's animation at a large input: round trip and reply size."""
    first_conv = next(u for u in Explorer(untrained(name, shape), name).units if u.kind == "conv")
    pixels = strokes(shape, 1)[0]
    process, url = start_server(name, shape)
    try:
        transport = httpx.HTTPTransport(socket_options=[(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)])
        with httpx.Client(base_url=url, timeout=60, transport=transport) as client:
            scan, size = scan_timing(client, {"image": {"pixels": pixels}, "layer": first_conv.id, "channel": 0},
                                     repeats)
    finally:
        process.terminate()
        process.wait(30)
    return {"model": name, "input": "x".join(map(str, shape)), "layer": first_conv.id, "scan": scan, "scan_kb": size}


def measure(name: str, shape: tuple[int, int, int], target: float, repeats: int) -> dict:
    units = Explorer(untrained(name, shape), name).units
    frames = strokes(shape, 64)
    counter = iter(range(10**9))
    every = {u.id: 0 for u in units}
    process, url = start_server(name, shape)
    first_conv = next(u for u in units if u.kind == "conv")
    layer_sets = {"prediction_only": {}, "visible_layers": {u.id: 0 for u in units[:VISIBLE]},
                  "all_layers": every}
    row = {"model": name, "input": "x".join(map(str, shape)), "units": len(units), "target_ms": target}
    try:
        # No Nagle delay on the client's small writes, as browsers do (else each POST waits ~40 ms for an ACK).
        transport = httpx.HTTPTransport(socket_options=[(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)])
        with httpx.Client(base_url=url, timeout=60, transport=transport) as client:
            def request(path: str, body: dict) -> None:
                body["image"] = {"pixels": frames[next(counter) % len(frames)]}
                client.post(path, json=body).raise_for_status()

            for label, layers in layer_sets.items():
                row[label] = timings(lambda layers=layers: request("/api/predict", {"layers": layers}), repeats)
            c, h, w = first_conv.shape
            row["cell"] = timings(lambda: request("/api/cell", {"layer": first_conv.id, "channel": c - 1,
                                                                "y": h - 1, "x": w - 1}), repeats)
            row["why"] = timings(lambda: request("/api/why", {}), repeats)
            row["overview"] = timings(lambda: request("/api/predict", {"layers": every, "page_size": 6,
                                                                       "max_side": 16}), repeats)
            window = {"kind": "conv", "height": 7, "width": 7, "kernel": 3, "stride": 2, "padding": "same"}
            row["playground"] = timings(lambda: client.post("/api/window", json=window).raise_for_status(), repeats)
            scan = {"image": {"pixels": frames[0]}, "layer": first_conv.id, "channel": c - 1}
            row["scan"], row["scan_kb"] = scan_timing(client, scan, repeats)
    finally:
        process.terminate()
        process.wait(30)
    row["meets_target"] = row["visible_layers"]["median_ms"] <= target
    row["all_layers_meet_target"] = row["all_layers"]["median_ms"] <= target
    row["overview_meets_target"] = row["overview"]["median_ms"] <= target
    return row


def measure_while_training(repeats: int, target: float = 50.0) -> dict:
    """digits_cnn's redraw (visible layers) while the server trains it in its background thread."""
    shape = (1, 8, 8)
    units = Explorer(untrained("digits_cnn", shape), "digits_cnn").units
    frames = strokes(shape, 64)
    with tempfile.TemporaryDirectory() as folder:
        run_dir = str(Path(folder) / "run")
        process, url = start_server("digits_cnn", shape, "--train", "--epochs", "500", "--out", run_dir)
        try:
            transport = httpx.HTTPTransport(socket_options=[(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)])
            with httpx.Client(base_url=url, timeout=60, transport=transport) as client:
                client.post("/api/train/start", json={}).raise_for_status()
                while client.get("/api/train/status").json()["epoch"] < 1:  # the trainer is past its set-up
                    time.sleep(0.05)
                body = {"layers": {u.id: 0 for u in units[:VISIBLE]}}
                first = client.get("/api/train/status").json()["epoch"]
                values: list[float] = []
                while len(values) < repeats or (client.get("/api/train/status").json()["epoch"] < first + 3
                                                 and len(values) < 20 * repeats):  # over several whole epochs
                    image = {"pixels": frames[len(values) % len(frames)]}
                    started = time.perf_counter()
                    client.post("/api/predict", json={**body, "image": image}).raise_for_status()
                    values.append((time.perf_counter() - started) * 1e3)
                redraw = {"median_ms": round(percentile(values, 50), 2), "p95_ms": round(percentile(values, 95), 2),
                          "requests": len(values)}
                epochs = client.get("/api/train/status").json()["epoch"] - first
                client.post("/api/train/pause", json={}).raise_for_status()
                while client.get("/api/train/status").json()["state"] == "running":
                    time.sleep(0.05)
        finally:
            process.terminate()
            process.wait(30)
    return {"model": "digits_cnn", "visible_layers_while_training": redraw, "epochs_trained_meanwhile": epochs,
            "target_ms": target, "meets_target": redraw["median_ms"] <= target}


def run(quick: bool = False) -> dict:
    rows = [measure(name, shape, target, 10 if quick else (60 if target < 100 else 30))
            for name, shape, target in CASES]
    scans = [measure_scan(name, shape, 5 if quick else 15) for name, shape in SCAN_ONLY]
    training = measure_while_training(10 if quick else 60)
    return {"machine": machine(), "visible_layers": VISIBLE, "rows": rows, "scans": scans, "while_training": training}
