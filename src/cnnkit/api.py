"""cnnkit's Python API: list and build models, train one as `cnnkit train` does, load a run to predict, evaluate and
summarise. Thin on purpose: each call is the library function the command line uses."""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cnnkit.core.errors import CnnkitError
from cnnkit.train.config import TrainConfig, seed_recipe

if TYPE_CHECKING:
    import numpy as np
    import torch
    from torch import nn

    from cnnkit.analysis.inference import Trained
    from cnnkit.analysis.summary import Summary

PATH_FIELDS = ("data", "init_from")


def list_models() -> list[str]:
    """Sorted names of every registered model (what `cnnkit models` lists)."""
    from cnnkit.models import list_models as names

    return names()


def get_model(name: str, **options: Any) -> nn.Module:
    """A registered model with fresh weights, as a plain nn.Module: `num_classes`, `in_channels`, `input_size`
    (default: the paper's) and the model's own options (e.g. width=32)."""
    from cnnkit.models import get_model as build
    from cnnkit.models.registry import input_shape
    from cnnkit.store.footprint import check_footprint

    own = dict(options)
    num_classes, in_channels, input_size = (own.pop(key, None) for key in ("num_classes", "in_channels", "input_size"))
    # 10**12 classes: one line from the meta device, not torch failing to allocate 772 TB
    check_footprint(name, num_classes, input_shape(name, in_channels, input_size), own)
    return build(name, **options)


@dataclass(frozen=True)
class FitResult:
    """What `fit` reports: the held-out test accuracy, where the run lies, the epoch the kept weights are from."""

    test_accuracy: float | None
    run_dir: Path | None
    best_epoch: int
    test_loss: float | None
    best_val_accuracy: float | None
    epochs_run: int
    seconds: float


def fit(model: str | None = None, data: str | Path = "digits", epochs: int | None = None,
        out: str | Path | None = None, overwrite: bool = False, verbose: bool = True, **settings: Any) -> FitResult:
    """Train as `cnnkit train` does: the model's own recipe, then `epochs` and any other TrainConfig field given
    (e.g. lr=0.01, recipe="seed"). The log goes to stdout, as the command's does, unless verbose=False; with `out`
    the run directory (checkpoints, config.json, metrics) is kept there for `load` and `cnnkit` commands."""
    from cnnkit.train.loop import fit as train

    _check_flag("overwrite", overwrite)
    _check_flag("verbose", verbose)
    _check_path("data", data)
    if out is not None:
        _check_path("out", out)
    for name in PATH_FIELDS:
        if settings.get(name) is not None:
            _check_path(name, settings[name])
    given = {"data": str(data), "epochs": epochs, **settings}
    given = {name: _absolute(name, value) for name, value in given.items() if value is not None}
    if model is not None:
        given["model"] = model
    config = seed_recipe(**given) if given.get("recipe") == "seed" else TrainConfig.for_model(
        given.pop("model", None), **given)
    config.check_device()
    result = train(config, out=out, overwrite=overwrite, progress=None if verbose else False,
                   stream=None if verbose else io.StringIO())
    return FitResult(result.test_accuracy, result.run_dir, _best_epoch(result), result.test_loss,
                     result.best_val_accuracy, result.epochs_run, result.seconds)


def _check_flag(name: str, value: object) -> None:
    """Refuse a truthy stand-in for a bool ('no' would mean yes)."""
    if not isinstance(value, bool):
        raise CnnkitError(f"{name} must be True or False; received {value!r}")


def _check_path(name: str, value: object) -> None:
    """Refuse a path argument that is no path (a number, a list)."""
    if not isinstance(value, (str, Path)) or not str(value):
        raise CnnkitError(f"{name} must be a path (str or pathlib.Path); received {value!r}")


def _check_top_k(value: object) -> None:
    """Refuse a top_k that is not a whole number of 1 or more."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise CnnkitError(f"top_k must be a whole number of 1 or more; received {value!r}")


def _pixel_batch(images: object) -> torch.Tensor:
    """An (N, C, H, W) float batch from a tensor or array of pixels, checked as the .npy reader checks a file's."""
    import numpy as np
    import torch

    from cnnkit.data.arrays import check_pixel_dtype
    from cnnkit.data.dataset import check_pixel_values

    if isinstance(images, np.ndarray):
        check_pixel_dtype(images.dtype, "predict: the array")
        images = torch.from_numpy(np.ascontiguousarray(images))
    if not isinstance(images, torch.Tensor):
        raise CnnkitError(f"predict: expected image paths, a tensor or an array; received {type(images).__name__}")
    if images.device.type == "meta" or images.is_complex() or images.dtype == torch.bool:
        raise CnnkitError(f"predict: a {images.dtype} tensor on {images.device} holds no pixel values")
    batch = images.detach().to("cpu", torch.float32)
    batch = batch.unsqueeze(0) if batch.dim() == 3 else batch
    if batch.dim() != 4 or batch.shape[0] == 0:
        raise CnnkitError(f"predict: expected (N, C, H, W) or (C, H, W) pixels with N >= 1; received shape "
                          f"{tuple(images.shape)}")
    check_pixel_values(batch.numpy(), "predict: the tensor")  # NaN, infinite or beyond the pixel_value cap
    return batch


def _absolute(name: str, value: Any) -> Any:
    """Data and start paths made absolute, as the command line does, so the run resumes from anywhere."""
    if name in PATH_FIELDS and value != "digits" and Path(value).exists():
        return str(Path(value).resolve())
    return value


def _best_epoch(result: Any) -> int:
    """The epoch of the best checkpoint (the run's metadata), else of the best validation accuracy."""
    if result.run_dir is not None and (Path(result.run_dir) / "best.safetensors").exists():
        from cnnkit.store.checkpoint import read_metadata

        return int(read_metadata(Path(result.run_dir) / "best")["epoch"])
    scored = [r for r in result.history if r.get("val_accuracy") is not None]
    if not scored or result.best_val_accuracy is None:
        return result.epochs_run
    return next(r["epoch"] for r in scored if r["val_accuracy"] == result.best_val_accuracy)


class TrainedModel:
    """A trained run or checkpoint, loaded for use: `predict`, `evaluate`, `summary`, and `.model` (nn.Module)."""

    def __init__(self, path: str | Path, trained: Trained) -> None:
        self.path = Path(path)
        self.trained = trained

    @property
    def model(self) -> nn.Module:
        """The network, in eval mode."""
        return self.trained.model

    @property
    def class_names(self) -> list[str]:
        """Class names, in the model's output order."""
        return self.trained.class_names

    def predict(self, images: str | Path | list | torch.Tensor | np.ndarray, top_k: int = 3,
                white: float | None = None) -> list[dict]:
        """Class and top-k probabilities per image: image files / .npy arrays (a path or a list of them), or a
        tensor / array of (N, C, H, W) or one (C, H, W) image, pixels in the training data's scale (as stored)
        unless `white` gives white's value in them (e.g. 255); values above white are refused."""
        from cnnkit.analysis.inference import predict, read_inputs, to_model_scale

        _check_top_k(top_k)
        if isinstance(images, (str, Path)):
            images = [images]
        if isinstance(images, list):
            if not all(isinstance(item, (str, Path)) for item in images):
                raise CnnkitError("predict: a list must hold image file or .npy paths; pass pixels as one tensor")
            if not images:
                raise CnnkitError("predict: the list of images is empty")
            batch = read_inputs([str(item) for item in images], self.trained, white, flag="white=")[0]
        else:
            batch = to_model_scale(_pixel_batch(images), self.trained, "predict: the pixels", white, flag="white=")
        return predict(self.trained, batch, top_k)

    def evaluate(self, data: str | Path | None = None, top_k: int = 5, white: float | None = None) -> dict:
        """`cnnkit evaluate --json`'s metrics (plain Python numbers): on the run's own held-out test split, or on
        every image of `data` (an .npz / .csv array in the model's scale unless `white` gives white's value)."""
        from cnnkit.analysis.inference import evaluate_checkpoint

        _check_top_k(top_k)
        if data is not None:
            _check_path("data", data)
        return evaluate_checkpoint(str(self.path), None if data is None else str(data), top_k, progress=False,
                                   white=white)

    def summary(self) -> Summary:
        """The per-layer table (`cnnkit summary`): `.rows`, `.totals`, `.table()`, `.to_dict()`."""
        from cnnkit.analysis.summary import summarize

        return summarize(self.model, self.trained.input_shape, name=str(self.path))

    def __repr__(self) -> str:
        spec = self.trained.meta["model"]
        return f"TrainedModel({str(self.path)!r}, model={spec['name']!r}, classes={len(self.class_names)})"


def load(path: str | Path) -> TrainedModel:
    """A run directory (its best checkpoint, else its last) or a checkpoint file, ready to predict."""
    from cnnkit.analysis.inference import load_trained

    _check_path("path", path)
    return TrainedModel(path, load_trained(path))
