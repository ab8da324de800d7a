"""One config model for a training run: its fields (type, bounds, description) drive `cnnkit train`'s flags and help,
validate config.json and the Python API alike; the trainer reads it and the run directory keeps it."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from cnnkit.core.errors import CnnkitError
from cnnkit.data.preprocess_kinds import PREPROCESSING_KINDS

RESUMABLE = {"epochs", "threads"}  # what --resume may change: the run's length, and how fast it runs here
Switch = Literal["auto", "on", "off"]


def _setting(default: Any, description: str, expected: str | None = None, **bounds: Any) -> Any:
    """A field with its help text and, for numbers, the words an error uses for what is expected."""
    extra = {"expected": expected} if expected else None
    if callable(default):
        return Field(default_factory=default, description=description, json_schema_extra=extra, **bounds)
    return Field(default, description=description, json_schema_extra=extra, **bounds)


class TrainConfig(BaseModel):
    """Everything that decides a training run. The defaults are digits_cnn's recipe; `for_model` starts from another
    model's own recipe (kept with the model in the registry)."""

    # strict: 1.5 is not an epoch count, "1" not a number, 1 not true; assignments are checked as construction is
    model_config = ConfigDict(strict=True, extra="forbid", validate_assignment=True, allow_inf_nan=False,
                              protected_namespaces=())

    model: str = _setting("digits_cnn", "registered model name (see `cnnkit models`); default digits_cnn. Every "
                          "other setting defaults to that model's own recipe (see docs/training.md), and any flag "
                          "given overrides it")
    model_options: dict = _setting(dict, "model builder options, e.g. {'width': 32}")
    data: str = _setting("digits", "'digits' (built in), an image folder (ROOT/CLASS/IMAGES), MNIST IDX files, "
                         "CIFAR-10 .bin, .npz or .csv")
    white: float | None = _setting(None, "white's value in an array file (.npz, .csv data), e.g. 16 for scikit-learn's "
                                   "digits, 255 or 1; the run records it as the data's scale, and larger values are "
                                   "refused. Default: 1 for data within 0..1, 255 for data whose largest value is "
                                   "above 128 and at most 255; any other file must state it",
                                   "a positive number (white's value in the array file, e.g. 16, 255 or 1)",
                                   gt=0.0, le=1e6)
    image_size: int | None = _setting(None, "resize images to SIZE x SIZE (needed when a folder mixes sizes)",
                                      "a whole number of pixels between 1 and 4096", ge=1, le=4096)
    val_fraction: float = _setting(0.1, "fraction held out for validation (model selection, early stopping)",
                                   "a fraction in [0, 1)", ge=0.0, le=0.999)
    test_fraction: float = _setting(0.2, "fraction held out for the final test accuracy", "a fraction in [0, 1)",
                                    ge=0.0, le=0.999)
    preprocessing: Literal[PREPROCESSING_KINDS] = _setting(
        "standardize", "fitted on the training split: standardize (per channel), minmax (per pixel, the article's) "
        "or none")
    shift: int = _setting(1, "random-shift augmentation in pixels (0 = off)", "a whole number of pixels between 0 "
                          "and 64", ge=0, le=64)
    flip: bool = _setting(False, "random horizontal flips (not for digits)")
    optimizer: Literal["adam", "adamw", "sgd"] = _setting("adamw", "adam, adamw or sgd (momentum)")
    lr: float = _setting(1e-2, "peak learning rate", "a finite number above 0 and at most 1e6", gt=0.0, le=1e6)
    momentum: float = _setting(0.9, "SGD momentum", "between 0 and 0.999", ge=0.0, le=0.999)
    nesterov: bool = _setting(False, "Nesterov momentum for SGD")
    weight_decay: float = _setting(5e-4, "weight decay on weights (not biases / BN)", "between 0 and 10",
                                   ge=0.0, le=10.0)
    schedule: Literal["constant", "step", "cosine", "onecycle"] = _setting("onecycle", "learning-rate schedule")
    warmup_epochs: float = _setting(0.0, "linear warm-up length in epochs", "a finite number of epochs, 0 or more",
                                    ge=0.0, le=1e6)
    step_size: int = _setting(10, "epochs between decays for --schedule step", "a whole number of epochs, 1 or more",
                              ge=1, le=1_000_000)
    gamma: float = _setting(0.1, "decay factor for --schedule step", "above 0 and at most 1 (the factor the learning "
                            "rate is multiplied by)", gt=0.0, le=1.0)
    label_smoothing: float = _setting(0.1, "cross-entropy label smoothing", "between 0 and 0.999", ge=0.0, le=0.999)
    loss: Literal["cross_entropy", "article"] = _setting(
        "cross_entropy", "cross_entropy, or article (the article's clipped one-hot loss)")
    batch_size: int = _setting(128, "images per optimiser step (per process)", "a whole number between 1 and 65,536",
                               ge=1, le=65_536)
    epochs: int = _setting(40, "passes over the training split", "a whole number between 1 and 1,000,000",
                           ge=1, le=1_000_000)
    patience: int = _setting(0, "stop after this many epochs without a better validation accuracy (0 = never)",
                             "a whole number of epochs, 0 (off) or more", ge=0, le=1_000_000)
    grad_clip: float = _setting(0.0, "clip the gradient norm to this value (0 = off)", "a finite number, 0 (off) or "
                                "more", ge=0.0, le=1e9)
    seed: int = _setting(0, "seed for the split, initialisation, order and augmentation", "a whole number between 0 "
                         "and 2^32-1", ge=0, le=2**32 - 1)
    device: Literal["auto", "cpu", "cuda"] = _setting("auto", "auto (CUDA if present), cpu or cuda")
    precision: Literal["fp32", "bf16", "fp16"] = _setting("fp32", "fp32, bf16 (autocast) or fp16 (CUDA AMP with "
                                                          "loss scaling)")
    bn_stats: Literal["running", "recompute"] = _setting(
        "running", "running (averages during training) or recompute (the article's average of batch moments)")
    shuffle: bool = _setting(True, "reshuffle the training split every epoch (off: file order, as the article)")
    drop_last: bool = _setting(False, "drop the last, smaller batch of each epoch")
    eval_every: int = _setting(1, "evaluate, log and checkpoint every N epochs", "a whole number of epochs, 1 or more",
                               ge=1, le=1_000_000)
    eval_mode: Literal["population", "batch"] = _setting(
        "population", "population (BN population statistics) or batch (the article's batch statistics)")
    sync_bn: bool = _setting(False, "synchronise batch-norm statistics across processes under torchrun")
    compile: Switch = _setting("auto", "torch.compile the training step: auto (runs of 20,000 steps and more, where "
                               "it pays), on or off")
    tensorboard: bool = _setting(False, "also log scalars for TensorBoard under RUN_DIR/tensorboard (extra "
                                 "[tensorboard])")
    stream: bool = _setting(False, "image folders too large for memory: decode training batches from disk (a "
                            "DataLoader)")
    workers: int = _setting(2, "DataLoader worker processes with --stream", "a whole number between 0 and 64",
                            ge=0, le=64)
    channels_last: Switch = _setting("auto", "NHWC memory format for model and batches: auto (CPU always, GPU from "
                                     "32x32), on or off")
    threads: int | None = _setting(None, "intra-op CPU threads per process; default: chosen from the work (1 for "
                                   "digits-size steps, else the cores divided among torchrun's processes)",
                                   "a whole number of threads between 1 and 1024 (leave it out to choose from the "
                                   "work)", ge=1, le=1024)
    init_from: str | None = _setting(None, "start from this checkpoint's weights (a run directory or checkpoint: "
                                     "trained, or imported from Keras / torchvision); the model is the checkpoint's, "
                                     "a new classifier layer is made when the classes differ, and its input scaling "
                                     "is kept")
    freeze: Literal["none", "features"] = _setting(
        "none", "with --init-from: 'features' keeps the feature extractor's weights and batch-norm statistics fixed "
        "(only the head trains)")
    recipe: Literal["default", "seed"] = _setting(
        "default", "default: the model's own recipe from the registry; seed: the article's exact program (digitsnet, "
        "N(0,1) init, batch 8 in file order, Adam 1e-3, its loss, 1000 epochs), plus the held-out accuracy it never "
        "measured")

    def __init__(self, **values: Any) -> None:
        try:
            super().__init__(**values)
        except ValidationError as error:
            raise SettingError.of_validation(error) from None

    def __setattr__(self, name: str, value: Any) -> None:
        try:
            super().__setattr__(name, value)
        except ValidationError as error:
            raise SettingError.of_validation(error) from None

    @model_validator(mode="after")
    def _consistent(self) -> TrainConfig:
        if self.stream and self.eval_mode == "batch":
            raise _InconsistentError(Named("stream", True), " cannot evaluate the training set as one batch (",
                                Named("eval_mode", "batch"), ")")
        if self.freeze != "none" and not self.init_from:
            raise _InconsistentError(Named("freeze", self.freeze), " keeps a checkpoint's features: it needs ",
                                Named("init_from"), " (a checkpoint); received no ", Named("init_from"))
        return self

    def validate(self) -> TrainConfig:  # type: ignore[override]  # pydantic's deprecated classmethod of this name
        """Every field is checked when set; kept so callers can say where a config must be sound."""
        return self

    def replace(self, **changes: Any) -> TrainConfig:
        """A copy with `changes`, validated (dataclasses.replace's successor)."""
        return type(self)(**{**self.to_dict(), **changes})

    def to_dict(self) -> dict:
        """JSON-ready."""
        return self.model_dump()

    @classmethod
    def default(cls, name: str) -> Any:
        """A field's default (digits_cnn's recipe)."""
        return cls.model_fields[name].get_default(call_default_factory=True)

    @classmethod
    def for_model(cls, model: str | None, **overrides: object) -> TrainConfig:
        """The model's own training recipe from the registry (timm-style per-model defaults), then `overrides`.

        With no model named: the model of `init_from`'s checkpoint when fine-tuning, else digits_cnn.
        """
        from cnnkit.models import model_info
        from cnnkit.store.checkpoint import load_checkpoint  # torch loads only when a run is configured, not for --help

        if model is None:
            init_from = overrides.get("init_from")
            model = load_checkpoint(init_from)[1]["model"]["name"] if init_from else cls.default("model")
        return cls(model=model, **{**model_info(model).recipe, **overrides})

    @classmethod
    def from_dict(cls, values: Any, where: str = "config") -> TrainConfig:
        """A config.json's values: types checked strictly, unknown keys refused by name, ranges checked. Files of
        earlier versions load: settings added since take their defaults, and threads 0 meant 'choose'."""
        if not isinstance(values, dict):
            raise CnnkitError(f"{where}: expected a JSON object of training settings")
        if values.get("threads") == 0:
            values = {**values, "threads": None}
        try:
            return cls(**values)
        except SettingError as error:
            raise CnnkitError(f"{where}: bad config at {error.in_file}") from None

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
        from cnnkit.data.safety import read_bytes  # capped: a config.json is read from a folder a user names

        config = cls.from_dict(parse_json(read_bytes(path, cap="json_bytes"), path, unique_keys=True), str(path))
        return config if epochs is None else config.replace(epochs=epochs)

    def check_device(self) -> None:
        """Refuse --device cuda on a machine without a GPU, before a run directory is made (imports torch)."""
        import torch

        if self.device == "cuda" and not torch.cuda.is_available():
            raise SettingError(Named("device", "cuda"), ": no CUDA GPU is available to this process; received ",
                               Named("device", "cuda"), " (use ", Named("device", "cpu"), ", or auto)")


@dataclass(frozen=True)
class Named:
    """A setting named in a message: `--name value` on the command line, `name=value` from Python."""

    name: str
    value: Any = None

    def worded(self, flags: bool) -> str:
        """The setting as the caller gave it."""
        if flags:
            flag = "--" + self.name.replace("_", "-")
            return flag if self.value is None else f"{flag} {'' if self.value is True else self.value}".rstrip()
        return self.name if self.value is None else f"{self.name}={self.value!r}"


class SettingError(CnnkitError):
    """A refused setting, said as the Python API names it (fields: `epochs must be ...`); `flags` says it as
    `cnnkit train` names it (`--epochs must be ...`), `in_file` as config.json does (`epochs: must be ...`). The
    message is parts, text and `Named` settings, so one refusal has one wording, named three ways."""

    def __init__(self, *parts: str | Named, in_file: str | None = None) -> None:
        self.parts = parts
        super().__init__(self.worded(flags=False))
        self.in_file = self.worded(flags=False) if in_file is None else in_file

    def worded(self, flags: bool) -> str:
        """The message, naming settings by flag or by field."""
        return "".join(part if isinstance(part, str) else part.worded(flags) for part in self.parts)

    @property
    def flags(self) -> str:
        """The message as `cnnkit train` says it."""
        return self.worded(flags=True)

    @classmethod
    def of_validation(cls, error: ValidationError) -> SettingError:
        """A pydantic refusal as one line naming the setting, what it must be and the value received."""
        first = error.errors()[0]
        name = str(first["loc"][0]) if first["loc"] else ""
        cause = first.get("ctx", {}).get("error")
        if not name:  # a whole-model check: its message is the line
            return cls(*cause.parts) if isinstance(cause, _InconsistentError) else cls(str(cause or first["msg"]))
        if first["type"] == "extra_forbidden":
            return cls(f"{name}: no such setting (received {first['input']!r})")
        said = f" must be {expected(name)}; received {first['input']!r}"
        return cls(Named(name), said, in_file=f"{name}:{said}")


class _InconsistentError(ValueError):
    """A whole-config check's refusal, in parts (see SettingError), through pydantic's ValueError handling."""

    def __init__(self, *parts: str | Named) -> None:
        super().__init__("".join(part if isinstance(part, str) else part.worded(False) for part in parts))
        self.parts = parts


def expected(name: str) -> str:
    """What a field accepts, in words."""
    info = TrainConfig.model_fields[name]
    extra = info.json_schema_extra
    if isinstance(extra, dict) and "expected" in extra:
        return str(extra["expected"])
    choices = getattr(info.annotation, "__args__", None)
    if info.annotation is bool:
        return "true or false"
    if info.annotation is dict:
        return "an object of model options"
    if choices and all(isinstance(c, str) for c in choices):
        return "one of " + ", ".join(choices)
    return "text" if info.annotation is str else "text or null"


def seed_recipe(**overrides: Any) -> TrainConfig:
    """The article's exact recipe: digitsnet with N(0, 1) init, min-max scaling, batch 8 in file order, Adam 1e-3,
    its loss, 1000 epochs, accuracy every 100 epochs measured on the training set with batch statistics.
    `overrides` (explicit user flags) are applied on top."""
    if overrides.get("model", "digitsnet") != "digitsnet":
        raise SettingError(Named("recipe", "seed"), " is the article's own program for its network, digitsnet; "
                           "received ", Named("model", overrides["model"]))
    recipe = dict(
        model="digitsnet", model_options={"seed_faithful": True}, val_fraction=0.0, preprocessing="minmax", shift=0,
        optimizer="adam", lr=1e-3, weight_decay=0.0, schedule="constant", label_smoothing=0.0, loss="article",
        batch_size=8, epochs=1000, shuffle=False, drop_last=True, eval_every=100, eval_mode="batch", recipe="seed",
    )
    return TrainConfig(**{**recipe, **overrides})
