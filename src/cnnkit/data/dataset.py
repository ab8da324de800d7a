"""The in-memory image dataset every source produces, and the checks every reader applies to what it read."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np
import torch

from cnnkit.core.errors import CnnkitError
from cnnkit.core.limits import check_limit, env_name, limit


@dataclass
class ImageDataset:
    """Images as one float tensor (N, C, H, W) in their stored scale (e.g. 0..255), labels (N,) and class names.

    Sources that ship their own test set (MNIST's t10k files, CIFAR-10's test_batch) mark its images in
    `official_test`, and name its files in `official_test_source`; the trainer tests on exactly that set.
    """

    images: torch.Tensor
    labels: torch.Tensor
    class_names: list[str]
    source: str = ""
    pixel_max: float = 255.0  # the value of a white pixel in this data (digits: 16); image files map 255 to it
    pixel_max_known: bool = True  # False for bare arrays (.npz, .csv): their pixel_max is a guess (1 or 255)
    largest: float | None = None  # bare arrays: their largest value as read (before any resizing), for white's checks
    official_test: torch.Tensor | None = None  # bool (N,): True for the images of the source's own test set
    official_test_source: str = ""  # its files, e.g. "t10k-images-idx3-ubyte"
    item_names: list[str] | None = None  # a name per image where the source has one (a folder's file paths)

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
        if self.official_test is not None and self.official_test.shape != self.labels.shape:
            raise CnnkitError(f"{self.source}: the official test mask has shape {tuple(self.official_test.shape)}; "
                              f"expected {tuple(self.labels.shape)}")

    def __len__(self) -> int:
        return self.images.shape[0]

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """(C, H, W) of one image."""
        return tuple(self.images.shape[1:])

    def name_of(self, index: int) -> str:
        """The image's file (relative to the source) where known, else SOURCE[index]."""
        return self.item_names[index] if self.item_names is not None else f"{self.source}[{index}]"

    def subset(self, index: torch.Tensor) -> ImageDataset:
        """The images at `index`, same class names."""
        mask = None if self.official_test is None else self.official_test[index]
        names = None if self.item_names is None else [self.item_names[int(i)] for i in index]
        return dataclasses.replace(self, images=self.images[index], labels=self.labels[index], official_test=mask,
                                   item_names=names)


def official_test_mask(counts: list[int], is_test: list[bool]) -> torch.Tensor | None:
    """The official-test mask of files holding `counts` images each, or None unless the files hold both a test
    set and training images (a test file alone is just data)."""
    if all(is_test) or not any(is_test):
        return None
    return torch.cat([torch.full((n,), test) for n, test in zip(counts, is_test, strict=True)])


def index_labels(values: np.ndarray, where: str) -> tuple[torch.Tensor, list[str]]:
    """Class indices 0..K-1 and the class names for label values (integers or strings).

    Label values are names, not indices: labels {3, 7} make two classes named '3' and '7', and {0, 10**9} two
    classes rather than a billion.
    """
    if values.dtype.kind == "S":
        values = np.char.decode(values, "latin-1")
    distinct, index = np.unique(values, return_inverse=True)
    check_limit("classes", len(distinct), f"{where}: distinct labels")
    names = [str(value) if values.dtype.kind == "U" else str(int(value)) for value in distinct]
    return torch.from_numpy(index.reshape(-1).astype(np.int64)), names


def check_pixel_values(array: np.ndarray, where: str) -> None:
    """Refuse NaN, infinite or huge pixel values at the file that holds them, rather than let them surface later
    as a NaN loss (1e30 squared overflows float32 statistics)."""
    if array.size == 0 or (array.dtype.kind in "biu" and array.dtype.itemsize == 1):
        return  # bytes cannot hold a huge value
    low, high = array.min(), array.max()  # min/max scan without a temporary copy; NaN propagates into both
    for value in (low, high):
        if not np.isfinite(value):
            raise CnnkitError(f"{where}: pixel values must be finite numbers; found {value}")
    largest = max(abs(float(low)), abs(float(high)))
    if largest > limit("pixel_value"):
        raise CnnkitError(f"{where}: pixel values reach {largest:.3g}, beyond the limit of {limit('pixel_value'):,} "
                          f"(pixel value); set {env_name('pixel_value')} to raise it")


def float_images(array: np.ndarray) -> torch.Tensor:
    """A float32 copy of an (N, C, H, W) array of any numeric type, converted without whole-array temporaries
    (a uint8 array of 1 GiB costs 4 GiB more, not 12)."""
    images = torch.empty(array.shape, dtype=torch.float32)
    images.numpy()[...] = array  # numpy casts through small buffers
    return images
