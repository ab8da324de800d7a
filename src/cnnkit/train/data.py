"""Turn a TrainConfig's data settings into preprocessed tensors on the training device."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import torch

from cnnkit.core.errors import CnnkitError
from cnnkit.data import ImageDataset, Preprocessing, Split, load_source, stratified_split
from cnnkit.data.batches import tensor_batches
from cnnkit.data.stream import FolderImages, stream_batches
from cnnkit.train.config import TrainConfig
from cnnkit.train.white import refuse_for_known, with_white


@dataclass
class PreparedData:
    """Preprocessed splits on one device, plus what a checkpoint needs to redo the preprocessing."""

    dataset: ImageDataset | FolderImages
    preprocessing: Preprocessing
    train: tuple[torch.Tensor, torch.Tensor]
    val: tuple[torch.Tensor, torch.Tensor]
    test: tuple[torch.Tensor, torch.Tensor]
    stream: FolderImages | None = None  # with --stream: train holds indices into it, decoded batch by batch
    notes: list[str] = field(default_factory=list)  # lines for the training log, e.g. how the test split was made

    def description(self, split_seed: int) -> dict:
        """What a checkpoint records about the data."""
        described = {"source": self.dataset.source, "image_shape": list(self.dataset.image_shape),
                     "pixel_max": self.dataset.pixel_max, "split_seed": split_seed,
                     "train": len(self.train[1]), "val": len(self.val[1]), "test": len(self.test[1])}
        if self.stream is None:  # how light the images are on average: predict warns about inverted drawings
            described["mean_fraction"] = round(float(self.dataset.images.mean()) / self.dataset.pixel_max, 4)
        return described


STREAM_FIT_IMAGES = 2_000  # training images decoded to fit preprocessing when streaming
PREPROCESS_CHUNK_VALUES = 2**20  # pixel values preprocessed at once: no whole-split temporaries


def image_size(config: TrainConfig) -> tuple[int, int] | None:
    """The (H, W) every image is resized to, if the config asks for one."""
    return (config.image_size, config.image_size) if config.image_size else None


def load_split(config: TrainConfig, progress: bool | None = None) -> tuple[ImageDataset, Split]:
    """The run's dataset in memory and its seeded train/validation/test split (see `split_dataset`)."""
    dataset = load_source(config.data, image_size(config), progress)
    return dataset, split_dataset(dataset, config)


def split_dataset(dataset: ImageDataset, config: TrainConfig) -> Split:
    """A source's own test set when it ships one (MNIST t10k, CIFAR-10 test_batch) is the test split, and
    validation is a stratified, seeded val_fraction of its training files; any other source is split stratified
    by val_fraction and test_fraction."""
    if dataset.official_test is None:
        return stratified_split(dataset.labels, config.val_fraction, config.test_fraction, config.seed)
    training = torch.nonzero(~dataset.official_test).flatten()
    part = stratified_split(dataset.labels[training], config.val_fraction, 0.0, config.seed)
    return Split(training[part.train], training[part.val], torch.nonzero(dataset.official_test).flatten())


def split_notes(dataset: ImageDataset) -> list[str]:
    """What the log should say about how the split was made, when it is not the usual fractions."""
    if dataset.official_test is None:
        return []
    count = int(dataset.official_test.sum())
    return [f"test split: the source's own test set ({dataset.official_test_source}, {count:,} images); "
            "--test-fraction ignored"]


def prepare_data(config: TrainConfig, device: torch.device, progress: bool | None = None,
                 given: tuple[Preprocessing | None, float] | None = None,
                 loaded: ImageDataset | None = None, recorded_white: float | None = None) -> PreparedData:
    """Load, split (stratified, seeded), fit preprocessing on the training split only, move to `device`.

    `given` = (preprocessing, its white value) replaces the fitting: a fine-tuned network keeps the input scaling
    its weights were trained with (None: inputs used as they were, scaled to that white). `loaded`: the source
    already decoded (several seeds split one decode of it). White's value in an array file is the config's, else
    `recorded_white` (a resumed run's), else read off its values where they leave no doubt (see `with_white`).
    """
    if config.stream:
        return _prepare_stream(config, device, given)
    dataset = loaded if loaded is not None else load_source(config.data, image_size(config), progress)
    dataset, white_note = with_white(dataset, config.white, recorded_white)
    split = split_dataset(dataset, config)
    preprocessing = _preprocessing(config, dataset.images[split.train], dataset.pixel_max, given)

    def part(index: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return _preprocessed(dataset.images, index, preprocessing, device), dataset.labels[index].to(device)

    return PreparedData(dataset, preprocessing, part(split.train), part(split.val), part(split.test),
                        notes=([white_note] if white_note else []) + split_notes(dataset))


def _preprocessed(images: torch.Tensor, index: torch.Tensor, preprocessing: Preprocessing,
                  device: torch.device) -> torch.Tensor:
    """preprocessing(images[index]) on `device`, a chunk at a time into one tensor (peak memory: the result)."""
    out = torch.empty((len(index), *images.shape[1:]), dtype=torch.float32, device=device)
    step = max(1, PREPROCESS_CHUNK_VALUES // images[0].numel())
    for start in range(0, len(index), step):
        chunk = index[start:start + step]
        out[start:start + len(chunk)] = preprocessing(images[chunk]).to(device)
    return out


def _preprocessing(config: TrainConfig, train_images: torch.Tensor, pixel_max: float,
                   given: tuple[Preprocessing | None, float] | None) -> Preprocessing:
    """Fitted on the training images, or the given one carried over to this data's pixel scale."""
    if given is None:
        return Preprocessing.fit(config.preprocessing, train_images)
    preprocessing, trained_pixel_max = given
    base = preprocessing or Preprocessing.fit("none", train_images[:1])
    return base.for_pixel_max(pixel_max, trained_pixel_max)


def _prepare_stream(config: TrainConfig, device: torch.device,
                    given: tuple[Preprocessing | None, float] | None = None) -> PreparedData:
    """Training images stay on disk; validation and test splits (small fractions) are decoded into memory."""
    path = Path(config.data)
    if not config.data.strip() or not path.is_dir():  # Path("") is the current folder: never read it unasked
        raise CnnkitError(f"--stream reads image folders; {config.data!r} is not a folder")
    images = FolderImages(path, image_size(config))
    refuse_for_known(config.white, config.data, images.pixel_max)
    split = stratified_split(images.labels, config.val_fraction, config.test_fraction, config.seed)
    sample = split.train[torch.randperm(len(split.train), generator=torch.Generator().manual_seed(config.seed))]
    preprocessing = _preprocessing(config, images.load(sample[:STREAM_FIT_IMAGES]), images.pixel_max, given)

    def part(index: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return preprocessing(images.load(index)).to(device), images.labels[index].to(device)

    train = (split.train, images.labels[split.train].to(device))
    return PreparedData(images, preprocessing, train, part(split.val), part(split.test), stream=images)


def training_batches(data: PreparedData, config: TrainConfig, order: torch.Tensor, device: torch.device, rank: int = 0,
                     world_size: int = 1) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """In-memory tensor batches, or (with --stream) batches decoded from disk by a DataLoader."""
    x, y = data.train
    if data.stream is None:
        return tensor_batches(x, y, config.batch_size, order, config.drop_last, rank, world_size)
    return stream_batches(data.stream, x[order.cpu()], config.batch_size, config.drop_last, data.preprocessing,
                          device, config.workers, rank, world_size)
