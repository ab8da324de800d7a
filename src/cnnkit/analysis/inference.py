"""Use a trained network: load a checkpoint, predict images or arrays, evaluate on labelled data."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import nn

from cnnkit.analysis.metrics import confusion_matrix, macro_average, precision_recall_f1
from cnnkit.core.errors import CnnkitError
from cnnkit.data import ImageDataset, Preprocessing, load_source
from cnnkit.data.arrays import read_npy as read_npy_array
from cnnkit.data.safety import decode_image
from cnnkit.models import get_model, list_models, model_info
from cnnkit.store.checkpoint import model_from_checkpoint, resolve_checkpoint
from cnnkit.store.footprint import check_footprint
from cnnkit.train.config import TrainConfig
from cnnkit.train.data import load_split


@dataclass
class Trained:
    """A checkpoint's model (eval mode) with everything needed to feed it."""

    model: nn.Module
    preprocessing: Preprocessing | None
    meta: dict
    class_names: list[str]
    input_shape: tuple[int, int, int]  # (C, H, W)
    pixel_max: float
    trained: bool = True  # False for a registry model with freshly initialised weights

    def check_shape(self, images: torch.Tensor, what: str = "images") -> None:
        """Refuse a batch whose channels or size differ from the model's input."""
        if images.dim() != 4 or images.shape[1] != self.input_shape[0]:
            raise CnnkitError(f"{what}: shape {tuple(images.shape)}; the model expects (N, {self.input_shape[0]}, "
                              f"{self.input_shape[1]}, {self.input_shape[2]}) ({self.input_shape[0]} channel(s))")
        if tuple(images.shape[2:]) != self.input_shape[1:]:
            raise CnnkitError(f"{what}: {images.shape[2]}x{images.shape[3]} images; the model expects "
                              f"{self.input_shape[1]}x{self.input_shape[2]}")

    def prepare(self, images: torch.Tensor) -> torch.Tensor:
        """Stored-scale (N, C, H, W) images -> model input, checking channels and size."""
        self.check_shape(images)
        return self.preprocessing(images) if self.preprocessing is not None else images


def load_trained(path: str | Path) -> Trained:
    """Load a run directory or checkpoint for inference."""
    model, preprocessing, meta = model_from_checkpoint(path)
    if meta.get("config") is not None:  # validated here, where the config's type is known (store sits below train)
        TrainConfig.from_dict(meta["config"], f"{resolve_checkpoint(path)}.safetensors: the checkpoint's config")
    spec = meta["model"]
    shape = (spec["in_channels"], *spec["input_size"])
    pixel_max = float(meta.get("data", {}).get("pixel_max", 255.0))
    names = meta.get("class_names") or [str(i) for i in range(spec["num_classes"])]
    return Trained(model, preprocessing, meta, names, shape, pixel_max)


def untrained(name: str, input_shape: tuple[int, int, int] | None = None, num_classes: int | None = None) -> Trained:
    """A registry model with fresh weights, fed raw 0..255 images (no preprocessing); a size that would not fit in
    memory is refused before anything is allocated."""
    info = model_info(name)
    check_footprint(name, num_classes, tuple(input_shape) if input_shape else info.input_size, {})
    model = get_model(name, num_classes=num_classes, in_channels=input_shape[0] if input_shape else None,
                      input_size=input_shape[1:] if input_shape else None).eval()
    classes = model_info(name).num_classes if num_classes is None else num_classes
    return Trained(model, None, {}, [str(i) for i in range(classes)], model.input_shape, 255.0, trained=False)


def open_model(source: str, input_shape: tuple[int, int, int] | None = None, num_classes: int | None = None) -> Trained:
    """A checkpoint or run directory, or else a registered model name (fresh weights)."""
    if source in list_models() and not Path(source).exists():
        return untrained(source, input_shape, num_classes)
    if not Path(source).exists():
        raise CnnkitError(f"{source!r} is neither a registered model (see `cnnkit models`) nor a checkpoint path")
    trained = load_trained(source)
    if input_shape and tuple(input_shape) != trained.input_shape:
        raise CnnkitError(f"the checkpoint's model takes {'x'.join(map(str, trained.input_shape))}; received "
                          f"--input-size {'x'.join(map(str, input_shape))}")
    return trained


def read_inputs(paths: list[str], trained: Trained) -> tuple[torch.Tensor, list[str]]:
    """Image files and .npy arrays (an image (H, W) or (C, H, W), or a batch (N, C, H, W)) as one stored-scale
    batch, with a name per image (`file.npy[i]` for the images of a batch array)."""
    parts, names = [], []
    for path in paths:
        if path.endswith(".npy"):
            batch = read_npy(Path(path))
            trained.check_shape(batch, path)
            names += [path] if len(batch) == 1 else [f"{path}[{i}]" for i in range(len(batch))]
        else:
            batch = read_image_files([path], trained)
            names.append(path)
        parts.append(batch)
    return torch.cat(parts), names


def read_npy(path: Path) -> torch.Tensor:
    """A .npy array without pickles as an (N, C, H, W) float batch (dtype, size and values checked on reading)."""
    array = read_npy_array(path)
    array = array[None, None] if array.ndim == 2 else array[None] if array.ndim == 3 else array
    return torch.as_tensor(array, dtype=torch.float32)


def read_image_files(paths: list[str | Path], trained: Trained) -> torch.Tensor:
    """Decode image files to the model's channels and size, in the training data's scale (255 -> pixel_max)."""
    channels, h, w = trained.input_shape
    if channels not in (1, 3):
        raise CnnkitError(f"the model expects {channels} channels; image files give 1 (grey) or 3 (RGB)")
    arrays = [decode_image(Path(p), (h, w), grey=channels == 1) for p in paths]
    return torch.from_numpy(np.stack(arrays)).float() * (trained.pixel_max / 255.0)


@torch.no_grad()
def predict(trained: Trained, images: torch.Tensor, top_k: int = 3, batch_size: int = 256) -> list[dict]:
    """Class and top-k probabilities per stored-scale image; each image's answer is independent of its batch."""
    x = trained.prepare(images)
    probs = torch.cat([torch.softmax(trained.model(x[i:i + batch_size]), dim=1) for i in range(0, len(x), batch_size)])
    k = min(top_k, probs.shape[1])
    values, indices = probs.topk(k, dim=1)
    names = trained.class_names
    return [{"class": names[int(i[0])], "index": int(i[0]), "probability": float(v[0]),
             "top": [{"class": names[int(j)], "probability": float(p)} for p, j in zip(v, i, strict=True)]}
            for v, i in zip(values, indices, strict=True)]


@torch.no_grad()
def logits_of(trained: Trained, images: torch.Tensor, batch_size: int = 256) -> torch.Tensor:
    """Model logits for stored-scale images."""
    x = trained.prepare(images)
    return torch.cat([trained.model(x[i:i + batch_size]) for i in range(0, len(x), batch_size)])


def evaluation_data(trained: Trained, data: str | None, progress: bool | None = None
                    ) -> tuple[torch.Tensor, torch.Tensor, str]:
    """(images, labels as the model's class indices, description): the run's own held-out test split, or every
    image of `data` with its classes matched to the model's by name."""
    if data is None:
        if not trained.meta.get("config"):
            raise CnnkitError("this checkpoint was not trained by cnnkit, so it has no held-out split to evaluate on; "
                              "pass --data PATH")
        config = TrainConfig.from_dict(trained.meta["config"], "the checkpoint's config")
        source, split = load_split(config, progress)
        index = split.test if len(split.test) else torch.arange(len(source))
        what = f"the run's held-out test split of {config.data}" if len(split.test) else "all data"
        return source.images[index], source.labels[index], what
    images, source = read_data(trained, data, progress)
    return images, model_labels(trained, source, data), f"all of {data}"


def model_labels(trained: Trained, source: ImageDataset, data: str) -> torch.Tensor:
    """The source's labels as indices of the model's classes, matched by class name (a folder holding only `3` and
    `7` is digits 3 and 7, not classes 0 and 1); a name the model does not know is refused."""
    index = {name: i for i, name in enumerate(trained.class_names)}
    unknown = [name for name in source.class_names if name not in index]
    if unknown:
        known = ", ".join(trained.class_names[:20]) + (", ..." if len(trained.class_names) > 20 else "")
        raise CnnkitError(f"{data}: class {unknown[0]!r} is not one of the model's classes ({known})")
    mapping = torch.tensor([index[name] for name in source.class_names], dtype=torch.long)
    return mapping[source.labels]


def read_data(trained: Trained, data: str, progress: bool | None = None) -> tuple[torch.Tensor, ImageDataset]:
    """Every image of a data source at the model's size, in the training data's scale, and the source itself."""
    source = load_source(data, trained.input_shape[1:], progress)
    if source.image_shape[0] != trained.input_shape[0]:
        raise CnnkitError(f"{data}: images have {source.image_shape[0]} channel(s); the model expects "
                          f"{trained.input_shape[0]}")
    return source.images * (trained.pixel_max / source.pixel_max), source


def evaluate_trained(trained: Trained, images: torch.Tensor, labels: torch.Tensor, top_k: int = 5) -> dict:
    """Accuracy, top-k accuracy, per-class precision/recall/F1 and the confusion matrix."""
    logits = logits_of(trained, images)
    predicted = logits.argmax(1)
    k = min(top_k, logits.shape[1])
    top = (logits.topk(k, dim=1).indices == labels[:, None]).any(dim=1)
    classes = list(range(len(trained.class_names)))
    # A class never predicted has no precision, one absent from the data no recall: None (not a misleading 0).
    true, guessed = labels.cpu().numpy(), predicted.cpu().numpy()
    precision, recall, f1, support = precision_recall_f1(true, guessed, classes)
    present = sorted(set(labels.tolist()))
    macro = macro_average(true, guessed, present)
    return {
        "count": len(labels), "accuracy": float((predicted == labels).float().mean()),
        f"top{k}_accuracy": float(top.float().mean()),
        "per_class": [{"class": name, "precision": _defined(p), "recall": _defined(r), "f1": _defined(f),
                       "support": int(s)}
                      for name, p, r, f, s in zip(trained.class_names, precision, recall, f1, support, strict=True)],
        "macro_average": {"precision": _defined(macro[0]), "recall": _defined(macro[1]), "f1": _defined(macro[2]),
                          "classes": len(present)},
        "confusion_matrix": confusion_matrix(true, guessed, classes).tolist(),
        "predicted": predicted.tolist(),
    }


def _defined(value: float) -> float | None:
    """A score as a float, or None where it is undefined (NaN)."""
    return None if np.isnan(value) else float(value)


def score_text(value: float | None) -> str:
    """A precision/recall/F1 for a table: three decimals, '-' where undefined."""
    return "-" if value is None else f"{value:.3f}"


def evaluate_checkpoint(checkpoint: str, data: str | None = None, top_k: int = 5,
                        progress: bool | None = None) -> dict:
    """Metrics of a checkpoint on its run's held-out test split, or on every image of `data`."""
    trained = load_trained(checkpoint)
    images, labels, described = evaluation_data(trained, data, progress)
    metrics = evaluate_trained(trained, images, labels, top_k)
    metrics.pop("predicted")
    epoch = None if "imported_from" in trained.meta else trained.meta.get("epoch")  # imported: never trained here
    return {"checkpoint": str(resolve_checkpoint(checkpoint)), "epoch": epoch, "data": described,
            "classes": trained.class_names, **metrics}


def predict_sources(checkpoint: str, inputs: list[str], data: str | None = None, top_k: int = 3,
                    progress: bool | None = None) -> list[dict]:
    """Predictions for image files / .npy arrays and every image of a data source, each named by its input (a
    data source's images by file where it has files, with their true class)."""
    if not inputs and not data:
        raise CnnkitError("give image files / .npy arrays to predict, or --data PATH")
    trained = load_trained(checkpoint)
    names, batches, truths, notes = [], [], [], []
    if inputs:
        images, named = read_inputs(inputs, trained)
        batches.append(images)
        names += named
        truths += [None] * len(named)
        notes += [_joined(polarity_note(trained, image), aspect_note(name, trained.input_shape[1:]))
                  for name, image in zip(named, images, strict=True)]
    if data:
        images, source = read_data(trained, data, progress)
        labels = model_labels(trained, source, data)
        batches.append(images)
        names += [source.name_of(i) for i in range(len(images))]
        truths += [trained.class_names[int(label)] for label in labels]
        notes += [None] * len(images)
    results = predict(trained, torch.cat(batches), top_k)
    rows = []
    for name, truth, note, result in zip(names, truths, notes, results, strict=True):
        row = {"input": name, **result}
        if truth is not None:
            row["true_class"] = truth
        if note is not None:
            row["note"] = note
        rows.append(row)
    return rows


def aspect_note(name: str, size: tuple[int, int]) -> str | None:
    """A warning when an image file's proportions differ from the model's input (it is squashed to fit); None for
    arrays and files of the right shape."""
    if name.endswith((".npy", "]")):
        return None
    with Image.open(name) as image:  # the header only: the file was decoded already
        width, height = image.size
    ratio = (width / height) / (size[1] / size[0])
    if 0.9 <= ratio <= 1.1:
        return None
    return (f"this {width}x{height} image was stretched to the model's {size[1]}x{size[0]}, changing its "
            "proportions; crop or pad it to the model's shape for a faithful prediction")


def _joined(*notes: str | None) -> str | None:
    """Several notes as one, or None."""
    present = [n for n in notes if n]
    return "; ".join(present) if present else None


def polarity_note(trained: Trained, image: torch.Tensor) -> str | None:
    """A warning when an image's polarity (light ground vs dark ground) is the opposite of the training data's, as
    a dark digit drawn on white paper is for digits trained light-on-dark; None when they agree or it is unknown."""
    trained_mean = trained.meta.get("data", {}).get("mean_fraction")
    if trained_mean is None:
        return None
    mean = float(image.mean()) / trained.pixel_max
    if (mean > 0.5) == (trained_mean > 0.5) or abs(mean - trained_mean) < 0.25:
        return None
    looks, trained_on = ("light", "dark") if mean > 0.5 else ("dark", "light")
    return (f"this image is mostly {looks} (mean {mean:.0%} of white) while the training images are mostly "
            f"{trained_on} ({trained_mean:.0%}); if it is a drawing on the opposite ground, invert it")
