"""Image folders too large for memory: decode on the fly through a standard torch DataLoader."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import torch
from torch.utils.data import DataLoader, Dataset

from cnnkit.data.batches import process_share
from cnnkit.data.folder import scan_folder
from cnnkit.data.preprocess import Preprocessing
from cnnkit.data.safety import decode_image, image_is_grey
from cnnkit.errors import CnnkitError


class FolderImages(Dataset):
    """(image (C, H, W) float in 0..255, label) pairs decoded from files when asked for."""

    def __init__(self, root: Path, image_size: tuple[int, int] | None) -> None:
        files, self.class_names, _ = scan_folder(root)
        self.paths = [path for path, _ in files]
        self.labels = torch.tensor([label for _, label in files], dtype=torch.long)
        self.grey = all(image_is_grey(path) for path in self.paths[:50])  # a sample decides grey vs RGB
        first = decode_image(self.paths[0], image_size, self.grey)
        self.size = image_size or tuple(first.shape[1:])
        self.image_shape = (first.shape[0], *self.size)
        self.source, self.pixel_max = str(root), 255.0

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        array = decode_image(self.paths[index], self.size, self.grey)
        if array.shape[1:] != tuple(self.size):
            raise CnnkitError(f"{self.paths[index]}: is {array.shape[1]}x{array.shape[2]}, the folder's first image "
                              f"{self.size[0]}x{self.size[1]}; pass --image-size to resize them all")
        return torch.tensor(array, dtype=torch.float32), int(self.labels[index])

    def load(self, index: torch.Tensor) -> torch.Tensor:
        """Decode the images at `index` into one (N, C, H, W) tensor (validation, test, preprocessing fit)."""
        if len(index) == 0:
            return torch.zeros((0, *self.image_shape))
        return torch.stack([self[int(i)][0] for i in index])


def stream_batches(
    images: FolderImages, order: torch.Tensor, batch_size: int, drop_last: bool, preprocessing: Preprocessing,
    device: torch.device, workers: int = 2, rank: int = 0, world_size: int = 1,
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Preprocessed batches in `order` (a process takes every world_size-th sample), decoded by a DataLoader."""
    order = process_share(order, rank, world_size)
    loader = DataLoader(images, batch_size=batch_size, sampler=order.tolist(), drop_last=drop_last,
                        num_workers=workers, persistent_workers=False)
    for x, y in loader:
        yield preprocessing(x).to(device), y.to(device)
