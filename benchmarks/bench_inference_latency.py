"""One-image predict latency (median and p99) for digitsnet and resnet18: eager, compiled, ONNX Runtime."""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import torch
from common import latency_ms, machine, percentile

from cnnkit.models import get_model


def timings(fn, repeats: int) -> dict:
    values = latency_ms(fn, repeats, warmup=5)
    return {"median_ms": round(percentile(values, 50), 3), "p99_ms": round(percentile(values, 99), 3)}


def run(quick: bool = False) -> dict:
    rows = []
    for name, shape in (("digitsnet", (1, 8, 8)), ("resnet18", (3, 224, 224))):
        model = get_model(name, in_channels=shape[0], input_size=shape[1:]).eval()
        x = torch.rand(1, *shape)
        repeats = 20 if quick else (300 if name == "digitsnet" else 40)
        row = {"model": name, "input": "x".join(map(str, shape))}
        with torch.no_grad():
            row["eager"] = timings(lambda m=model, x=x: m(x), repeats)
            if not quick or name == "digitsnet":
                compiled = torch.compile(model)
                started = time.perf_counter()
                compiled(x)
                row["compile_seconds"] = round(time.perf_counter() - started, 1)
                row["compiled"] = timings(lambda c=compiled, x=x: c(x), repeats)
        try:
            import onnxruntime as ort

            from cnnkit.interop.export import export_onnx

            with tempfile.TemporaryDirectory() as tmp:
                path = export_onnx(model, shape, Path(tmp) / "m.onnx")
                options = ort.SessionOptions()
                options.intra_op_num_threads = torch.get_num_threads()
                session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
                feed = {session.get_inputs()[0].name: x.numpy()}
                row["onnxruntime"] = timings(lambda s=session, f=feed: s.run(None, f), repeats)
        except ImportError:
            row["onnxruntime"] = "onnxruntime not installed"
        rows.append(row)
    return {"machine": machine(), "rows": rows}
