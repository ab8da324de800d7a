"""What the explore page asks of one model: its layers, predictions with maps, a cell's arithmetic, saliency.

The page works in display values 0..255 (white = 255); the model's training scale maps 255 to `pixel_max`, the
same conversion `cnnkit predict` applies to image files, so a drawn or uploaded image gets the same answer there.
Every request names an image by its pixels or by its index in the held-out strip, never by a file path.
"""

from __future__ import annotations

import base64
import math
import tempfile
import threading
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from cnnkit.analysis.inference import Trained, evaluation_data, logits_of, open_model
from cnnkit.analysis.saliency import grad_cam, input_gradient, saliency_map
from cnnkit.analysis.summary import summarize
from cnnkit.analysis.trace import Unit, downsample_factor, grad_cam_layer, record, trace_units
from cnnkit.core.errors import CnnkitError
from cnnkit.data.safety import decode_image
from cnnkit.explore.cell import explain_cell
from cnnkit.explore.graph import unit_inputs
from cnnkit.explore.respond import encode, refuse_non_finite
from cnnkit.explore.scan import dense_output, scan_plane

PAGE_SIZE = 32  # maps sent per layer and request; the page pages through the rest
MAX_SIDE = 64  # a larger map is averaged down to at most this many cells a side
MAX_VECTOR = 4096  # a longer vector (flatten, dense) is averaged down to at most this many values
HELDOUT_LIMIT = 512  # held-out images predicted for the strip
MAX_UPLOAD_BYTES = 10 * 1024**2


def map_page(output: torch.Tensor, page: int, page_size: int = PAGE_SIZE, max_side: int = MAX_SIDE) -> dict:
    """One page of a layer's (C, H, W) maps, or its whole (F,) vector, averaged down when large, with the
    layer's value range over every map (one colour scale per layer)."""
    low, high = float(output.min()), float(output.max())
    if output.dim() == 1:
        if page != 0:
            raise CnnkitError(f"page {page} is out of range; a vector layer has one page (0)")
        factor = math.ceil(len(output) / MAX_VECTOR)
        shown = F.avg_pool1d(output[None, None], factor, factor, ceil_mode=True)[0, 0] if factor > 1 else output
        return {"kind": "vector", "length": len(output), "scale": factor, "low": low, "high": high,
                "size": [len(shown)], "data": encode(shown)}
    channels, h, w = output.shape
    pages = math.ceil(channels / page_size)
    if not 0 <= page < pages:
        raise CnnkitError(f"page {page} is out of range; {channels} maps make {pages} page(s) of {page_size} "
                          f"(0..{pages - 1})")
    chunk = output[page * page_size:(page + 1) * page_size]
    factor = downsample_factor(h, w, max_side)
    if factor > 1:  # each shown cell is the mean of the real cells of its factor x factor block
        chunk = F.avg_pool2d(chunk[None], factor, factor, ceil_mode=True)[0]
    return {"kind": "maps", "channels": channels, "first": page * page_size, "count": len(chunk),
            "page": page, "pages": pages, "scale": factor, "size": list(chunk.shape[1:]), "low": low, "high": high,
            "data": encode(chunk)}


class Explorer:
    """One model opened for exploring: units, summary rows, the held-out strip and the page's computations.

    Requests are served one at a time (a lock): hooks on a shared model must not interleave.
    """

    def __init__(self, trained: Trained, title: str) -> None:
        self.title = title
        self.lock = threading.Lock()
        self._heldout_total = 0  # images in the split before the strip's cut
        self.training = None  # cnnkit.explore.learn.Training with `cnnkit explore --train`
        self.use(trained)

    def use(self, trained: Trained) -> None:
        """Explore `trained` from now on: its units, summary rows, connections and Grad-CAM layer (the held-out
        strip reopens with its run). The caller holds the lock once requests are being served."""
        self.trained = trained
        self.units = trace_units(trained.model, trained.input_shape)
        self.by_id = {unit.id: unit for unit in self.units}
        self.rows = {row.name: row for row in summarize(trained.model, trained.input_shape).rows}
        self.inputs = unit_inputs(self.units)
        self.cam_layer = grad_cam_layer(self.units) if any(u.kind == "conv" for u in self.units) else None
        self._heldout: tuple[torch.Tensor, torch.Tensor, str] | None = None

    @classmethod
    def open(cls, source: str, input_shape: tuple[int, int, int] | None = None,
             num_classes: int | None = None) -> Explorer:
        """A run directory, checkpoint or registered model name (fresh weights)."""
        trained = open_model(source, input_shape, num_classes)
        return cls(trained, Path(source).name if trained.trained else source)

    # --- what the page shows before any image -------------------------------------------------------------------

    def describe(self) -> dict:
        """The model, its classes and every unit with its summary rows."""
        summary_rows = [asdict(row) for row in self.rows.values()]
        modules = dict(self.trained.model.named_modules())
        return {
            "title": self.title, "model": getattr(self.trained.model, "model_name", type(self.trained.model).__name__),
            "trained": self.trained.trained, "input_shape": list(self.trained.input_shape),
            "classes": self.trained.class_names, "page_size": PAGE_SIZE, "max_side": MAX_SIDE,
            "max_upload_bytes": MAX_UPLOAD_BYTES, "grad_cam_layer": self.cam_layer,
            "units": [self._describe_unit(unit, modules) for unit in self.units],
            "totals": {key: sum(r[key] for r in summary_rows) for key in ("trainable", "non_trainable", "macs")},
            "training": self.training is not None,
        }

    def _describe_unit(self, unit: Unit, modules: dict) -> dict:
        merge = getattr(modules.get(unit.names[0]), "mode", None) if unit.types[0] == "Fuse" else None
        return {"id": unit.id, "names": unit.names, "types": unit.types, "shape": list(unit.shape),
                "merge": merge,  # a fusion's mode: 'concat' stacks its inputs' maps, 'add' etc. combine channel c
                "kind": unit.kind, "explainable": unit.kind != "other" and len(unit.shape) == 3,
                "block": unit.block, "branch": unit.branch, "activation": unit.has_activation,
                "inputs": self.inputs[unit.id],
                "rows": [asdict(self.rows[n]) for n in unit.names if n in self.rows]}

    # --- images -------------------------------------------------------------------------------------------------

    def image(self, pixels: list[float] | None = None, heldout: int | None = None) -> torch.Tensor:
        """A (1, C, H, W) image in the training scale, from display pixels (C*H*W values, 0..255, row-major) or
        the held-out image at index `heldout`."""
        if (pixels is None) == (heldout is None):
            raise CnnkitError("give the image as either pixels or heldout (an index into the held-out strip)")
        if heldout is not None:
            images = self.heldout_data()[0]
            if not 0 <= heldout < len(images):
                raise CnnkitError(f"heldout index {heldout} is out of range (0..{len(images) - 1})")
            return images[heldout:heldout + 1]
        c, h, w = self.trained.input_shape
        if len(pixels) != c * h * w:
            raise CnnkitError(f"pixels has {len(pixels)} values; the model takes {c}x{h}x{w} = {c * h * w} "
                              "(channel, row, column order)")
        values = torch.tensor(pixels, dtype=torch.float32)
        if not bool(((values >= 0) & (values <= 255)).all()):
            bad = values[~((values >= 0) & (values <= 255))][0]
            raise CnnkitError(f"pixel values must lie in 0..255; received {float(bad)}")
        return values.reshape(1, c, h, w) * (self.trained.pixel_max / 255.0)

    def decode_upload(self, data: bytes) -> dict:
        """An uploaded image file as display pixels at the model's size and channels."""
        if len(data) > MAX_UPLOAD_BYTES:
            raise CnnkitError(f"the upload has {len(data):,} bytes; the limit is {MAX_UPLOAD_BYTES:,}")
        c, h, w = self.trained.input_shape
        if c not in (1, 3):
            raise CnnkitError(f"the model expects {c} channels; image files give 1 (grey) or 3 (RGB)")
        with tempfile.TemporaryDirectory() as folder:  # the same hardened decoder `cnnkit predict` uses
            path = Path(folder) / "upload"
            path.write_bytes(data)
            try:
                array = decode_image(path, (h, w), grey=c == 1)
            except CnnkitError as error:  # the message names the upload, never a path on the server
                raise CnnkitError(str(error).replace(str(path), "the uploaded file")) from None
        return {"pixels": array.astype(np.float32).reshape(-1).tolist(), "shape": [c, h, w]}

    def heldout_data(self) -> tuple[torch.Tensor, torch.Tensor, str]:
        """The run's held-out test images (training scale), labels and description; refused for a model without a
        training run."""
        if self._heldout is None:
            if not self.trained.trained or "config" not in self.trained.meta:
                raise CnnkitError(f"{self.title} has no training run, so no held-out images")
            images, labels, described = evaluation_data(self.trained, None)
            self._heldout = images[:HELDOUT_LIMIT], labels[:HELDOUT_LIMIT], described
            self._heldout_total = len(images)
        return self._heldout

    def heldout(self) -> dict:
        """The strip: held-out images with true and predicted class and confidence, misclassified first (the most
        confident mistakes leading)."""
        try:
            with self.lock:
                images, labels, described = self.heldout_data()
                logits = logits_of(self.trained, images)
                if not bool(torch.isfinite(logits).all()):  # the strip says why it is empty instead of failing
                    bad = int((~torch.isfinite(logits).all(dim=1)).nonzero()[0])
                    refuse_non_finite(self.trained.model, self.trained.prepare(images[bad:bad + 1]), logits)
                probabilities = torch.softmax(logits, dim=1)
        except CnnkitError as error:
            return {"available": False, "reason": str(error), "images": []}
        confidence, predicted = probabilities.max(dim=1)
        wrong = predicted != labels
        order = sorted(range(len(labels)), key=lambda i: (not bool(wrong[i]), -float(confidence[i]) * bool(wrong[i])))
        thumbnails = (images * (255.0 / self.trained.pixel_max)).clamp(0, 255).round().to(torch.uint8)
        names = self.trained.class_names
        return {"available": True, "description": described, "count": len(labels), "total": self._heldout_total,
                "wrong": int(wrong.sum()),
                "images": [{"index": i, "true": names[int(labels[i])], "predicted": names[int(predicted[i])],
                            "confidence": float(confidence[i]), "correct": not bool(wrong[i]),
                            "pixels": base64.b64encode(thumbnails[i].numpy().tobytes()).decode()} for i in order]}

    # --- computations -------------------------------------------------------------------------------------------

    def unit(self, layer: str) -> Unit:
        """The unit whose head is `layer`."""
        if layer not in self.by_id:
            shown = ", ".join(list(self.by_id)[:12]) + (", ..." if len(self.by_id) > 12 else "")
            raise CnnkitError(f"no layer named {layer!r}; layers: {shown}")
        return self.by_id[layer]

    def predict(self, image: torch.Tensor, layers: dict[str, int], activation: str = "post", top_k: int = 5,
                page_size: int = PAGE_SIZE, max_side: int = MAX_SIDE) -> dict:
        """Top-k classes, every class's logit and one page of maps per requested unit (unit id -> page)."""
        units = [self.unit(name) for name in layers]
        wanted = {unit.output_name(activation) for unit in units}
        with self.lock:
            x = self.trained.prepare(image)
            logits, outputs, _ = record(self.trained.model, x, wanted)
            refuse_non_finite(self.trained.model, x, logits, *outputs.values())
        probabilities = torch.softmax(logits[0], dim=0)
        values, indices = probabilities.topk(min(top_k, len(probabilities)))
        names = self.trained.class_names
        maps = {unit.id: {"layer": unit.output_name(activation),
                          **map_page(outputs[unit.output_name(activation)][0], layers[unit.id], page_size, max_side)}
                for unit in units}
        return {"logits": logits[0].tolist(), "top": [{"class": names[int(i)], "index": int(i), "probability": float(p)}
                        for p, i in zip(values, indices, strict=True)], "maps": maps}

    def cell(self, image: torch.Tensor, layer: str, channel: int, y: int, x: int) -> dict:
        """The arithmetic of one cell of a conv or pool unit, with its receptive field on the input."""
        unit = self.unit(layer)
        if unit.kind == "other" or len(unit.shape) != 3:
            raise CnnkitError(f"{layer} is a {unit.types[0]}; only cells of conv and pool layers can be explained")
        for name, value, size in (("channel", channel, unit.shape[0]), ("y", y, unit.shape[1]),
                                  ("x", x, unit.shape[2])):
            if not 0 <= value < size:
                raise CnnkitError(f"{name}={value} is out of range for {layer}'s {'x'.join(map(str, unit.shape))} "
                                  f"output (0..{size - 1})")
        with self.lock:
            prepared = self.trained.prepare(image)
            _, outputs, inputs = record(self.trained.model, prepared, set(unit.names), {unit.pre})
            refuse_non_finite(self.trained.model, prepared, *outputs.values(), *inputs.values())
        explained = explain_cell(unit, inputs[unit.pre][0], {n: t[0] for n, t in outputs.items()}, channel, y, x)
        explained["field"] = unit.field.box(y, x) if unit.field is not None else None
        return explained

    def scan(self, image: torch.Tensor, layer: str, channel: int, input_channel: int | None = None) -> dict:
        """A whole map of a conv or pool unit with the input plane it slides over: what the animation plays."""
        unit = self.unit(layer)
        if unit.kind == "other" or len(unit.shape) != 3:
            raise CnnkitError(f"{layer} is a {unit.types[0]}; only conv and pool layers slide a window")
        if not 0 <= channel < unit.shape[0]:
            raise CnnkitError(f"channel={channel} is out of range for {layer} (0..{unit.shape[0] - 1})")
        with self.lock:
            x = self.trained.prepare(image)
            _, outputs, inputs = record(self.trained.model, x, {unit.pre}, {unit.pre})
            refuse_non_finite(self.trained.model, x, *outputs.values(), *inputs.values())
        return scan_plane(unit, inputs[unit.pre][0], outputs[unit.pre][0], channel, input_channel)

    def dense(self, image: torch.Tensor, layer: str, output: int) -> dict:
        """One output of a dense unit as bias plus weighted inputs, traced back to the flattened map."""
        unit = self.unit(layer)
        source = self._feeding(unit)
        while source is not None and source.types[0] in ("Flatten", "Dropout"):  # back to the map flattened
            source = self._feeding(source)
        with self.lock:
            x = self.trained.prepare(image)
            _, _, inputs = record(self.trained.model, x, set(), {unit.pre})
            refuse_non_finite(self.trained.model, x, *inputs.values())
        return dense_output(unit, inputs[unit.pre][0], output, source)

    def _feeding(self, unit: Unit) -> Unit | None:
        """The one unit whose output `unit` reads; None for the input image or a merge."""
        feeding = self.inputs[unit.id]
        return self.by_id[feeding[0]] if len(feeding) == 1 else None

    def why(self, image: torch.Tensor, class_index: int | None = None, layer: str | None = None) -> dict:
        """Saliency and Grad-CAM for a class (default: the predicted one) on a layer (default: the last conv's)."""
        with self.lock:
            x = self.trained.prepare(image)
            logits = logits_of(self.trained, image)[0]
            target = int(logits.argmax()) if class_index is None else class_index
            gradient = input_gradient(self.trained.model, x, target)
            cam_layer = layer or self.cam_layer
            cam = grad_cam(self.trained.model, x, target, cam_layer) if cam_layer else None
            refuse_non_finite(self.trained.model, x, logits, gradient, cam)
        heat = saliency_map(gradient)
        probabilities = torch.softmax(logits, dim=0)
        return {"class_index": target, "class": self.trained.class_names[target],
                "probability": float(probabilities[target]),
                "gradient": {"shape": list(gradient.shape), "data": encode(gradient)},
                "saliency": {"size": list(heat.shape), "high": float(heat.max()), "data": encode(heat)},
                "grad_cam": None if cam is None else {"layer": cam_layer, "size": list(cam.shape),
                                                      "high": float(cam.max()), "data": encode(cam)}}
