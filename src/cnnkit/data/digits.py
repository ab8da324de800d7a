"""The built-in dataset: scikit-learn's 1,797 8x8 handwritten digits (shipped with scikit-learn, offline)."""

from __future__ import annotations

import torch
from sklearn.datasets import load_digits

from cnnkit.data.dataset import ImageDataset


def load_digits_dataset() -> ImageDataset:
    """(1797, 1, 8, 8) images with values 0..16, in the file order the article uses."""
    digits = load_digits()
    images = torch.tensor(digits.images, dtype=torch.float32).unsqueeze(1)
    labels = torch.tensor(digits.target, dtype=torch.long)
    return ImageDataset(images, labels, [str(i) for i in range(10)], source="digits", pixel_max=16.0)
