"""Image folders too large for memory: decode on the fly through a standard torch DataLoader.

The same rules hold as for folders read into memory (symlinks leading outside are skipped and reported, one image
size unless resized, the same decoding caps), and a bad file stops training with the file's name on one line: a
worker hands its CnnkitError back as data, instead of a worker traceback.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from pathlib import Path

import torch
from torch.utils.data import DataLoader, Dataset, default_collate

from cnnkit.core.errors import CnnkitError
from cnnkit.core.limits import check_limit
from cnnkit.data.batches import process_share
from cnnkit.data.folder import check_same_size, report_skipped, scan_folder
from cnnkit.data.preprocess import Preprocessing
from cnnkit.data.safety import decode_image, image_is_grey

GREY_SAMPLE = 50  # files whose headers decide grey vs RGB (every file's would mean opening them all first)


class FolderImages(Dataset):
    """(image (C, H, W) float in 0..255, label) pairs decoded from files when asked for."""

    def __init__(self, root: Path, image_size: tuple[int, int] | None) -> None:
        files, self.class_names, skipped = scan_folder(root)
        report_skipped(root, skipped)
        self.paths = [path for path, _ in files]
        self.labels = torch.tensor([label for _, label in files], dtype=torch.long)
        self.grey = all(image_is_grey(path) for path in self.paths[:GREY_SAMPLE])
        first = decode_image(self.paths[0], image_size, self.grey)
        self.resize_to = image_size  # None: every image must already have the first one's size, as in memory
        self.size = image_size or tuple(first.shape[1:])
        self.image_shape = (first.shape[0], *self.size)
        self.source, self.pixel_max = str(root), 255.0

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        array = decode_image(self.paths[index], self.resize_to, self.grey)
        check_same_size((self.paths[0], tuple(self.size)), self.paths[index], array)
        return torch.tensor(array, dtype=torch.float32), int(self.labels[index])

    def load(self, index: torch.Tensor) -> torch.Tensor:
        """Decode the images at `index` into one (N, C, H, W) tensor (validation, test, preprocessing fit)."""
        check_limit("array_elements", len(index) * math.prod(self.image_shape),
                    f"{self.source}: pixel values of {len(index):,} images decoded into memory")
        images = torch.empty((len(index), *self.image_shape))
        for row, i in enumerate(index.tolist()):
            images[row] = self[i][0]
        return images


class _Reported(Dataset):
    """A FolderImages whose samples are (image, label), or the message of the CnnkitError a file raised."""

    def __init__(self, images: FolderImages) -> None:
        self.images = images

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int] | str:
        try:
            return self.images[index]
        except CnnkitError as error:
            return str(error)


def _collate(samples: list) -> tuple[torch.Tensor, torch.Tensor] | str:
    """A batch, or the first error message among its samples."""
    errors = [sample for sample in samples if isinstance(sample, str)]
    return errors[0] if errors else default_collate(samples)


def stream_batches(
    images: FolderImages, order: torch.Tensor, batch_size: int, drop_last: bool, preprocessing: Preprocessing,
    device: torch.device, workers: int = 2, rank: int = 0, world_size: int = 1,
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Preprocessed batches in `order` (a process takes every world_size-th sample), decoded by a DataLoader."""
    order = process_share(order, rank, world_size)
    loader = DataLoader(_Reported(images), batch_size=batch_size, sampler=order.tolist(), drop_last=drop_last,
                        num_workers=workers, persistent_workers=False, collate_fn=_collate)
    for batch in loader:
        if isinstance(batch, str):
            raise CnnkitError(batch)
        x, y = batch
        yield preprocessing(x).to(device), y.to(device)
