"""Use a trained network: load a checkpoint, predict images or arrays, evaluate on labelled data."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from sklearn.metrics import confusion_matrix, precision_recall_fscore_support
from torch import nn

from cnnkit.data import ImageDataset, Preprocessing, load_source, stratified_split
from cnnkit.data.safety import decode_image
from cnnkit.errors import CnnkitError
from cnnkit.train.checkpoint import model_from_checkpoint


@dataclass
class Trained:
    """A checkpoint's model (eval mode) with everything needed to feed it."""

    model: nn.Module
    preprocessing: Preprocessing | None
    meta: dict
    class_names: list[str]
    input_shape: tuple[int, int, int]  # (C, H, W)
    pixel_max: float

    def prepare(self, images: torch.Tensor) -> torch.Tensor:
        """Stored-scale (N, C, H, W) images -> model input, checking channels and size."""
        if images.dim() != 4 or images.shape[1] != self.input_shape[0]:
            raise CnnkitError(f"images have shape {tuple(images.shape)}; the model expects (N, {self.input_shape[0]}, "
                              f"{self.input_shape[1]}, {self.input_shape[2]}) ({self.input_shape[0]} channel(s))")
        if tuple(images.shape[2:]) != self.input_shape[1:]:
            raise CnnkitError(f"images are {images.shape[2]}x{images.shape[3]}; the model expects "
                              f"{self.input_shape[1]}x{self.input_shape[2]}")
        return self.preprocessing(images) if self.preprocessing is not None else images


def load_trained(path: str | Path) -> Trained:
    """Load a run directory or checkpoint for inference."""
    model, preprocessing, meta = model_from_checkpoint(path)
    spec = meta["model"]
    shape = (spec["in_channels"], *spec["input_size"])
    pixel_max = float(meta.get("data", {}).get("pixel_max", 255.0))
    names = meta.get("class_names") or [str(i) for i in range(spec["num_classes"])]
    return Trained(model, preprocessing, meta, names, shape, pixel_max)


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


def evaluation_data(trained: Trained, data: str | None) -> tuple[torch.Tensor, torch.Tensor, str]:
    """(images, labels, description): the run's own held-out test split, or every image of `data`."""
    if data is None:
        config = trained.meta.get("config", {})
        source = load_source(config.get("data", "digits"), (config["image_size"],) * 2 if config.get("image_size")
                             else None)
        split = stratified_split(source.labels, config.get("val_fraction", 0.1), config.get("test_fraction", 0.2),
                                 config.get("seed", 0))
        index = split.test if len(split.test) else torch.arange(len(source))
        what = f"the run's held-out test split of {config.get('data', 'digits')}" if len(split.test) else "all data"
        return source.images[index], source.labels[index], what
    images, source = read_data(trained, data)
    if len(source.class_names) > len(trained.class_names):
        raise CnnkitError(f"{data} has {len(source.class_names)} classes; the model knows {len(trained.class_names)}")
    return images, source.labels, f"all of {data}"


def read_data(trained: Trained, data: str) -> tuple[torch.Tensor, ImageDataset]:
    """Every image of a data source at the model's size, in the training data's scale, and the source itself."""
    source = load_source(data, trained.input_shape[1:])
    return source.images * (trained.pixel_max / source.pixel_max), source


def evaluate_trained(trained: Trained, images: torch.Tensor, labels: torch.Tensor, top_k: int = 5) -> dict:
    """Accuracy, top-k accuracy, per-class precision/recall/F1 and the confusion matrix."""
    logits = logits_of(trained, images)
    predicted = logits.argmax(1)
    k = min(top_k, logits.shape[1])
    top = (logits.topk(k, dim=1).indices == labels[:, None]).any(dim=1)
    classes = list(range(len(trained.class_names)))
    precision, recall, f1, support = precision_recall_fscore_support(labels, predicted, labels=classes,
                                                                     zero_division=0)
    return {
        "count": len(labels), "accuracy": float((predicted == labels).float().mean()),
        f"top{k}_accuracy": float(top.float().mean()),
        "per_class": [{"class": name, "precision": float(p), "recall": float(r), "f1": float(f), "support": int(s)}
                      for name, p, r, f, s in zip(trained.class_names, precision, recall, f1, support, strict=True)],
        "confusion_matrix": confusion_matrix(labels, predicted, labels=classes).tolist(),
        "predicted": predicted.tolist(),
    }
