"""Turn a TrainConfig's data settings into preprocessed tensors on the training device."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from cnnkit.data import ImageDataset, Preprocessing, load_source, stratified_split
from cnnkit.train.config import TrainConfig


@dataclass
class PreparedData:
    """Preprocessed splits on one device, plus what a checkpoint needs to redo the preprocessing."""

    dataset: ImageDataset
    preprocessing: Preprocessing
    train: tuple[torch.Tensor, torch.Tensor]
    val: tuple[torch.Tensor, torch.Tensor]
    test: tuple[torch.Tensor, torch.Tensor]


def prepare_data(config: TrainConfig, device: torch.device) -> PreparedData:
    """Load, split (stratified, seeded), fit preprocessing on the training split only, move to `device`."""
    size = (config.image_size, config.image_size) if config.image_size else None
    dataset = load_source(config.data, size)
    split = stratified_split(dataset.labels, config.val_fraction, config.test_fraction, config.seed)
    preprocessing = Preprocessing.fit(config.preprocessing, dataset.images[split.train])

    def part(index: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return preprocessing(dataset.images[index]).to(device), dataset.labels[index].to(device)

    return PreparedData(dataset, preprocessing, part(split.train), part(split.val), part(split.test))
