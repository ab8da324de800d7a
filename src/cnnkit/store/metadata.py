"""The JSON cnnkit reads back (checkpoint metadata, config.json, metrics.jsonl), validated once at the edge.

Every reader parses with `parse_json` (size cap, nesting-bomb safe) and validates with these pydantic models, so
later code can trust types and ranges instead of chaining `.get`s; a bad file gets one line naming the file
and the first problem.
"""

from __future__ import annotations

import json
import math
from dataclasses import fields as dataclass_fields
from functools import partial
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StrictInt,
    ValidationError,
    create_model,
    field_validator,
    model_validator,
)

from cnnkit.core.errors import CnnkitError
from cnnkit.core.limits import limit
from cnnkit.data.preprocess_kinds import PREPROCESSING_KINDS

FORMAT = "cnnkit-checkpoint"
Name = Annotated[str, Field(min_length=1, max_length=200)]
OptionValue = bool | int | float | str


def parse_json(data: bytes | str, where: str | Path, unique_keys: bool = False) -> Any:
    """JSON text -> Python values; invalid, oversized or absurdly nested text raises CnnkitError naming `where`.
    With `unique_keys`, an object naming a key twice is refused (json.loads keeps the last silently: an edited
    config.json with two `lr`s would train with one and show the other)."""
    if len(data) > limit("json_bytes"):
        raise CnnkitError(f"{where}: {len(data):,} bytes of JSON exceeds the limit of {limit('json_bytes'):,}; set "
                          "CNNKIT_MAX_JSON_BYTES to raise it")
    try:
        return json.loads(data, object_pairs_hook=partial(_unique_object, where) if unique_keys else None)
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise CnnkitError(f"{where}: not valid JSON ({error})") from None
    except RecursionError:
        raise CnnkitError(f"{where}: JSON nested too deeply to be cnnkit metadata") from None
    except CnnkitError:  # a key named twice (a ValueError too)
        raise
    except ValueError as error:  # Python's cap on integer digits (4300): no setting of cnnkit's is that long
        raise CnnkitError(f"{where}: not valid cnnkit JSON ({error})") from None


def _unique_object(where: str | Path, pairs: list[tuple[str, Any]]) -> dict:
    """A JSON object whose keys are all different (json.loads' object_pairs_hook)."""
    values = {}
    for key, value in pairs:
        if key in values:
            raise CnnkitError(f"{where}: the key {key!r} appears twice in one object; keep one")
        values[key] = value
    return values


def _first_problem(error: ValidationError) -> str:
    problem = error.errors()[0]
    place = ".".join(str(part) for part in problem["loc"]) or "(top level)"
    return f"{place}: {problem['msg']}"


class ModelSpec(BaseModel):
    """How to rebuild a model: registry name, builder options, classes, input channels and size."""

    model_config = ConfigDict(extra="forbid")
    name: Name
    options: dict[Name, OptionValue] = Field(default_factory=dict, max_length=64)
    num_classes: Annotated[StrictInt, Field(ge=1)]
    in_channels: Annotated[StrictInt, Field(ge=1, le=64)]
    input_size: tuple[Annotated[StrictInt, Field(ge=1)], Annotated[StrictInt, Field(ge=1)]]

    @field_validator("num_classes")
    @classmethod
    def _classes_capped(cls, value: int) -> int:
        if value > limit("classes"):
            raise ValueError(f"{value:,} classes exceeds the limit of {limit('classes'):,} (CNNKIT_MAX_CLASSES)")
        return value

    @field_validator("input_size")
    @classmethod
    def _size_capped(cls, value: tuple[int, int]) -> tuple[int, int]:
        if max(value) > limit("image_side"):
            raise ValueError(f"input size {value[0]}x{value[1]} exceeds the limit of {limit('image_side')} pixels a "
                             "side (CNNKIT_MAX_IMAGE_SIDE)")
        return value


class DataInfo(BaseModel):
    """What a checkpoint records about its data: where white is, and (for trained runs) the split sizes."""

    model_config = ConfigDict(extra="allow")
    pixel_max: Annotated[float, Field(gt=0, strict=True)] = 255.0
    source: Annotated[str, Field(min_length=1, max_length=4096)] | None = None
    mean_fraction: Annotated[float, Field(ge=0, le=1, strict=True)] | None = None  # predict's polarity note
    train: Annotated[StrictInt, Field(ge=0)] | None = None  # the split's sizes, which evaluate compares
    val: Annotated[StrictInt, Field(ge=0)] | None = None
    test: Annotated[StrictInt, Field(ge=0)] | None = None

    @field_validator("pixel_max")
    @classmethod
    def _finite(cls, value: float) -> float:
        if not math.isfinite(value):
            raise ValueError("must be a finite number")
        return value


class Best(BaseModel):
    """The best validation epoch so far."""

    epoch: Annotated[int, Field(ge=0)]
    val_accuracy: Annotated[float, Field(ge=0, le=1)]
    val_loss: float


class CheckpointMeta(BaseModel):
    """Metadata stored inside a checkpoint's tensors file (and copied to its JSON file)."""

    model_config = ConfigDict(extra="allow")
    format: Literal["cnnkit-checkpoint"]
    model: ModelSpec
    class_names: list[Annotated[str, Field(max_length=1000)]] = Field(default_factory=list)
    preprocessing: Literal[PREPROCESSING_KINDS] | None = None
    data: DataInfo = Field(default_factory=DataInfo)
    epoch: Annotated[StrictInt, Field(ge=0)] = 0
    global_step: Annotated[StrictInt, Field(ge=0)] = 0
    best: Best | None = None
    metrics: dict[str, Any] = Field(default_factory=dict)
    config: dict[str, Any] | None = None
    # How many processes trained the run, and the images of one step over all of them (torchrun); None: written
    # before cnnkit recorded it. A resume must keep them: they set the steps per epoch and the schedule.
    processes: Annotated[StrictInt, Field(ge=1, le=1_000_000)] | None = None
    global_batch: Annotated[StrictInt, Field(ge=1)] | None = None

    @model_validator(mode="after")
    def _one_name_per_class(self) -> CheckpointMeta:
        if self.class_names and len(self.class_names) != self.model.num_classes:
            raise ValueError(f"{len(self.class_names)} class names for a model with {self.model.num_classes} classes")
        return self

    @model_validator(mode="after")
    def _config_agrees(self) -> CheckpointMeta:
        """A training run's config names the data the checkpoint records it was trained on; an edit to one of them
        (a data path pointed elsewhere) would make evaluate test on the wrong images. (An edited model is caught
        by the size check of `build_model`.)"""
        config = self.config or {}
        data, source = config.get("data"), self.data.source
        if isinstance(data, str) and source is not None and data != source and Path(data) != Path(source):
            raise ValueError(f"config.data is {data!r} but the checkpoint was trained on {source!r}")
        return self


def checkpoint_meta(values: Any, where: str | Path) -> CheckpointMeta:
    """Validate checkpoint metadata; the first problem is named with the file."""
    if not isinstance(values, dict) or values.get("format") != FORMAT:
        raise CnnkitError(f"{where}: not a cnnkit checkpoint (format {FORMAT!r} missing)")
    try:
        return CheckpointMeta.model_validate(values)
    except ValidationError as error:
        raise CnnkitError(f"{where}: bad checkpoint metadata at {_first_problem(error)}") from None


class MetricsRecord(BaseModel):
    """One line of metrics.jsonl: an epoch's record, or the final test line."""

    model_config = ConfigDict(extra="allow")
    epoch: Annotated[int, Field(ge=1)] | None = None
    final: dict[str, Any] | None = None


def metrics_records(text: str, where: str | Path) -> tuple[list[dict], str | None]:
    """(records, a description of the torn trailing line dropped, else None) of a metrics.jsonl file; other bad
    lines are refused."""
    lines = text.splitlines()
    records, torn = [], None
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            values = json.loads(line)
            MetricsRecord.model_validate(values)
        except (json.JSONDecodeError, ValidationError, RecursionError) as error:
            if number == len(lines) and not text.endswith("\n"):  # a write cut short by a kill
                torn = f"line {number}, {len(line):,} characters cut short: {line[:60]!r}"
                break
            raise CnnkitError(f"{where}: line {number} is not a metrics record ({type(error).__name__})") from None
        records.append(values)
    return records, torn


def read_metrics(path: Path) -> tuple[list[dict], str | None]:
    """`metrics_records` of a metrics.jsonl file, its size capped before it is read."""
    from cnnkit.data.safety import read_bytes  # data sits below store

    return metrics_records(read_bytes(path, cap="json_bytes").decode("utf-8", errors="replace"), path)


def config_values(values: Any, where: str | Path, config_type: type) -> dict:
    """Validate a run's config.json against the config dataclass's fields (strict types, unknown keys refused)."""
    if not isinstance(values, dict):
        raise CnnkitError(f"{where}: expected a JSON object of training settings")
    try:
        return _config_model(config_type).model_validate(values).model_dump(exclude_unset=True)
    except ValidationError as error:
        raise CnnkitError(f"{where}: bad config at {_first_problem(error)}") from None


def _config_model(config_type: type) -> type[BaseModel]:
    """A strict pydantic model with the dataclass's field names, types and defaults."""
    fields = {f.name: (f.type, None) for f in dataclass_fields(config_type)}
    return create_model(f"{config_type.__name__}File", __config__=ConfigDict(strict=True, extra="forbid"),
                        __module__=config_type.__module__, **fields)
