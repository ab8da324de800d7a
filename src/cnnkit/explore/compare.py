"""Two checkpoints of one network side by side: a run's best and last, checkpoints named with `--compare`, and the
snapshots of a live training run, each with its top classes, first-conv filters and a layer's maps for one image.

Checkpoint files are listed from their headers and loaded only when compared (a few kept); one of another network
(model, options, classes or input shape) is refused. The image is the explorer's, rescaled to each checkpoint's
training scale, and each checkpoint's own preprocessing feeds it.
"""

from __future__ import annotations

import contextlib
import copy
import threading
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch
from pydantic import Field
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from cnnkit.analysis.inference import Trained, is_checkpoint_path, load_trained, names_registry_model
from cnnkit.analysis.trace import record
from cnnkit.core.errors import CnnkitError
from cnnkit.explore.app import ImageInput, Strict, parse
from cnnkit.explore.respond import packed, refuse_non_finite, reply
from cnnkit.explore.session import Explorer, map_page
from cnnkit.models import get_model
from cnnkit.store.checkpoint import read_metadata, resolve_checkpoint

CACHE_SIZE = 4  # checkpoints kept loaded: the two compared and the two compared before
COMPARE_PAGE = 16  # maps per side and request
MAX_FILTERS = 256  # first-conv filters sent per side
TOP_K = 5


@dataclass
class Entry:
    """One checkpoint the page can pick: a file, or a live-training snapshot (no file)."""

    name: str  # what the page sends back; unique
    label: str
    epoch: int | None
    val_accuracy: float | None
    origin: str  # 'run' (the explored source), 'compare' (--compare) or 'training'
    stem: Path | None = None
    identity: tuple | None = None  # the file's (inode, mtime_ns, size) its label was read from

    def listed(self) -> dict:
        """What GET /api/checkpoints says of it."""
        return {"name": self.name, "label": self.label, "epoch": self.epoch, "val_accuracy": self.val_accuracy,
                "origin": self.origin}


def spec_text(spec: dict) -> str:
    """'digits_cnn (width=24, dropout=0.2), 1x8x8 -> 10 classes' for an error message."""
    options = ", ".join(f"{k}={v}" for k, v in sorted(spec.get("options", {}).items()))
    size = "x".join(map(str, [spec["in_channels"], *spec["input_size"]]))
    return f"{spec['name']}{f' ({options})' if options else ''}, {size} -> {spec['num_classes']} classes"


def _label(name: str, meta: dict) -> tuple[str, int | None, float | None]:
    """(label, epoch, validation accuracy) of a checkpoint from its metadata."""
    epoch = None if "imported_from" in meta or not meta.get("config") else meta.get("epoch")
    accuracy = meta.get("metrics", {}).get("val_accuracy")
    accuracy = float(accuracy) if isinstance(accuracy, int | float) else None
    parts = ([f"epoch {epoch}"] if epoch is not None else []) + \
        ([f"val {100 * accuracy:.1f}%"] if accuracy is not None else [])
    return (f"{name} ({', '.join(parts)})" if parts else name), epoch, accuracy


def identity(stem: Path) -> tuple | None:
    """What changes when a checkpoint file is rewritten (an atomic rename: a new inode): (inode, mtime_ns, size) of
    its tensors file, else of its JSON; None when neither is there."""
    for path in (stem.with_suffix(".safetensors"), stem.with_suffix(".json")):
        try:
            stat = path.stat()
        except OSError:
            continue
        return stat.st_ino, stat.st_mtime_ns, stat.st_size
    return None


def _same_epoch(entries: list[Entry], name: str, meta: dict) -> bool:
    """Whether the entry `name` is listed with the epoch `meta` records."""
    return any(e.name == name and e.epoch is not None and e.epoch == _label(name, meta)[1] for e in entries)


def _stems(path: str) -> list[tuple[str, Path]]:
    """(suffix of the name, stem) of a run directory's best and last, or of one checkpoint file."""
    if Path(path).is_dir():
        found = [(n, Path(path) / n) for n in ("best", "last")
                 if any((Path(path) / f"{n}.{s}").exists() for s in ("safetensors", "json"))]
        return found or [("", resolve_checkpoint(path))]  # resolve_checkpoint explains what the folder lacks
    return [("", resolve_checkpoint(path))]


class Checkpoints:
    """The checkpoints of one explored network, loaded lazily, and the comparison of two of them."""

    def __init__(self, explorer: Explorer, source: str | None = None, entries: list[Entry] | None = None) -> None:
        self.explorer, self.source = explorer, source
        self.files = entries or []
        self.lock = threading.Lock()  # one comparison at a time; `_files_lock` guards the files' labels
        self._files_lock = threading.Lock()
        self._seen: set[Path] = set()
        self.cache: OrderedDict[tuple, Trained] = OrderedDict()  # keyed by (name, file identity)
        self.first_conv = next((u.id for u in explorer.units if u.kind == "conv"), None)

    @classmethod
    def attach(cls, explorer: Explorer, source: str, compare: list[str] = ()) -> Checkpoints:
        """The source's best and last (or the checkpoint itself) and each --compare checkpoint or run directory,
        refused unless they are the explored network; stored as `explorer.checkpoints`."""
        found = cls(explorer, source)
        seen = found._seen
        if not names_registry_model(source) and is_checkpoint_path(source):  # a stem (runA/best) too
            for suffix, stem in _stems(source):
                found._add("run", suffix or stem.name, stem, read_metadata(stem), seen)
        for path in compare:
            try:
                for suffix, stem in _stems(path):
                    meta = read_metadata(stem)
                    found.check_spec(meta["model"], f"--compare {path}")
                    if suffix == "last" and _same_epoch(found.files, str(stem.parent / "best"), meta):
                        continue  # another run's last that was its best: the same weights twice
                    found._add("compare", str(stem), stem, meta, seen)
            except CnnkitError as error:
                message = str(error)
                raise CnnkitError(message if message.startswith("--compare") else f"--compare {message}") from None
        explorer.checkpoints = found
        return found

    def _add(self, origin: str, name: str, stem: Path, meta: dict, seen: set[Path]) -> None:
        """List a checkpoint file once (by its resolved path), under a name no other entry has."""
        if stem.resolve() in seen:
            return
        seen.add(stem.resolve())
        while name in {e.name for e in self.files}:  # a relative --compare path may repeat a name
            name += "'"
        label, epoch, accuracy = _label(name, meta)
        self.files.append(Entry(name, label, epoch, accuracy, origin, stem, identity(stem)))

    def _refreshed(self) -> list[Entry]:
        """The file entries, each relabelled from its file when the file changed since it was read (a live run
        rewrites best and last), and a run's best or last that appeared since listed."""
        with self._files_lock:
            if self.source is not None and Path(self.source).is_dir():
                for name in ("best", "last"):
                    stem = Path(self.source) / name
                    if stem.resolve() not in self._seen and identity(stem) is not None:
                        try:
                            self._add("run", name, stem, read_metadata(stem), self._seen)
                        except CnnkitError:  # half written: listed once it reads
                            self._seen.discard(stem.resolve())
            for entry in self.files:
                now = identity(entry.stem)
                if now != entry.identity and now is not None:
                    with contextlib.suppress(CnnkitError):  # unreadable now: loading it says why
                        self._relabel(entry, read_metadata(entry.stem), now)
            return list(self.files)

    @staticmethod
    def _relabel(entry: Entry, meta: dict, now: tuple | None) -> None:
        entry.label, entry.epoch, entry.val_accuracy = _label(entry.name, meta)
        entry.identity = now

    @staticmethod
    def of(explorer: Explorer) -> Checkpoints:
        """The explorer's checkpoints (only its live-training snapshots if none were attached)."""
        if getattr(explorer, "checkpoints", None) is None:
            explorer.checkpoints = Checkpoints(explorer)
        return explorer.checkpoints

    # --- which checkpoints ----------------------------------------------------------------------------------------

    def check_spec(self, spec: dict, what: str) -> None:
        """Refuse a checkpoint whose network is not the explored one."""
        reference = self.explorer.trained.meta.get("model")
        if reference is not None:
            same = spec == reference
        else:  # a registry model with fresh weights records no spec: compare tensor shapes, built on no memory
            with torch.device("meta"):
                probe = get_model(spec["name"], spec["num_classes"], spec["in_channels"], tuple(spec["input_size"]),
                                  **spec["options"])
            same = _shapes(probe.state_dict()) == _shapes(self.explorer.trained.model.state_dict()) and \
                (spec["in_channels"], *spec["input_size"]) == tuple(self.explorer.trained.input_shape)
        if not same:
            ours = spec_text(reference) if reference else \
                f"{self.explorer.title} ({'x'.join(map(str, self.explorer.trained.input_shape))})"
            raise CnnkitError(f"{what} is {spec_text(spec)} but {self.source or self.explorer.title} is {ours}; "
                              "compare checkpoints of the same network (model, options, classes, input shape)")

    def snapshots(self) -> dict[str, dict[str, torch.Tensor]]:
        """The live-training snapshots (label -> state dict), none without `explore --train`."""
        training = getattr(self.explorer, "training", None)
        return dict(training.snapshots()) if training is not None else {}

    def entries(self) -> list[Entry]:
        """Files first, then training snapshots in the trainer's order."""
        snapshots = self.snapshots()
        epochs = {id(state): int(label.split()[1]) for label, state in snapshots.items() if label.startswith("epoch ")}
        training = getattr(self.explorer, "training", None)
        accuracy = {r["epoch"]: r.get("val_accuracy") for r in getattr(training, "records", [])}
        live = []
        for label, state in snapshots.items():  # 'best' and 'latest' name the same tensors as an 'epoch K'
            epoch = epochs.get(id(state))
            named = None if label.startswith("epoch ") else epoch  # 'epoch 2 (epoch 2, ...)' says it twice
            meta = {"config": True, "epoch": named, "metrics": {"val_accuracy": accuracy.get(epoch)}}
            shown, _, val = _label(f"training {label}", meta)  # 'training best (epoch 5, val 96.7%)'
            live.append(Entry(f"training: {label}", shown, epoch, val, "training"))
        return self._refreshed() + live

    def listing(self) -> dict:
        """GET /api/checkpoints: every checkpoint, the default pair (earliest vs best) and a note."""
        entries = self.entries()
        listed = {"checkpoints": [e.listed() for e in entries], "first_conv": self.first_conv, "a": None, "b": None,
                  "note": "", "live": getattr(self.explorer, "training", None) is not None}
        if len(entries) >= 2:
            best = _best(entries)
            others = [e for e in entries if e is not best]
            earliest = min(others, key=lambda e: (e.epoch is None, e.epoch or 0))
            listed["a"], listed["b"] = earliest.name, best.name
        run = {e.name: e for e in entries if e.origin == "run"}
        if "best" in run and "last" in run and run["best"].epoch == run["last"].epoch is not None:
            listed["note"] = (f"best and last are the same epoch ({run['best'].epoch}): the run's last epoch was its "
                              "best, so they hold the same weights")
        return listed

    # --- loading ----------------------------------------------------------------------------------------------------

    def load(self, name: str) -> tuple[Trained, str]:
        """The named checkpoint, from the cache (keyed by the file's identity) or loaded, and the label of the
        weights returned (call with self.lock held)."""
        entries = {e.name: e for e in self.entries()}
        if name not in entries:
            shown = ", ".join(list(entries)[:8]) + (", ..." if len(entries) > 8 else "")
            raise CnnkitError(f"no checkpoint named {name!r}; checkpoints: {shown or 'none'}")
        entry = entries[name]
        if entry.stem is None:
            state = self.snapshots().get(name.removeprefix("training: "))
            if state is None:
                raise CnnkitError(f"the training snapshot {name!r} is gone (the trainer replaced it); pick another")
            return self._snapshot(name, state), entry.label
        key = (name, entry.identity)
        if key not in self.cache:
            for _ in range(3):  # rewritten while it was read: read again, so label and weights are one file's
                before = identity(entry.stem)
                trained = load_trained(entry.stem)
                if identity(entry.stem) == before:
                    break
            self.check_spec(trained.meta["model"], str(entry.stem))  # the file may have changed since it was listed
            with self._files_lock:
                self._relabel(entry, trained.meta, before)  # the label says what was loaded
            key = (name, before)
            for stale in [k for k in self.cache if k[0] == name]:
                del self.cache[stale]
            self._keep(key, trained)
        self.cache.move_to_end(key)
        trained = self.cache[key]
        return trained, _label(name, trained.meta)[0]

    def _snapshot(self, name: str, state: dict[str, torch.Tensor]) -> Trained:
        """A training snapshot in a private copy of the explored model, its weights reloaded on every request (the
        trainer may replace a label's weights)."""
        key = (name, None)
        if key not in self.cache:
            base = self.explorer.trained
            with self.explorer.lock:  # no other request's hooks are on the model while it is copied
                model = copy.deepcopy(base.model).eval()
            self._keep(key, Trained(model, base.preprocessing, {}, base.class_names, base.input_shape,
                                    base.pixel_max, base.trained))
        trained = self.cache[key]
        try:
            trained.model.load_state_dict(state)
        except RuntimeError as error:
            detail = " ".join(str(error).split())[:300]
            raise CnnkitError(f"training snapshot {name!r} does not fit the explored network: {detail}") from None
        self.cache.move_to_end(key)
        return trained

    def _keep(self, key: tuple, trained: Trained) -> None:
        self.cache[key] = trained
        while len(self.cache) > CACHE_SIZE:
            self.cache.popitem(last=False)

    # --- comparing -------------------------------------------------------------------------------------------------

    def compare(self, image: torch.Tensor, a: str, b: str, layer: str, page: int = 0,
                activation: str = "post") -> dict:
        """Top classes, first-conv filters and one page of `layer`'s maps for checkpoints a and b, with the change
        from a to b of each filter and map (relative L2 distance) and one colour scale per pair."""
        unit = self.explorer.unit(layer)
        output = unit.output_name(activation)
        with self.lock:
            loaded = {name: self.load(name) for name in (a, b)}
            sides = [self._side(name, loaded[name][0], image, output) for name in (a, b)]
        labels = {name: label for name, (_, label) in loaded.items()}  # of the weights compared, file or snapshot
        (top_a, filters_a, maps_a), (top_b, filters_b, maps_b) = sides
        pages = [map_page(m, page, COMPARE_PAGE) for m in (maps_a, maps_b)]
        result = {"layer": unit.id, "output": output,
                  "a": {"name": a, "label": labels[a], "top": top_a, "maps": pages[0]},
                  "b": {"name": b, "label": labels[b], "top": top_b, "maps": pages[1]},
                  "maps": {"low": min(p["low"] for p in pages), "high": max(p["high"] for p in pages),
                           "change": relative_change(_rows(maps_a), _rows(maps_b)).tolist()},
                  "filters": None}
        if filters_a is not None:
            shown = slice(0, MAX_FILTERS)
            result["a"]["filters"], result["b"]["filters"] = packed(filters_a[shown]), packed(filters_b[shown])
            both = torch.cat([filters_a[shown].flatten(), filters_b[shown].flatten()])
            result["filters"] = {"layer": self.first_conv, "count": len(filters_a), "low": float(both.min()),
                                 "high": float(both.max()),
                                 "change": relative_change(filters_a.flatten(1), filters_b.flatten(1)).tolist()}
        return result

    def _side(self, name: str, trained: Trained, image: torch.Tensor, output: str
              ) -> tuple[list[dict], torch.Tensor | None, torch.Tensor]:
        """(top classes, first-conv weights, the layer's output) of one checkpoint for the explorer's image;
        refused, naming the checkpoint and layer, when its weights overflow on the image."""
        scaled = image * (trained.pixel_max / self.explorer.trained.pixel_max)  # its own training scale
        x = trained.prepare(scaled)
        logits, outputs, _ = record(trained.model, x, {output})
        try:
            refuse_non_finite(trained.model, x, logits, outputs[output])
        except CnnkitError as error:
            raise CnnkitError(f"checkpoint {name!r}: {error}") from None
        probabilities = torch.softmax(logits[0], dim=0)
        values, indices = probabilities.topk(min(TOP_K, len(probabilities)))
        top = [{"class": trained.class_names[int(i)], "index": int(i), "probability": float(p)}
               for p, i in zip(values, indices, strict=True)]
        filters = None
        if self.first_conv is not None:
            filters = dict(trained.model.named_modules())[self.first_conv].weight.detach().float().clone()
        return top, filters, outputs[output][0]


def _best(entries: list[Entry]) -> Entry:
    """The run's best, else the training snapshot marked best, else the highest validation accuracy, else the
    last."""
    for entry in entries:
        if entry.origin == "run" and entry.name == "best":
            return entry
    marked = [e for e in entries if e.origin == "training" and e.name == "training: best"]
    if marked:
        return marked[-1]
    scored = [e for e in entries if e.val_accuracy is not None]
    return max(scored, key=lambda e: e.val_accuracy) if scored else entries[-1]


def _shapes(state: dict[str, torch.Tensor]) -> dict[str, tuple[int, ...]]:
    return {key: tuple(value.shape) for key, value in state.items()}


def _rows(output: torch.Tensor) -> torch.Tensor:
    """A layer's output as one row per map, or one row for a vector."""
    return output.flatten(1) if output.dim() > 1 else output[None]


def relative_change(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Per row: |b - a| / |a| (L2 norms; a zero row of a divides by 1e-12)."""
    a, b = a.double(), b.double()
    return (b - a).norm(dim=1) / a.norm(dim=1).clamp_min(1e-12)


class CompareRequest(Strict):
    """Two checkpoints (names from GET /api/checkpoints), one image and one page of a layer's maps."""

    image: ImageInput
    a: str = Field(min_length=1, max_length=4096)
    b: str = Field(min_length=1, max_length=4096)
    layer: str
    page: int = Field(0, ge=0)
    activation: Literal["post", "pre"] = "post"


def compare_routes(explorer: Explorer) -> list[Route]:
    """GET /api/checkpoints and POST /api/compare for the explorer."""

    async def checkpoints(_request: Request) -> Response:
        return reply(await run_in_threadpool(lambda: Checkpoints.of(explorer).listing()),
                     not_finite="a checkpoint's metadata holds a number that is not finite (inf/NaN)")

    async def compare(request: Request) -> Response:
        body = await parse(request, CompareRequest)
        return reply(await run_in_threadpool(
            lambda: Checkpoints.of(explorer).compare(explorer.image(body.image.pixels, body.image.heldout), body.a,
                                                     body.b, body.layer, body.page, body.activation)))

    return [Route("/api/checkpoints", checkpoints), Route("/api/compare", compare, methods=["POST"])]
