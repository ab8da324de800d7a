"""Watch it learn: `cnnkit explore --train` trains the run's model in a background thread while the page watches.

The run is trained by chaining `cnnkit.train.fit` up to each evaluated epoch (`stop_after_epochs`, then
`resume=True`), so every pause point is a saved, resumable run, file for file the one an uninterrupted
`cnnkit train` writes. After each chained call the run's `last` checkpoint goes into the explorer's model (under
its lock), so every view shows the current network; the epoch records come from the run's own metrics.jsonl.
"""

from __future__ import annotations

import io
import math
import os
import tempfile
import threading
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import torch
from pydantic import BaseModel, ConfigDict
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from torch import nn

from cnnkit.analysis.inference import Trained, load_trained, names_registry_model
from cnnkit.core.errors import CnnkitError
from cnnkit.explore.respond import packed, reply, whole_number
from cnnkit.explore.session import Explorer
from cnnkit.store.metadata import read_metrics
from cnnkit.train.config import TrainConfig

SNAPSHOT_BYTES = 64 * 1024**2  # weights kept in memory for comparing epochs, beyond the first, best and latest
LOG_LINES = 30  # the trainer's last log lines shown on the page
MAX_EPOCH = 10**9  # the largest `since` the status accepts


def state_bytes(state: dict[str, torch.Tensor]) -> int:
    """The memory one state dict's tensors hold."""
    return sum(t.numel() * t.element_size() for t in state.values())


def _finite(value: object) -> object:
    """A record's value as JSON can carry it: NaN and infinities become None."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    return value


def read_records(run: Path) -> tuple[list[dict], dict | None]:
    """The epoch records of the run's metrics.jsonl and its final test record (None before the test), read as the
    trainer reads them (size capped, a torn last line dropped)."""
    path = run / "metrics.jsonl"
    if not path.exists():
        return [], None
    records = read_metrics(path)[0]
    finals = [r["final"] for r in records if "final" in r]
    return [r for r in records if "epoch" in r], finals[-1] if finals else None


def first_conv(model: nn.Module) -> tuple[str, nn.Conv2d] | None:
    """The model's first 2-D convolution and its name; None for a network without one."""
    return next(((name, m) for name, m in model.named_modules() if isinstance(m, nn.Conv2d)), None)


class Training:
    """One run trained from the page: idle -> running <-> paused -> done, or failed with a one-line error."""

    def __init__(self, explorer: Explorer, config: TrainConfig, out: Path, resume: bool, overwrite: bool) -> None:
        self.explorer, self.config, self.out = explorer, config, out
        self.resume, self.overwrite = resume, overwrite  # resume: the first call continues a run already there
        self.state, self.error, self.pausing = "idle", None, False
        self.records, self.final = read_records(out) if resume else ([], None)
        self.epoch = int(explorer.trained.meta.get("epoch", 0)) if resume else 0  # the last checkpoint's epoch
        self.model_version = 0  # bumped when the trained network's units differ from those the page was built on
        self.log = io.StringIO()
        self._lock = threading.Lock()  # guards the fields above; never held while training or computing
        self._thread: threading.Thread | None = None
        self._snapshots: dict[int, dict[str, torch.Tensor]] = {}
        self._best: int | None = None
        if resume:
            self._remember(self.epoch, explorer.trained.model, explorer.trained.meta.get("best"))  # `last`'s

    # --- what the page asks ------------------------------------------------------------------------------------

    def start(self) -> dict:
        """Start (idle) or resume (paused) training; a running session goes on (a pause asked is withdrawn)."""
        with self._lock:
            if self.state in ("done", "failed"):
                raise HTTPException(409, f"training has {'finished' if self.state == 'done' else 'failed'}; "
                                         f"the run is in {self.out}")
            self.pausing = False
            if self.state != "running":
                self.state = "running"
                self._thread = threading.Thread(target=self._train, name="cnnkit-explore-train", daemon=True)
                self._thread.start()
        return self.status()

    def pause(self) -> dict:
        """Stop after the epoch being trained (its checkpoint saved, the run resumable)."""
        with self._lock:
            if self.state != "running":
                raise HTTPException(409, f"nothing to pause: training is {self.state}")
            self.pausing = True
        return self.status()

    def stop_soon(self) -> int | None:
        """Ask a running session to stop once the epoch being trained is saved (the server is shutting down): the
        epoch it will stop after, or None when nothing is training."""
        with self._lock:
            if self.state != "running":
                return None
            self.pausing = True
            return self.epoch + self._segment()

    def wait(self, timeout: float | None = None) -> None:
        """Wait for the training thread to stop (paused, done or failed)."""
        thread = self._thread
        if thread is not None:
            thread.join(timeout)

    def status(self, since: int = 0) -> dict:
        """State, error, epochs, run directory and the epoch records after epoch `since`."""
        with self._lock:
            return {"state": self.state, "error": self.error, "pausing": self.pausing, "epoch": self.epoch,
                    "epochs": self.config.epochs, "run_dir": str(self.out), "model_version": self.model_version,
                    "label_smoothing": self.config.label_smoothing, "loss": self.config.loss,
                    "records": [_finite(r) for r in self.records if r["epoch"] > since],
                    "final": _finite(self.final), "best_epoch": self._best,
                    "log": self.log.getvalue().splitlines()[-LOG_LINES:]}

    def filters(self) -> dict:
        """The first convolution's weights (O, I, kh, kw) as the page shows them, with their range."""
        with self.explorer.lock:
            found = first_conv(self.explorer.trained.model)
            if found is None:
                raise CnnkitError(f"{self.config.model} has no 2-D convolution, so no first-layer filters")
            name, conv = found
            weight = conv.weight.detach().clone()
        with self._lock:
            epoch = self.epoch
        return {"layer": name, "epoch": epoch, "low": float(weight.min()), "high": float(weight.max()),
                **packed(weight)}

    def snapshots(self) -> dict[str, dict[str, torch.Tensor]]:
        """Copies of the weights seen in this session, labelled 'epoch K' (the first, the best, the latest and as
        many between as fit in SNAPSHOT_BYTES), plus 'best' and 'latest' naming the same tensors."""
        with self._lock:
            labelled = {f"epoch {k}": v for k, v in sorted(self._snapshots.items())}
            if self._best in self._snapshots:
                labelled["best"] = self._snapshots[self._best]
            if self._snapshots:
                labelled["latest"] = self._snapshots[max(self._snapshots)]
            return labelled

    # --- the training thread -----------------------------------------------------------------------------------

    def _train(self) -> None:
        """Chain fit up to each evaluated epoch until the run ends or a pause is asked."""
        from cnnkit.train.loop import fit  # here: the trainer loads only when a run is trained

        try:
            while True:
                result = fit(self.config, self.out, overwrite=self.overwrite and not self.resume, resume=self.resume,
                             progress=False, stop_after_epochs=self._segment(), stream=self.log)
                self.resume = True  # the run is on disk now: every later call continues it
                finished = bool(result.history) and "final" in result.history[-1]
                self._publish()
                with self._lock:
                    if finished or self.pausing:
                        self.state, self.pausing = ("done" if finished else "paused"), False
                        return
        except CnnkitError as error:
            self._fail(str(error))
        except Exception as error:  # the page shows it; the server goes on serving the last good weights
            self._fail(f"internal error: {type(error).__name__}: {error}")

    def _segment(self) -> int:
        """Epochs to the next evaluated (so checkpointed) epoch: a cut anywhere else would be trained again."""
        every, done = self.config.eval_every, self.epoch
        return min((done // every + 1) * every, self.config.epochs) - done

    def _fail(self, message: str) -> None:
        with self._lock:
            self.state, self.pausing = "failed", False
            self.error = " ".join(message.split())

    def _publish(self) -> None:
        """The run's latest checkpoint into the explorer's model, its records and a snapshot of its weights."""
        latest = load_trained(self.out / "last")
        records, final = read_records(self.out)
        units = self.explorer.units
        adopt(self.explorer, latest)
        with self._lock:
            self.records, self.final = records, final
            self.epoch = int(latest.meta["epoch"])
            if self.explorer.units is not units:  # another network than the page drew: it reloads
                self.model_version += 1
        self._remember(self.epoch, latest.model, latest.meta.get("best"))

    def _remember(self, epoch: int, model: nn.Module, best: dict | None) -> None:
        """Keep a copy of `epoch`'s weights (and the best epoch's, read from the run when it is not kept)."""
        with self._lock:
            self._snapshots[epoch] = {k: v.detach().clone() for k, v in model.state_dict().items()}
            self._best = best["epoch"] if best else self._best
            wanted = self._best is not None and self._best not in self._snapshots
        if wanted and (self.out / "best.safetensors").exists():
            weights = load_trained(self.out / "best").model.state_dict()
            with self._lock:
                self._snapshots[self._best] = {k: v.detach().clone() for k, v in weights.items()}
        with self._lock:
            thin(self._snapshots, {min(self._snapshots), max(self._snapshots), self._best}, SNAPSHOT_BYTES)


def thin(snapshots: dict[int, dict[str, torch.Tensor]], keep: set, budget: int) -> None:
    """Drop epochs outside `keep` while the snapshots hold more than `budget` bytes, always the one closest to its
    neighbours (so the kept epochs stay spread over the run)."""
    while sum(map(state_bytes, snapshots.values())) > budget:
        epochs = sorted(snapshots)
        middle = [(epochs[i + 1] - epochs[i - 1], e) for i, e in enumerate(epochs)
                  if 0 < i < len(epochs) - 1 and e not in keep]
        if not middle:
            return
        del snapshots[min(middle)[1]]


def adopt(explorer: Explorer, trained: Trained) -> None:
    """Make `trained` the explorer's network under its lock: the weights copied into the model the views use when
    the architecture is the same (the usual case), else the network and its units replaced."""
    with explorer.lock:
        current = explorer.trained
        old, new = current.model.state_dict(), trained.model.state_dict()
        same = old.keys() == new.keys() and all(old[k].shape == new[k].shape for k in old) \
            and current.input_shape == trained.input_shape
        if same:
            current.model.load_state_dict(new)
            current.model.eval()
            for name in ("preprocessing", "meta", "class_names", "pixel_max"):
                setattr(current, name, getattr(trained, name))
            if not current.trained:
                current.trained, explorer._heldout = True, None  # the held-out strip opens with the run
            return
        explorer.use(trained)


# --- opening a run to train, and the page's endpoints ------------------------------------------------------------

def check_writable(out: Path, what: str) -> None:
    """Refuse a run folder that cannot be created or written: a probe folder is made where the first missing
    folder would go (or inside `out` when it exists) and removed at once, so nothing is left behind."""
    existing = out
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise CnnkitError(f"{what}: {existing} is a file, not a folder; --out needs a folder for the run")
    try:
        probe = tempfile.mkdtemp(prefix=".cnnkit-probe-", dir=existing)
    except OSError as error:
        where = "write in" if existing == out else f"create it in {existing}"
        raise CnnkitError(f"{what}: cannot {where} ({error.strerror or error}); pass a folder you can "
                          "write") from None
    os.rmdir(probe)


def open_training(source: str, epochs: int | None = None, out: str | Path | None = None, overwrite: bool = False
                  ) -> Explorer:
    """An explorer whose run trains from the page: a new run of a registered model (`cnnkit train`'s recipe and
    default --out), or a run directory continued as `cnnkit train --resume RUN [--epochs N]` would. Everything is
    checked here, before the server starts (that the run folder can be written too); nothing is written until the
    page presses Start."""
    from cnnkit.train.run_dir import RunDirectory

    if out is not None and not str(out).strip():
        raise CnnkitError(f"--out {str(out)!r} names no folder; pass the run directory to write, e.g. --out "
                          "runs/NAME")
    out = None if out is None else Path(out)
    path = Path(source)
    if names_registry_model(source):
        config = TrainConfig.for_model(source, **({} if epochs is None else {"epochs": epochs}))
        if config.compile == "auto":  # each chained call would compile the step again; eager throughout instead
            config = config.replace(compile="off")
        config.check_device()
        out = out or Path("runs") / f"{config.model}-{time.strftime('%Y%m%d-%H%M%S')}"
        try:
            RunDirectory(out).check_free(overwrite)
        except CnnkitError as error:  # continuing that run from the page is `explore RUN --train`
            raise CnnkitError(str(error).replace(f"pass --resume {out} to continue it",
                                                 f"pass it as SOURCE (cnnkit explore {out} --train) to continue it"))\
                from None
        check_writable(out, f"--out {out}")
        explorer, resume = Explorer.open(source), False
    elif path.is_dir():
        if out is not None and out.resolve() != path.resolve() or overwrite:
            raise CnnkitError(f"--train continues the run in {source} where it is (as `cnnkit train --resume` does); "
                              f"--out and --overwrite start a new run: pass a registered model name instead")
        config = TrainConfig.from_run_dir(path, epochs)
        config.check_device()
        RunDirectory(path).check_resumable(config)
        check_writable(path, f"{path} (the run --train continues)")
        explorer, out, resume = Explorer(load_trained(path / "last"), path.name), path, True  # its latest weights
    elif path.exists() or path.with_suffix(".safetensors").exists():
        raise CnnkitError(f"{source} is a checkpoint file; --train needs a run directory (cnnkit train's --out) to "
                          "continue, or a registered model name to start a new run")
    else:
        raise CnnkitError(f"{source!r} is neither a registered model (see `cnnkit models`) nor a run directory")
    explorer.training = Training(explorer, config, out, resume, overwrite)
    return explorer


class _Empty(BaseModel):
    """The body of start and pause: nothing (an empty JSON object)."""

    model_config = ConfigDict(extra="forbid")


def training_routes(explorer: Explorer, parse: Callable[[Request, type], Awaitable[BaseModel]]) -> list[Route]:
    """POST /api/train/start and /api/train/pause, GET /api/train/status?since=K and /api/train/filters; 404 when
    the explorer was opened without --train. `parse` is the app's capped, validated body reader."""

    def session() -> Training:
        if explorer.training is None:
            raise HTTPException(404, "training is off: open the explorer with `cnnkit explore SOURCE --train`")
        return explorer.training

    async def start(request: Request) -> Response:
        await parse(request, _Empty)
        return reply(session().start())

    async def pause(request: Request) -> Response:
        await parse(request, _Empty)
        return reply(session().pause())

    async def status(request: Request) -> Response:
        training = session()
        return reply(training.status(whole_number(request.query_params.get("since", "0"), "since (an epoch number)",
                                                  MAX_EPOCH)))

    async def filters(_request: Request) -> Response:
        return reply(await run_in_threadpool(session().filters),
                     not_finite="the first convolution's weights are not finite (inf/NaN): the run diverged")

    return [Route("/api/train/start", start, methods=["POST"]), Route("/api/train/pause", pause, methods=["POST"]),
            Route("/api/train/status", status), Route("/api/train/filters", filters)]
