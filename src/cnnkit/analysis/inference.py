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
from cnnkit.train.white import SLACK


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


def names_registry_model(source: str) -> bool:
    """Whether `open_model` takes `source` as a registered model name (fresh, untrained weights)."""
    return source in list_models() and not Path(source).exists()


def is_checkpoint_path(source: str | Path) -> bool:
    """Whether `source` exists, or names a checkpoint by its stem (`runA/best` for runA/best.safetensors), as
    `resolve_checkpoint` and `--compare` take it."""
    if Path(source).exists():
        return True
    try:
        resolve_checkpoint(source)
    except CnnkitError:
        return False
    return True


def open_model(source: str, input_shape: tuple[int, int, int] | None = None, num_classes: int | None = None) -> Trained:
    """A checkpoint or run directory, or else a registered model name (fresh weights)."""
    if names_registry_model(source):
        return untrained(source, input_shape, num_classes)
    if not is_checkpoint_path(source):
        raise CnnkitError(f"{source!r} is neither a registered model (see `cnnkit models`) nor a checkpoint path")
    trained = load_trained(source)
    if input_shape and tuple(input_shape) != trained.input_shape:
        raise CnnkitError(f"the checkpoint's model takes {'x'.join(map(str, trained.input_shape))}; received "
                          f"--input-size {'x'.join(map(str, input_shape))}")
    if num_classes is not None and num_classes != len(trained.class_names):  # a registry-only choice, never ignored
        raise CnnkitError(f"--num-classes {num_classes} applies to a registered model name; {source} is a checkpoint "
                          f"whose model has {len(trained.class_names)} classes")
    return trained


def read_inputs(paths: list[str], trained: Trained, white: float | None = None, flag: str = "--white "
                ) -> tuple[torch.Tensor, list[str]]:
    """Image files and .npy arrays (an image (H, W) or (C, H, W), or a batch (N, C, H, W)) as one stored-scale
    batch, with a name per image (`file.npy[i]` for the images of a batch array); arrays are taken in the model's
    scale, or rescaled from `white` (see `to_model_scale`)."""
    parts, names = [], []
    for path in paths:
        if path.endswith(".npy"):
            batch = read_npy(Path(path))
            trained.check_shape(batch, path)
            batch = to_model_scale(batch, trained, path, white, flag)
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


def to_model_scale(values: torch.Tensor, trained: Trained, where: str, white: float | None = None,
                   flag: str = "--white ") -> torch.Tensor:
    """Bare numbers (an array file, which states no scale) in the model's training scale: taken as they are, or
    multiplied by pixel_max / `white` when `white` says what white is in the file; values above white are refused
    rather than read at the wrong scale (digits in 0..255 fed to a model trained on 0..16); `flag` names the way
    to state white (the API's `white=`)."""
    check_white(white, flag)
    top = float(values.max()) if values.numel() else 0.0
    limit = trained.pixel_max if white is None else white
    if top <= limit * (1 + SLACK):  # the trainer's own tolerance for white
        return values if white is None else values * (trained.pixel_max / white)
    if white is not None:
        raise CnnkitError(f"{where}: values reach {top:g}, above the stated {flag}{white:g}")
    suggested = next((w for w in COMMON_WHITES if top <= w), top)
    raise CnnkitError(f"{where}: values reach {top:g}, above white in the model's training scale (0..{limit:g}); "
                      f"pass {flag}{suggested:g} if white is {suggested:g} in this file, or rescale it to "
                      f"0..{limit:g}")


COMMON_WHITES = (16, 255)  # the --white suggested for a file's largest value: scikit-learn's digits, 8-bit pixels


def check_white(white: float | None, flag: str = "--white ") -> None:
    """Refuse a white that is no positive finite number."""
    if white is not None and (isinstance(white, bool) or not isinstance(white, (int, float))
                              or not np.isfinite(white) or white <= 0):
        raise CnnkitError(f"{flag.strip()} must be a positive number (white's value in the file, e.g. 255 or 1); "
                          f"received {white!r}")


def scale_note(values: torch.Tensor, trained: Trained, white: float | None) -> str | None:
    """A warning when an array taken in the model's scale lies within 0..1 while the model's white is above 1 (a
    file of x/255 values would be read as nearly black); None otherwise."""
    top = float(values.max()) if values.numel() else 0.0
    if white is not None or trained.pixel_max <= 1 or not 0 < top <= 1:
        return None
    return (f"its values lie within 0..1 and were taken in the model's training scale 0..{trained.pixel_max:g} "
            "(nearly black); if white is 1 in this file, pass --white 1")


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


def evaluation_data(trained: Trained, data: str | None, progress: bool | None = None, white: float | None = None
                    ) -> tuple[torch.Tensor, torch.Tensor, str]:
    """(images, labels as the model's class indices, description): the run's own held-out test split, or every
    image of `data` with its classes matched to the model's by name (`white`: see `read_data`)."""
    if data is None:
        if white is not None:
            raise CnnkitError("--white states the scale of an array file given with --data; the run's own test "
                              "split is in the model's scale already")
        if not trained.meta.get("config"):
            raise CnnkitError("this checkpoint was not trained by cnnkit, so it has no held-out split to evaluate on; "
                              "pass --data PATH")
        config = TrainConfig.from_dict(trained.meta["config"], "the checkpoint's config")
        source, split = load_split(config, progress)
        index = split.test if len(split.test) else torch.arange(len(source))
        what = f"the run's held-out test split of {config.data}" if len(split.test) else "all data"
        return source.images[index], source.labels[index], what
    images, source = read_data(trained, data, progress, white)
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


def read_data(trained: Trained, data: str, progress: bool | None = None, white: float | None = None
              ) -> tuple[torch.Tensor, ImageDataset]:
    """Every image of a data source at the model's size, in the training data's scale, and the source itself.

    Sources whose white is known (image files, IDX, CIFAR: 255; digits: 16) are mapped to the model's white; bare
    arrays (.npz, .csv) are taken in the model's scale unless `white` states theirs (see `to_model_scale`)."""
    check_white(white)
    source = load_source(data, trained.input_shape[1:], progress)
    if source.image_shape[0] != trained.input_shape[0]:
        raise CnnkitError(f"{data}: images have {source.image_shape[0]} channel(s); the model expects "
                          f"{trained.input_shape[0]}")
    if not source.pixel_max_known:
        return to_model_scale(source.images, trained, data, white), source
    if white is not None:
        raise CnnkitError(f"--white states the scale of an array file (.npz, .csv, .npy); white in {data} is "
                          f"{source.pixel_max:g} already")
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
        # exact fractions (a float32 mean gives 0.80277776 for 289/360)
        "count": len(labels), "accuracy": int((predicted == labels).sum()) / len(labels),
        f"top{k}_accuracy": int(top.sum()) / len(labels),
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
                        progress: bool | None = None, white: float | None = None) -> dict:
    """Metrics of a checkpoint on its run's held-out test split, or on every image of `data` (an array file's
    white stated by `white`, else taken as the model's); a `note` warns of an array that looks 0..1."""
    trained = load_trained(checkpoint)
    images, labels, described = evaluation_data(trained, data, progress, white)
    metrics = evaluate_trained(trained, images, labels, top_k)
    metrics.pop("predicted")
    epoch = None if "imported_from" in trained.meta else trained.meta.get("epoch")  # imported: never trained here
    note = scale_note(images, trained, white) if data is not None and is_array_file(data) else None
    return {"checkpoint": str(resolve_checkpoint(checkpoint)), "epoch": epoch, "data": described,
            "classes": trained.class_names, **metrics, **({"note": f"{data}: {note}"} if note else {})}


def is_array_file(data: str) -> bool:
    """Whether a data argument is read as bare numbers (an .npz or .csv file, as `load_source` picks its reader)."""
    return data.lower().endswith((".npz", ".csv")) and Path(data).is_file()


def predict_sources(checkpoint: str, inputs: list[str], data: str | None = None, top_k: int = 3,
                    progress: bool | None = None, white: float | None = None) -> list[dict]:
    """Predictions for image files / .npy arrays and every image of a data source, each named by its input (a
    data source's images by file where it has files, with their true class); `white` states the arrays' white."""
    if not inputs and not data:
        raise CnnkitError("give image files / .npy arrays to predict, or --data PATH")
    if white is not None and not data and not any(path.endswith(".npy") for path in inputs):
        raise CnnkitError("--white states the scale of .npy arrays or an .npz/.csv --data file; image files' white "
                          "is 255 already")
    trained = load_trained(checkpoint)
    names, batches, truths, notes = [], [], [], []
    if inputs:
        images, named = read_inputs(inputs, trained, white)
        batches.append(images)
        names += named
        truths += [None] * len(named)
        notes += [_joined(polarity_note(trained, image), aspect_note(name, trained.input_shape[1:]),
                          scale_note(image, trained, white) if name.endswith((".npy", "]")) else None)
                  for name, image in zip(named, images, strict=True)]
    if data:
        images, source = read_data(trained, data, progress, white)
        labels = model_labels(trained, source, data)
        batches.append(images)
        names += [source.name_of(i) for i in range(len(images))]
        truths += [trained.class_names[int(label)] for label in labels]
        # one warning for the whole file, on its first image
        notes += [None if source.pixel_max_known else scale_note(images, trained, white)] + [None] * (len(images) - 1)
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
