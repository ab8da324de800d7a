"""One config object for a training run: the CLI fills it, the trainer reads it, the run directory keeps it."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

from cnnkit.data.preprocess_kinds import PREPROCESSING_KINDS
from cnnkit.errors import CnnkitError

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
}


@dataclass
class TrainConfig:
    """Everything that decides a training run. Defaults are the recipe that trains the digits CNN to >= 99%."""

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
    channels_last: str = "auto"  # auto: NHWC memory format for inputs of 32x32 and up (measured faster there)
    recipe: str = "default"

    def validate(self) -> TrainConfig:
        """Check every choice and range; raise CnnkitError naming the bad value."""
        for name, allowed in CHOICES.items():
            value = getattr(self, name)
            if value not in allowed:
                raise CnnkitError(f"{name} must be one of {', '.join(allowed)}; received {name}={value!r}")
        for name in ("epochs", "batch_size", "eval_every"):
            if getattr(self, name) < 1:
                raise CnnkitError(f"{name} must be at least 1; received {name}={getattr(self, name)}")
        for name in ("lr", "weight_decay", "label_smoothing", "grad_clip", "patience", "shift", "warmup_epochs"):
            if getattr(self, name) < 0:
                raise CnnkitError(f"{name} must not be negative; received {name}={getattr(self, name)}")
        if self.stream and self.eval_mode == "batch":
            raise CnnkitError("--stream cannot evaluate the training set as one batch (eval_mode batch)")
        if self.workers < 0:
            raise CnnkitError(f"workers must not be negative; received workers={self.workers}")
        if self.image_size is not None and self.image_size < 1:
            raise CnnkitError(f"image_size must be positive; received image_size={self.image_size}")
        return self

    def to_dict(self) -> dict:
        """JSON-ready."""
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict) -> TrainConfig:
        """Inverse of to_dict; unknown keys are refused by name."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise CnnkitError(f"unknown config keys: {', '.join(unknown)}")
        return cls(**values).validate()

    @classmethod
    def from_run_dir(cls, run_dir: str | Path, epochs: int | None = None) -> TrainConfig:
        """The config a run directory was trained with (its config.json), optionally with a new epoch count."""
        path = Path(run_dir) / "config.json"
        if not path.exists():
            raise CnnkitError(f"{run_dir}: nothing to resume (no config.json)")
        try:
            values = json.loads(path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as error:
            raise CnnkitError(f"{path}: not valid JSON ({error})") from None
        if not isinstance(values, dict):
            raise CnnkitError(f"{path}: expected a JSON object of training settings")
        config = cls.from_dict(values)
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
