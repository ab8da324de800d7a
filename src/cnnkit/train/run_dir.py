"""A training run's directory: config, metrics and the last/best checkpoints, owned by one object.

Only the main process writes, and only when there is a directory: on every other rank, or with no `--out`, the
writing methods do nothing, so the training loop never asks "am I rank 0, do I have a folder?" itself. The
writer holds an exclusive lock on the directory (`flock` on .cnnkit.lock, which records its pid; the kernel
releases it when the process dies, so a stale lock file never blocks), cleans up what interrupted writes left,
and on `--overwrite` removes only the files cnnkit itself writes.
"""

from __future__ import annotations

import fcntl
import json
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from torch import nn

from cnnkit.core.errors import CnnkitError
from cnnkit.core.outputs import atomic_write, leftover_temp_files
from cnnkit.data.preprocess import Preprocessing
from cnnkit.models.registry import resolved_options
from cnnkit.store.checkpoint import check_finite, load_checkpoint, read_metadata, repair_json_copy, save_checkpoint
from cnnkit.store.metadata import read_metrics
from cnnkit.train.config import TrainConfig
from cnnkit.train.data import PreparedData
from cnnkit.train.optimizers import Optimizer
from cnnkit.train.run_files import RUN_FILES, foreign

if TYPE_CHECKING:  # the state's module imports this one
    from cnnkit.train.epoch import TrainState

LOCK_FILE = ".cnnkit.lock"
TENSORBOARD_EVENTS = "events.out.tfevents.*"  # the only files cnnkit writes under RUN/tensorboard
NETWORK_SETTINGS = ("model", "model_options", "image_size")  # a last checkpoint of other ones is another run's


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

    @property
    def compiled(self) -> bool:
        """Whether the saved optimiser state is the compiled step's (one flat tensor) or the eager optimiser's."""
        return self.tensors is not None and "optim.flat.exp_avg" in self.tensors


def optimizer_tensors(optimizer: Optimizer, seed: int | None = None) -> tuple[dict[str, torch.Tensor], list[dict]]:
    """Flatten an optimiser's state into named tensors plus JSON-ready param groups; with `seed`, that seed's slice
    of state stacked over several seeds (the single-run layout, so its run resumes alone)."""
    state = optimizer.state_dict()
    tensors = {}
    for index, slots in state["state"].items():
        for name, value in slots.items():
            if isinstance(value, torch.Tensor):
                own = value[seed] if seed is not None and value.dim() else value
                tensors[f"optim.{index}.{name}"] = own.detach().cpu().contiguous()
    return tensors, state["param_groups"]


def restore_optimizer(optimizer: Optimizer, tensors: dict[str, torch.Tensor], groups: list[dict]) -> None:
    """Inverse of optimizer_tensors."""
    state: dict[int, dict] = {}
    for key, value in tensors.items():
        if key.startswith("optim.") and not key.startswith("optim.flat."):
            _, index, name = key.split(".", 2)
            state.setdefault(int(index), {})[name] = value
    optimizer.load_state_dict({"state": state, "param_groups": groups})


class RunDirectory:
    """Check, open (lock), describe and write one run directory; a no-op writer off the main process or without a
    path. `say` receives the notes worth a log line (repairs, cleanups)."""

    def __init__(self, path: Path | None, is_main: bool = True, say: Callable[[str], None] = print) -> None:
        self.path = path
        self.writes = path is not None and is_main
        self.say = say
        self.description: dict = {}
        self.preprocessing: Preprocessing | None = None
        self._lock: int | None = None
        # A resumed run's writes wait for its first kept epoch (or final test), so a resume that fails or is
        # refused before it leaves the run as it was: None, or the metrics records its last checkpoint covers.
        self._resumed_records: list[dict] | None = None
        self._resumed_config: TrainConfig | None = None  # a new epoch count, for config.json
        self.kept_epoch: int | None = None  # the epoch of the `last` checkpoint in the folder (saved or resumed)

    def check_free(self, overwrite: bool) -> None:
        """Refuse, before anything is created, an existing run unless told to overwrite it, files that only share a
        run file's name (the user's: never replaced, not even with --overwrite), and a path that is not a folder."""
        if not self.writes:
            return
        self.refuse_foreign()
        existing = self.run_files()
        if existing and not overwrite:
            raise CnnkitError(f"{self.path} already holds a run ({', '.join(existing)}); pass --resume {self.path} "
                              "to continue it or --overwrite to replace it")

    def refuse_foreign(self) -> None:
        """Refuse a folder holding files named as a run's that are not a cnnkit run's (see foreign_files)."""
        foreign = self.foreign_files()
        if foreign:
            raise CnnkitError(f"{self.path} holds {', '.join(foreign)} that {'is' if len(foreign) == 1 else 'are'} "
                              "not a cnnkit run's; choose another --out")

    def foreign_files(self) -> list[str]:
        """The files named as a run's that are not a cnnkit run's own (see `run_files.foreign`)."""
        return foreign(self.path, self.run_files())

    def run_files(self) -> list[str]:
        """The run files already in the folder; a path that exists but is no folder is refused."""
        if self.path.exists() and not self.path.is_dir():
            raise CnnkitError(f"{self.path}: exists and is not a folder; --out needs a folder for the run")
        return [name for name in RUN_FILES if (self.path / name).exists()]

    def lock(self) -> None:
        """Create the folder and take its lock (`open` does too; runs opened together lock all before any is
        emptied, so a run another process holds stops them all before anything is removed)."""
        if not self.writes or self._lock is not None:
            return
        try:
            self.path.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise CnnkitError(f"{self.path}: cannot create the run folder ({error.strerror or error})") from None
        self._take_lock()

    def open(self, overwrite: bool = False, resume: bool = False) -> None:
        """Create and lock the folder, remove temp files of interrupted writes, and (overwrite) the old run."""
        if not self.writes:
            return
        self.lock()
        for temp in leftover_temp_files(self.path):
            temp.unlink()
            self.say(f"removed {temp.name}, left by an interrupted write")
        if not resume:
            self.check_free(overwrite)
            self._remove_old_run()

    def close(self) -> None:
        """Release the lock."""
        if self._lock is not None:
            os.close(self._lock)
            self._lock = None

    def _take_lock(self) -> None:
        path = self.path / LOCK_FILE
        try:
            handle = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
        except OSError as error:
            raise CnnkitError(f"{self.path}: cannot write in the run folder ({error.strerror or error})") from None
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            owner = os.read(handle, 64).decode(errors="replace").strip() or "unknown"
            os.close(handle)
            raise CnnkitError(_locked_message(path, owner)) from None
        os.ftruncate(handle, 0)
        os.write(handle, f"{os.getpid()}\n".encode())
        self._lock = handle

    def _remove_old_run(self) -> None:
        """Only what cnnkit wrote: the run files and TensorBoard's event files (the user's files stay)."""
        for name in RUN_FILES:
            (self.path / name).unlink(missing_ok=True)
        board = self.path / "tensorboard"
        if board.is_dir():
            for events in board.glob(TENSORBOARD_EVENTS):
                events.unlink()
            if not any(board.iterdir()):
                board.rmdir()

    def describe(self, config: TrainConfig, spec: dict, data: PreparedData, processes: int = 1) -> None:
        """What every checkpoint of this run shares: config, model spec, classes, data description, preprocessing,
        and the processes that train it with the images of one step over all of them (a resume must keep both)."""
        self.description = {"model": spec, "class_names": data.dataset.class_names, "config": config.to_dict(),
                            "data": data.description(config.seed), "processes": processes,
                            "global_batch": config.batch_size * processes}
        self.preprocessing = data.preprocessing

    def write_config(self, config: TrainConfig) -> None:
        """config.json: what `--resume` reads back. A resumed run's (a new epoch count) is written with its first
        kept epoch, not before."""
        if not self.writes:
            return
        if self._resumed_records is not None:
            self._resumed_config = config
            return
        atomic_write(self.path / "config.json", json.dumps(config.to_dict(), indent=1).encode())

    def append_metrics(self, record: dict) -> None:
        """One line of metrics.jsonl (written before the epoch's checkpoint, so a resume never lacks a line)."""
        if self.writes and not self._commit_resume(record):
            with open(self.path / "metrics.jsonl", "a") as file:
                file.write(json.dumps(record) + "\n")

    def _commit_resume(self, record: dict | None = None) -> bool:
        """A resumed run's first write, when it keeps an epoch (or its final test): the JSON copies it found stale
        repaired, config.json with the new epoch count, then metrics.jsonl trimmed to the last checkpoint plus
        `record`. Each write is atomic and each state between them resumes (config.json first: a `last` past
        its old epoch count would be refused). True when `record` was written."""
        records, self._resumed_records = self._resumed_records, None
        if records is None:
            return False
        for name in ("last", "best"):
            if (self.path / f"{name}.safetensors").exists() and repair_json_copy(self.path / name):
                self.say(f"repaired {name}.json from {name}.safetensors (the previous run stopped between the two "
                         "writes)")
        if self._resumed_config is not None:
            self.write_config(self._resumed_config)
        metrics = self.path / "metrics.jsonl"
        kept = records + ([record] if record is not None else [])
        if kept or metrics.exists():
            atomic_write(metrics, "".join(json.dumps(r) + "\n" for r in kept).encode())
        return record is not None

    def save(self, name: str, state: TrainState, record: dict | None = None) -> None:
        """Write checkpoint `name` of `state` with the metrics `record` (default: its latest epoch's) and that
        record's epoch and step; 'last' also keeps the optimiser state, to resume."""
        record = state.history[-1] if record is None else record
        if name == "last" and self.path is not None:  # every process: each may have to name it when a run stops
            self.kept_epoch = record.get("epoch", state.epoch)
        if not self.writes:
            return
        self._commit_resume()
        meta = {**self.description, "metrics": dict(record), "epoch": record.get("epoch", state.epoch),
                "global_step": record.get("step", state.step), "best": state.best}
        extra = {"rng.torch": torch.get_rng_state()}
        if name == "last":
            tensors, groups = state.optimizer_state()
            extra.update(tensors)
            if groups is not None:
                meta["optimizer_param_groups"] = groups
        save_checkpoint(self.path / name, state.model, meta, self.preprocessing, extra)

    def last_good(self, plural: str = "") -> str:
        """'; the last good checkpoint is RUN/last (epoch N)' for a message that stops a run, or '' when this run
        has none (no folder, or nothing kept yet). `plural`: the seeds' folder, for all their OUT/seed-K/last."""
        if self.path is None or self.kept_epoch is None:
            return ""
        if plural:
            return f"; the last good checkpoints are {plural}/seed-K/last (epoch {self.kept_epoch})"
        return f"; the last good checkpoint is {self.path / 'last'} (epoch {self.kept_epoch})"

    def check_resumable(self, config: TrainConfig, processes: int = 1) -> None:
        """Refuse, before anything is loaded or written, a run with no last checkpoint, one whose last checkpoint
        is not its own (another network, imported weights), one trained by another number of processes, a
        finished one that the config's epochs do not extend, or one they would end before the epochs it has
        trained."""
        epochs = config.epochs
        if self.path is None or not any((self.path / f"last.{s}").exists() for s in ("safetensors", "json")):
            raise CnnkitError(f"{self.path}: nothing to resume (no last checkpoint)")
        if not (self.path / "last.safetensors").exists():  # a JSON copy alone holds no weights to resume
            raise CnnkitError(f"{self.path}: last.json has no last.safetensors beside it (the weights and optimiser "
                              "state); nothing to resume")
        meta = read_metadata(self.path / "last")
        _check_own_checkpoint(meta, config, self.path / "last.safetensors")
        _check_processes(meta, processes, self.path)
        done = meta["epoch"]
        if done > epochs:
            raise CnnkitError(f"{self.path} has trained {done} epochs; --epochs {epochs} would end it before that: "
                              f"pass more than {done} to train it further")
        metrics = self.path / "metrics.jsonl"
        finished = metrics.exists() and any(
            "final" in r for r in read_metrics(metrics)[0])
        if done >= epochs and finished:
            raise CnnkitError(f"{self.path} has finished its {done} epochs; pass --epochs N (more than {done}) to "
                              "train it further")

    def restore(self, model: nn.Module, eval_every: int = 1) -> Restored:
        """Load the last checkpoint into `model` and the RNG, and the history of the epochs it covers (a torn last
        line of metrics.jsonl dropped). Nothing is written until the run keeps an epoch (`_commit_resume`): JSON
        copies an interrupted write left stale are read past, then repaired. Call check_resumable first: it
        refuses, before the lock and the data, what cannot be resumed."""
        tensors, meta = load_checkpoint(self.path / "last", check_copy=False)
        check_finite(tensors, self.path / "last")  # weights and optimiser state: NaN would train on as NaN
        records = self._records()
        try:
            model.load_state_dict(_model_weights(tensors))
            torch.set_rng_state(tensors["rng.torch"])
        except (RuntimeError, KeyError, TypeError) as error:
            reason = " ".join(str(error).split())[:300]  # torch's first line alone names no parameter
            raise CnnkitError(f"{self.path / 'last'}: cannot resume from it ({reason})") from None
        history = self._history(records, meta["epoch"])
        recorded = {r["epoch"] for r in history}
        missing = [e for e in range(1, meta["epoch"] + 1) if e % eval_every == 0 and e not in recorded]
        if missing:
            self.say(f"metrics.jsonl lacks the records of {len(missing)} evaluated epoch(s) ({_span(missing)}); "
                     "the run goes on, and its history will miss them")
        best, best_state = meta.get("best"), None
        if best is not None and any((self.path / f"best.{s}").exists() for s in ("safetensors", "json")):
            best_tensors, best_meta = load_checkpoint(self.path / "best", check_copy=False)
            if best_meta["epoch"] == best["epoch"]:  # a best saved after `last` (then cut short) is not this run's
                best_state = _model_weights(best_tensors)
                check_finite(best_tensors, self.path / "best")
        if self.writes:
            self._resumed_records = list(history)  # a copy: the run appends its new epochs to `history`
        self.kept_epoch = meta["epoch"]
        self.say(f"resuming from epoch {meta['epoch']} (step {meta['global_step']})")
        return Restored(meta["epoch"] + 1, meta["global_step"], best, history, tensors,
                        meta.get("optimizer_param_groups"), best_state)

    def _records(self) -> list[dict]:
        """metrics.jsonl's records (none when it is missing), saying when a torn last line was dropped."""
        path = self.path / "metrics.jsonl"
        if not path.exists():
            return []
        records, torn = read_metrics(path)
        if torn:
            self.say(f"{path.name}: dropped a torn last line (the previous run stopped while writing it)")
        if torn and self.writes:  # on stderr too: a dropped record must not pass unseen among the epoch lines
            print(f"cnnkit: {path}: dropped its torn last record ({torn}); the previous run stopped while writing "
                  "it", file=sys.stderr)
        return records

    @staticmethod
    def _history(records: list[dict], last_epoch: int) -> list[dict]:
        """The epoch records the checkpoint covers (metrics.jsonl is trimmed to them with the first kept epoch)."""
        return [r for r in records if r.get("epoch") is not None and r["epoch"] <= last_epoch]


def _locked_message(lock: Path, owner: str) -> str:
    """Why a run folder cannot be opened: who holds its lock, and what to do."""
    if not _running(owner):  # the pid that wrote the file is gone, but something it started holds the lock
        return (f"{lock.parent} is locked by a process that cnnkit pid {owner} started (pid {owner} itself has "
                f"exited); `fuser -v {lock}` names it: stop it, or train into another folder")
    return (f"{lock.parent} is being written by another cnnkit process (pid {owner}, in {lock.name}); wait for it "
            "to finish or stop it, or train into another folder")


def _running(pid: str) -> bool:
    """Whether a process with this pid exists (True when unknown: the usual case is a live writer)."""
    if not pid.isdigit() or int(pid) == 0:  # signal 0 sends nothing, but only a single pid is asked about
        return True
    try:
        os.kill(int(pid), 0)
    except (OverflowError, PermissionError):
        return True
    except ProcessLookupError:
        return False
    return True


def _check_own_checkpoint(meta: dict, config: TrainConfig, path: Path) -> None:
    """The last checkpoint must be a training run's, of the network config.json trains (model, options, input
    size): one copied in from another run, or imported weights, would otherwise fail only once loaded, after the
    log and the lock. Other settings may have been edited on purpose (a data folder that moved)."""
    if meta.get("config") is None:
        raise CnnkitError(f"{path} holds weights without a training run's settings (imported or exported weights); "
                          "--resume continues a run from its own last checkpoint: start from these with --init-from")
    saved = TrainConfig.from_dict(meta["config"], str(path))
    differing = [name for name in NETWORK_SETTINGS if _network_setting(saved, name) != _network_setting(config, name)]
    if differing:
        shown = ", ".join(f"{name}={getattr(saved, name)!r} (config.json: {getattr(config, name)!r})"
                          for name in differing[:3])
        raise CnnkitError(f"{path} is another run's checkpoint, trained with {shown}; nothing to resume from it")


def _check_processes(meta: dict, processes: int, run: Path) -> None:
    """A run resumes with the number of processes it was trained with: another number changes the steps per
    epoch (each process takes its share of every epoch) and so bends a one-cycle or cosine schedule planned over
    them. (Runs written before cnnkit recorded the number are not checked.)"""
    trained = meta.get("processes")
    if trained is None or trained == processes:
        return
    how = "in one process (without torchrun)" if trained == 1 else f"under torchrun with {trained} processes"
    batch = f" (global batch {meta['global_batch']})" if meta.get("global_batch") else ""
    raise CnnkitError(f"{run} was trained with {_count(trained, 'process')}{batch}; resuming it with "
                      f"{_count(processes, 'process')} would change its steps per epoch and its learning-rate "
                      f"schedule: resume it {how}")


def _count(number: int, noun: str) -> str:
    return f"{number} {noun}" + ("" if number == 1 else "es" if noun.endswith("s") else "s")


def _network_setting(config: TrainConfig, name: str) -> object:
    """A setting that decides the network; options with the builder's defaults (earlier versions stored them bare)."""
    return resolved_options(config.model, config.model_options) if name == "model_options" else getattr(config, name)


def _model_weights(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {key[len("model."):]: value for key, value in tensors.items() if key.startswith("model.")}


def _span(epochs: list[int]) -> str:
    """'epoch 3' or 'epochs 1-4' or 'epochs 1, 3, ...' for a note."""
    if len(epochs) == 1:
        return f"epoch {epochs[0]}"
    if epochs == list(range(epochs[0], epochs[-1] + 1)):
        return f"epochs {epochs[0]}-{epochs[-1]}"
    return "epochs " + ", ".join(map(str, epochs[:5])) + (", ..." if len(epochs) > 5 else "")
