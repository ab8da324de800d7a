"""A training run's directory: config, metrics and the last/best checkpoints, owned by one object.

Only the main process writes, and only when there is a directory: on every other rank, or with no `--out`, the
writing methods do nothing, so the training loop never asks "am I rank 0, do I have a folder?" itself.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from cnnkit.checkpoint import atomic_write, load_checkpoint, save_checkpoint
from cnnkit.data.preprocess import Preprocessing
from cnnkit.errors import CnnkitError
from cnnkit.train.config import TrainConfig

RUN_FILES = ("config.json", "metrics.jsonl", "last.json", "last.safetensors", "best.json", "best.safetensors")


@dataclass
class Restored:
    """Where a resumed run picks up: the next epoch, step count, best result, history and saved tensors."""

    start_epoch: int = 1
    step: int = 0
    best: dict | None = None
    history: list[dict] = field(default_factory=list)
    tensors: dict[str, torch.Tensor] | None = None  # the last checkpoint (optimiser state included)
    param_groups: list[dict] | None = None  # the eager optimiser's param groups
    best_state: dict[str, torch.Tensor] | None = None  # weights of the best validation epoch so far


def optimizer_tensors(optimizer: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], list[dict]]:
    """Flatten an optimiser's state into named tensors plus JSON-ready param groups."""
    state = optimizer.state_dict()
    tensors = {}
    for index, slots in state["state"].items():
        for name, value in slots.items():
            if isinstance(value, torch.Tensor):
                tensors[f"optim.{index}.{name}"] = value.detach().cpu().contiguous()
    return tensors, state["param_groups"]


def restore_optimizer(optimizer: torch.optim.Optimizer, tensors: dict[str, torch.Tensor], groups: list[dict]) -> None:
    """Inverse of optimizer_tensors."""
    state: dict[int, dict] = {}
    for key, value in tensors.items():
        if key.startswith("optim.") and not key.startswith("optim.flat."):
            _, index, name = key.split(".", 2)
            state.setdefault(int(index), {})[name] = value
    optimizer.load_state_dict({"state": state, "param_groups": groups})


class RunDirectory:
    """Prepare, describe and write one run directory; a no-op writer off the main process or without a path."""

    def __init__(self, path: Path | None, is_main: bool = True) -> None:
        self.path = path
        self.writes = path is not None and is_main
        self.description: dict = {}

    def prepare(self, overwrite: bool) -> None:
        """Refuse an existing run unless told to overwrite it (then only cnnkit's own files are removed)."""
        if not self.writes:
            return
        existing = [name for name in RUN_FILES if (self.path / name).exists()]
        if existing and not overwrite:
            raise CnnkitError(f"{self.path} already holds a run ({', '.join(existing)}); pass --resume {self.path} "
                              "to continue it or --overwrite to replace it")
        for name in existing:
            (self.path / name).unlink()
        shutil.rmtree(self.path / "tensorboard", ignore_errors=True)
        self.path.mkdir(parents=True, exist_ok=True)

    def describe(self, config: TrainConfig, spec: dict, class_names: list[str], data: dict) -> None:
        """The metadata every checkpoint of this run shares: config, model spec, classes, data description."""
        self.description = {"model": spec, "class_names": class_names, "config": config.to_dict(), "data": data}

    def write_config(self, config: TrainConfig) -> None:
        """config.json: what `--resume` reads back."""
        if self.writes:
            atomic_write(self.path / "config.json", json.dumps(config.to_dict(), indent=1).encode())

    def append_metrics(self, record: dict) -> None:
        """One line of metrics.jsonl."""
        if self.writes:
            with open(self.path / "metrics.jsonl", "a") as file:
                file.write(json.dumps(record) + "\n")

    def save(
        self, name: str, model: nn.Module, metrics: dict, epoch: int, step: int, best: dict | None,
        preprocessing: Preprocessing | None, state: tuple[dict[str, torch.Tensor], list[dict] | None] | None = None,
    ) -> None:
        """Write checkpoint `name` ('last' or 'best'); `state` is (optimiser tensors, param groups) to resume."""
        if not self.writes:
            return
        meta = {**self.description, "metrics": dict(metrics), "epoch": epoch, "global_step": step, "best": best}
        extra = {"rng.torch": torch.get_rng_state()}
        if state is not None:
            tensors, groups = state
            extra.update(tensors)
            if groups is not None:
                meta["optimizer_param_groups"] = groups
        save_checkpoint(self.path / name, model, meta, preprocessing, extra)

    def restore(self, model: nn.Module) -> Restored:
        """Load the last checkpoint into `model` and the RNG; trim metrics.jsonl to the epochs it covers."""
        if self.path is None or not (self.path / "last.json").exists():
            raise CnnkitError(f"{self.path}: nothing to resume (no last.json checkpoint)")
        tensors, meta = load_checkpoint(self.path / "last")
        model.load_state_dict(_model_weights(tensors))
        torch.set_rng_state(tensors["rng.torch"])
        history = []
        if (self.path / "metrics.jsonl").exists():
            lines = (self.path / "metrics.jsonl").read_text().splitlines()
            history = [r for r in map(json.loads, lines) if "epoch" in r and r["epoch"] <= meta["epoch"]]
            if self.writes:
                atomic_write(self.path / "metrics.jsonl", "".join(json.dumps(r) + "\n" for r in history).encode())
        best = meta.get("best")
        best_state = None
        if best is not None and (self.path / "best.json").exists():
            best_state = _model_weights(load_checkpoint(self.path / "best")[0])
        return Restored(meta["epoch"] + 1, meta["global_step"], best, history, tensors,
                        meta.get("optimizer_param_groups"), best_state)


def _model_weights(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {key[len("model."):]: value for key, value in tensors.items() if key.startswith("model.")}
