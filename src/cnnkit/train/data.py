"""Turn a TrainConfig's data settings into preprocessed tensors on the training device."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from cnnkit.data import ImageDataset, Preprocessing, Split, load_source, stratified_split
from cnnkit.data.stream import FolderImages
from cnnkit.errors import CnnkitError
from cnnkit.train.config import TrainConfig


@dataclass
class PreparedData:
    """Preprocessed splits on one device, plus what a checkpoint needs to redo the preprocessing."""

    dataset: ImageDataset | FolderImages
    preprocessing: Preprocessing
    train: tuple[torch.Tensor, torch.Tensor]
    val: tuple[torch.Tensor, torch.Tensor]
    test: tuple[torch.Tensor, torch.Tensor]
    stream: FolderImages | None = None  # with --stream: train holds indices into it, decoded batch by batch

    def description(self, split_seed: int) -> dict:
        """What a checkpoint records about the data."""
        return {"source": self.dataset.source, "image_shape": list(self.dataset.image_shape),
                "pixel_max": self.dataset.pixel_max, "split_seed": split_seed,
                "train": len(self.train[1]), "val": len(self.val[1]), "test": len(self.test[1])}


STREAM_FIT_IMAGES = 2_000  # training images decoded to fit preprocessing when streaming


def image_size(config: TrainConfig) -> tuple[int, int] | None:
    """The (H, W) every image is resized to, if the config asks for one."""
    return (config.image_size, config.image_size) if config.image_size else None


def load_split(config: TrainConfig) -> tuple[ImageDataset, Split]:
    """The run's dataset in memory and its stratified, seeded train/validation/test split."""
    dataset = load_source(config.data, image_size(config))
    return dataset, stratified_split(dataset.labels, config.val_fraction, config.test_fraction, config.seed)


def prepare_data(config: TrainConfig, device: torch.device) -> PreparedData:
    """Load, split (stratified, seeded), fit preprocessing on the training split only, move to `device`."""
    if config.stream:
        return _prepare_stream(config, device)
    dataset, split = load_split(config)
    preprocessing = Preprocessing.fit(config.preprocessing, dataset.images[split.train])

    def part(index: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return preprocessing(dataset.images[index]).to(device), dataset.labels[index].to(device)

    return PreparedData(dataset, preprocessing, part(split.train), part(split.val), part(split.test))


def _prepare_stream(config: TrainConfig, device: torch.device) -> PreparedData:
    """Training images stay on disk; validation and test splits (small fractions) are decoded into memory."""
    path = Path(config.data)
    if not path.is_dir():
        raise CnnkitError(f"--stream reads image folders; {config.data!r} is not a folder")
    images = FolderImages(path, image_size(config))
    split = stratified_split(images.labels, config.val_fraction, config.test_fraction, config.seed)
    sample = split.train[torch.randperm(len(split.train), generator=torch.Generator().manual_seed(config.seed))]
    preprocessing = Preprocessing.fit(config.preprocessing, images.load(sample[:STREAM_FIT_IMAGES]))

    def part(index: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return preprocessing(images.load(index)).to(device), images.labels[index].to(device)

    train = (split.train, images.labels[split.train].to(device))
    return PreparedData(images, preprocessing, train, part(split.val), part(split.test), stream=images)
