"""One config object for a training run: the CLI fills it, the trainer reads it, the run directory keeps it."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from pathlib import Path

from cnnkit.core.errors import CnnkitError
from cnnkit.data.preprocess_kinds import PREPROCESSING_KINDS

RESUMABLE = {"epochs", "threads"}  # what --resume may change: the run's length, and how fast it runs here

CHOICES = {
    "optimizer": ("adam", "adamw", "sgd"),
    "schedule": ("constant", "step", "cosine", "onecycle"),
    "loss": ("cross_entropy", "article"),
    "precision": ("fp32", "bf16", "fp16"),
    "bn_stats": ("running", "recompute"),
    "eval_mode": ("population", "batch"),
    "preprocessing": PREPROCESSING_KINDS,
    "device": ("auto", "cpu", "cuda"),
    "compile": ("auto", "on", "off"),
    "channels_last": ("auto", "on", "off"),
    "freeze": ("none", "features"),
}


# name: (lowest, highest, what the message says is expected); fields in OPEN_BELOW must exceed their lowest value.
RANGES: dict[str, tuple[float, float, str]] = {
    "lr": (0.0, math.inf, "a finite number above 0"),
    "momentum": (0.0, 0.999, "between 0 and 0.999"),
    "weight_decay": (0.0, 10.0, "between 0 and 10"),
    "warmup_epochs": (0.0, 1e6, "a finite number of epochs, 0 or more"),
    "step_size": (1, 1_000_000, "a whole number of epochs, 1 or more"),
    "gamma": (0.0, 1.0, "above 0 and at most 1 (the factor the learning rate is multiplied by)"),
    "label_smoothing": (0.0, 0.999, "between 0 and 0.999"),
    "batch_size": (1, 65_536, "a whole number between 1 and 65,536"),
    "epochs": (1, 1_000_000, "a whole number between 1 and 1,000,000"),
    "patience": (0, 1_000_000, "a whole number of epochs, 0 (off) or more"),
    "grad_clip": (0.0, 1e9, "a finite number, 0 (off) or more"),
    "seed": (0, 2**32 - 1, "a whole number between 0 and 2^32-1"),
    "eval_every": (1, 1_000_000, "a whole number of epochs, 1 or more"),
    "shift": (0, 64, "a whole number of pixels between 0 and 64"),
    "workers": (0, 64, "a whole number between 0 and 64"),
    "threads": (0, 1024, "a whole number of threads, 0 (choose from the work) or more"),
    "image_size": (1, 4096, "a whole number of pixels between 1 and 4096"),
    "val_fraction": (0.0, 0.999, "a fraction in [0, 1)"),
    "test_fraction": (0.0, 0.999, "a fraction in [0, 1)"),
}
OPEN_BELOW = {"lr", "gamma"}


def _in_range(value: object, low: float, high: float, open_below: bool) -> bool:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return False
    return (value > low if open_below else value >= low) and value <= high


@dataclass
class TrainConfig:
    """Everything that decides a training run. The defaults are digits_cnn's recipe; `for_model` starts from another
    model's own recipe (kept with the model in the registry)."""

    model: str = "digits_cnn"
    model_options: dict = field(default_factory=dict)
    data: str = "digits"
    image_size: int | None = None
    val_fraction: float = 0.1
    test_fraction: float = 0.2
    preprocessing: str = "standardize"
    shift: int = 1  # random-shift augmentation, in pixels (0 = off)
    flip: bool = False
    optimizer: str = "adamw"
    lr: float = 1e-2
    momentum: float = 0.9
    nesterov: bool = False
    weight_decay: float = 5e-4
    schedule: str = "onecycle"
    warmup_epochs: float = 0.0
    step_size: int = 10
    gamma: float = 0.1
    label_smoothing: float = 0.1
    loss: str = "cross_entropy"
    batch_size: int = 128
    epochs: int = 40
    patience: int = 0  # early stopping: epochs without a better validation accuracy (0 = off)
    grad_clip: float = 0.0  # max gradient norm (0 = off)
    seed: int = 0
    device: str = "auto"
    precision: str = "fp32"
    bn_stats: str = "running"
    shuffle: bool = True
    drop_last: bool = False
    eval_every: int = 1
    eval_mode: str = "population"  # 'batch': BN uses the evaluated batch's statistics, as the article does
    sync_bn: bool = False
    compile: str = "auto"  # auto: compile runs long enough for it to pay (>= 20,000 steps)
    tensorboard: bool = False
    stream: bool = False  # image folders: decode training batches from disk with a DataLoader
    workers: int = 2  # DataLoader worker processes with --stream
    channels_last: str = "auto"  # auto: NHWC on the CPU, and on a GPU for 32x32 inputs and up
    threads: int = 0  # intra-op threads; 0 = chosen from the work (see cnnkit.train.threads)
    init_from: str | None = None  # start from this checkpoint's weights (fine-tuning)
    freeze: str = "none"  # with init_from: 'features' keeps the feature extractor fixed
    recipe: str = "default"

    def validate(self) -> TrainConfig:
        """Check every choice and range; raise CnnkitError naming the bad value and what was expected."""
        for name, allowed in CHOICES.items():
            value = getattr(self, name)
            if value not in allowed:
                raise CnnkitError(f"{name} must be one of {', '.join(allowed)}; received {name}={value!r}")
        for name, (low, high, expected) in RANGES.items():
            value = getattr(self, name)
            if value is None and name == "image_size":
                continue
            if not _in_range(value, low, high, name in OPEN_BELOW):
                raise CnnkitError(f"--{name.replace('_', '-')} must be {expected}; received {value!r}")
        if self.stream and self.eval_mode == "batch":
            raise CnnkitError("--stream cannot evaluate the training set as one batch (eval_mode batch)")
        return self

    def to_dict(self) -> dict:
        """JSON-ready."""
        return asdict(self)

    @classmethod
    def for_model(cls, model: str | None, **overrides: object) -> TrainConfig:
        """The model's own training recipe from the registry (timm-style per-model defaults), then `overrides`.

        With no model named: the model of `init_from`'s checkpoint when fine-tuning, else digits_cnn.
        """
        from cnnkit.models import model_info
        from cnnkit.store.checkpoint import load_checkpoint  # torch loads only when a run is configured, not for --help

        if model is None:
            init_from = overrides.get("init_from")
            model = load_checkpoint(init_from)[1]["model"]["name"] if init_from else cls.model
        return cls(model=model, **{**model_info(model).recipe, **overrides}).validate()

    @classmethod
    def from_dict(cls, values: dict, where: str = "config") -> TrainConfig:
        """Inverse of to_dict: types checked strictly, unknown keys refused by name, then ranges validated."""
        from cnnkit.store.metadata import config_values  # pydantic loads only when a file is read, not for --help

        return cls(**config_values(values, where, cls)).validate()

    @classmethod
    def from_run_dir(cls, run_dir: str | Path, epochs: int | None = None) -> TrainConfig:
        """The config a run directory was trained with (its config.json), optionally with a new epoch count."""
        from cnnkit.store.metadata import parse_json

        path = Path(run_dir) / "config.json"
        if not path.is_file():
            from cnnkit.store.checkpoint import seed_runs  # only on this error: it imports torch

            seeds = seed_runs(Path(run_dir))
            hint = f"; it holds the runs of --seeds: resume one, e.g. {seeds[0]}" if seeds else ""
            raise CnnkitError(f"{run_dir}: nothing to resume (no config.json){hint}")
        config = cls.from_dict(parse_json(path.read_bytes(), path), str(path))
        if epochs is not None:
            config.epochs = epochs
        return config.validate()


def seed_recipe(**overrides) -> TrainConfig:
    """The article's exact recipe: digitsnet with N(0, 1) init, min-max scaling, batch 8 in file order, Adam 1e-3,
    its loss, 1000 epochs, accuracy every 100 epochs measured on the training set with batch statistics.
    `overrides` (explicit user flags) are applied on top."""
    config = TrainConfig(
        model="digitsnet", model_options={"seed_faithful": True}, val_fraction=0.0, preprocessing="minmax", shift=0,
        optimizer="adam", lr=1e-3, weight_decay=0.0, schedule="constant", label_smoothing=0.0, loss="article",
        batch_size=8, epochs=1000, shuffle=False, drop_last=True, eval_every=100, eval_mode="batch", recipe="seed",
    )
    for name, value in overrides.items():
        setattr(config, name, value)
    return config.validate()
