"""Preprocessing fitted on the training split only, or stated at import for weights trained elsewhere."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from cnnkit.core.errors import CnnkitError
from cnnkit.data.preprocess_kinds import PREPROCESSING_KINDS


@dataclass
class Preprocessing:
    """x -> (x - shift) * scale. 'minmax' is per pixel as the article's MinMaxScaler; 'standardize' per channel."""

    kind: str
    shift: torch.Tensor
    scale: torch.Tensor

    @classmethod
    def fit(cls, kind: str, images: torch.Tensor) -> Preprocessing:
        """Fit on (N, C, H, W) training images."""
        if kind == "minmax":
            low, high = images.amin(dim=0), images.amax(dim=0)
            spread = high - low
            return cls(kind, low, 1.0 / torch.where(spread > 0, spread, torch.ones_like(spread)))
        if kind == "standardize":
            mean = images.mean(dim=(0, 2, 3), keepdim=True)[0]
            std = images.std(dim=(0, 2, 3), keepdim=True)[0]
            return cls(kind, mean, 1.0 / torch.where(std > 0, std, torch.ones_like(std)))
        if kind == "none":
            channels = images.shape[1]
            return cls(kind, torch.zeros(channels, 1, 1), torch.ones(channels, 1, 1))
        raise CnnkitError(f"preprocessing must be one of {', '.join(PREPROCESSING_KINDS)}; received {kind!r}")

    @classmethod
    def stated(cls, mean: Sequence[float], std: Sequence[float], channels: int) -> Preprocessing:
        """x -> (x - mean) / std per channel with values the model's author states (one value, or one per channel)
        rather than values fitted here; 'standardize' is the per-channel rule it follows."""
        values = {}
        for name, given in (("mean", mean), ("std", std)):
            if len(given) not in (1, channels) or not all(math.isfinite(v) for v in given):
                raise CnnkitError(f"{name} must be 1 or {channels} finite numbers (one per channel); received "
                                  f"{','.join(map(str, given))}")
            values[name] = torch.tensor([float(v) for v in given] * (channels if len(given) == 1 else 1))
        if not torch.all(values["std"] > 0):
            raise CnnkitError(f"std must be positive; received {','.join(map(str, std))}")
        return cls("standardize", values["mean"].reshape(channels, 1, 1), (1.0 / values["std"]).reshape(channels, 1, 1))

    def for_pixel_max(self, pixel_max: float, trained_pixel_max: float) -> Preprocessing:
        """The same preprocessing for images whose white is `pixel_max` instead of `trained_pixel_max`: the pixel
        ratio folded into shift and scale ((x * r - shift) * scale = (x - shift / r) * (scale * r))."""
        ratio = trained_pixel_max / pixel_max
        return Preprocessing(self.kind, self.shift / ratio, self.scale * ratio)

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        """Apply to (N, C, H, W) images in their stored scale."""
        if images.shape[1] != self.shift.shape[0]:
            raise CnnkitError(f"images have {images.shape[1]} channels; the model expects {self.shift.shape[0]}")
        if self.kind == "minmax" and tuple(images.shape[1:]) != tuple(self.shift.shape):
            raise CnnkitError(f"images are {tuple(images.shape[1:])}; per-pixel min-max was fitted on "
                              f"{tuple(self.shift.shape)}")
        return (images - self.shift.to(images.device)) * self.scale.to(images.device)

    def tensors(self) -> dict[str, torch.Tensor]:
        """For a safetensors checkpoint."""
        return {"preprocess.shift": self.shift.contiguous(), "preprocess.scale": self.scale.contiguous()}

    @classmethod
    def from_tensors(cls, kind: str, tensors: dict[str, torch.Tensor], input_shape: tuple[int, int, int],
                     where: str) -> Preprocessing:
        """Inverse of `tensors`, refusing (naming the tensor) a missing one, or one of another dtype or shape than
        `kind` gives for (C, H, W) inputs, or holding non-finite values (a NaN scale makes every prediction NaN)."""
        if kind not in PREPROCESSING_KINDS:
            raise CnnkitError(f"{where}: preprocessing {kind!r} is not one of {', '.join(PREPROCESSING_KINDS)}")
        channels = input_shape[0]
        shape = tuple(input_shape) if kind == "minmax" else (channels, 1, 1)
        for name in ("preprocess.shift", "preprocess.scale"):
            tensor = tensors.get(name)
            if tensor is None:
                raise CnnkitError(f"{where}: checkpoint lacks the preprocessing tensor {name!r}")
            if tensor.dtype != torch.float32 or tuple(tensor.shape) != shape:
                raise CnnkitError(f"{where}: {name} is {str(tensor.dtype).removeprefix('torch.')} of shape "
                                  f"{tuple(tensor.shape)}; {kind} preprocessing of {'x'.join(map(str, input_shape))} "
                                  f"inputs needs float32 of shape {shape}")
            if not bool(torch.isfinite(tensor).all()):
                raise CnnkitError(f"{where}: {name} holds NaN or infinite values")
        if not bool((tensors["preprocess.scale"] > 0).all()):
            raise CnnkitError(f"{where}: preprocess.scale holds a zero or negative value; scales are 1/spread > 0")
        return cls(kind, tensors["preprocess.shift"], tensors["preprocess.scale"])
