"""The in-memory image dataset every source produces."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from cnnkit.errors import CnnkitError


@dataclass
class ImageDataset:
    """Images as one float tensor (N, C, H, W) in their stored scale (e.g. 0..255), labels (N,) and class names."""

    images: torch.Tensor
    labels: torch.Tensor
    class_names: list[str]
    source: str = ""
    pixel_max: float = 255.0  # the value of a white pixel in this data (digits: 16); image files map 255 to it

    def __post_init__(self) -> None:
        if self.images.dim() != 4:
            raise CnnkitError(f"{self.source}: images must be (N, C, H, W); got shape {tuple(self.images.shape)}")
        if self.images.shape[0] != self.labels.shape[0]:
            raise CnnkitError(f"{self.source}: {self.images.shape[0]} images but {self.labels.shape[0]} labels")
        if self.images.shape[0] == 0:
            raise CnnkitError(f"{self.source}: the dataset holds no images")
        if self.labels.numel() and (self.labels.min() < 0 or self.labels.max() >= len(self.class_names)):
            raise CnnkitError(f"{self.source}: labels must lie in 0..{len(self.class_names) - 1}; found "
                              f"{int(self.labels.min())}..{int(self.labels.max())}")

    def __len__(self) -> int:
        return self.images.shape[0]

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """(C, H, W) of one image."""
        return tuple(self.images.shape[1:])

    def subset(self, index: torch.Tensor) -> ImageDataset:
        """The images at `index`, same class names."""
        return ImageDataset(self.images[index], self.labels[index], self.class_names, self.source, self.pixel_max)


def classes_from_labels(labels: torch.Tensor) -> list[str]:
    """Class names '0'..'K-1' for integer labels."""
    return [str(i) for i in range(int(labels.max()) + 1)] if labels.numel() else []
