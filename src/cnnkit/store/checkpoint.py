"""The checkpoint format: one safetensors file holding the tensors AND the metadata, written atomically.

A checkpoint STEM is STEM.safetensors: model weights (`model.*`), preprocessing (`preprocess.*`), optionally
optimiser and RNG state, and in its header the metadata (format tag, versions, the model spec, class names,
metrics, ...). One file, renamed into place, is one atomic unit: a crash leaves the old checkpoint or the new one.
STEM.json is a readable copy of the metadata written after it; a copy that disagrees with the tensors file (a
kill between the two writes, or an edit) is refused, or rewritten by `repair_json_copy` when resuming. Loading
never unpickles. The model spec (`model_spec` / `build_model`) is how every writer records a model and every
reader rebuilds it.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save as save_safetensors
from torch import nn

from cnnkit.core.errors import CnnkitError
from cnnkit.core.limits import check_limit
from cnnkit.core.outputs import atomic_write
from cnnkit.core.version import __version__
from cnnkit.data.preprocess import Preprocessing
from cnnkit.data.safety import read_bytes
from cnnkit.models import get_model, resolved_options
from cnnkit.store.metadata import FORMAT, checkpoint_meta, parse_json

PICKLE_SUFFIXES = (".pt", ".pth", ".ckpt", ".pkl", ".bin")
META_KEY = "cnnkit"  # the safetensors header entry holding the metadata JSON


def model_spec(name: str, options: dict, num_classes: int, in_channels: int, input_size: tuple[int, int]) -> dict:
    """How to rebuild a model: registry name, options with the builder's defaults filled in, classes, shape."""
    return {"name": name, "options": resolved_options(name, options), "num_classes": int(num_classes),
            "in_channels": int(in_channels), "input_size": [int(input_size[0]), int(input_size[1])]}


def build_model(spec: dict, stored_bytes: int | None = None) -> nn.Module:
    """The model a (validated) spec describes, freshly initialised.

    It is first built on the meta device (shapes only) and refused if its parameter and buffer values exceed the
    `parameters` cap, or, with `stored_bytes`, the bytes of model tensors a weights file actually holds: a number
    in a file or a flag (a width of 6000) must not make cnnkit allocate gigabytes.
    """
    options = dict(spec["options"])
    size = tuple(spec["input_size"])
    with torch.device("meta"):
        probe = get_model(spec["name"], spec["num_classes"], spec["in_channels"], size, **options)
    state = probe.state_dict().values()
    values, needed = sum(t.numel() for t in state), sum(t.numel() * t.element_size() for t in state)
    check_limit("parameters", values, f"{spec['name']}: parameter and buffer values")
    if stored_bytes is not None and needed > stored_bytes:
        raise CnnkitError(f"the metadata describes {spec['name']} with {values:,} values ({needed:,} bytes) but the "
                          f"weights file holds {stored_bytes:,} bytes of model tensors")
    return get_model(spec["name"], spec["num_classes"], spec["in_channels"], size, **options)


def save_checkpoint(
    path: Path, model: nn.Module, meta: dict, preprocessing: Preprocessing | None = None,
    extra: dict[str, torch.Tensor] | None = None,
) -> None:
    """Write `path`.safetensors (weights, preprocessing, `extra` tensors, metadata) and its `path`.json copy."""
    tensors = {f"model.{k}": v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    meta = {"format": FORMAT, "cnnkit_version": __version__, "torch_version": torch.__version__, **meta}
    if preprocessing is not None:
        tensors.update(preprocessing.tensors())
        meta["preprocessing"] = preprocessing.kind
    tensors.update(extra or {})
    text = json.dumps(meta, indent=1)
    atomic_write(path.with_suffix(".safetensors"), save_safetensors(tensors, metadata={META_KEY: text}))
    atomic_write(path.with_suffix(".json"), text.encode())


def seed_runs(folder: Path) -> list[Path]:
    """The seed-K run directories `cnnkit train --seeds` wrote in `folder`, by name."""
    return sorted(p for p in folder.glob("seed-*") if p.is_dir())


def resolve_checkpoint(path: str | Path) -> Path:
    """A run directory (its `best`, else `last`), a .json/.safetensors file or a stem -> the stem path."""
    path = Path(path)
    if path.is_dir():
        for name in ("best", "last"):
            if (path / f"{name}.safetensors").exists() or (path / f"{name}.json").exists():
                return path / name
        seeds = seed_runs(path)
        hint = f" (it holds the runs of --seeds: {seeds[0].name} ... {seeds[-1].name}; name one, e.g. {seeds[0]})" \
            if seeds else ""
        raise CnnkitError(f"{path}: no best or last checkpoint in this folder{hint}")
    if path.suffix in PICKLE_SUFFIXES and path.exists():
        raise CnnkitError(f"{path}: pickle-based checkpoints are refused (they can run code); cnnkit reads "
                          f"safetensors + JSON only. To convert one you trust: cnnkit import-weights {path} --trust "
                          "--model NAME --out STEM")
    stem = path.with_suffix("") if path.suffix in (".json", ".safetensors") else path
    if not stem.with_suffix(".safetensors").exists() and not stem.with_suffix(".json").exists():
        raise CnnkitError(f"{path}: no checkpoint here (expected {stem.with_suffix('.safetensors')})")
    return stem


def _read_tensors(path: Path) -> tuple[dict[str, torch.Tensor], str | None]:
    """(tensors, embedded metadata JSON or None) of a safetensors file, its size capped before reading."""
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        raise CnnkitError(f"{path}: no such file (the checkpoint's tensors)") from None
    check_limit("file_bytes", size, f"{path}: file size")
    try:
        with safe_open(str(path), framework="pt") as file:
            embedded = (file.metadata() or {}).get(META_KEY)
            return {key: file.get_tensor(key) for key in file.keys()}, embedded  # noqa: SIM118 - not a dict
    except (SafetensorError, OSError, ValueError, RuntimeError) as error:
        raise _corrupt(path, error) from None


def _read_header(path: Path) -> dict | None:
    """The metadata embedded in a safetensors file's header (parsed; None if it has none), no tensor read."""
    try:
        with safe_open(str(path), framework="pt") as file:
            embedded = (file.metadata() or {}).get(META_KEY)
    except (SafetensorError, OSError, ValueError, RuntimeError) as error:
        raise _corrupt(path, error) from None
    return None if embedded is None else parse_json(embedded, path)


def _corrupt(path: Path, error: Exception) -> CnnkitError:
    return CnnkitError(f"{path}: corrupt safetensors file ({str(error).splitlines()[0][:200]})")


def _json_copy(stem: Path) -> dict | None:
    path = stem.with_suffix(".json")
    return parse_json(read_bytes(path, cap="json_bytes"), path) if path.exists() else None


def _validated(stem: Path, embedded: dict | None, copy: dict | None) -> dict:
    """The metadata, validated: the tensors file's own, or STEM.json's for files written before metadata lived in
    the tensors file (the JSON is their only copy)."""
    tensors_path = stem.with_suffix(".safetensors")
    if embedded is not None:
        return checkpoint_meta(embedded, tensors_path).model_dump(mode="json")
    if copy is None:
        raise CnnkitError(f"{tensors_path}: holds no cnnkit metadata and has no {stem.name}.json beside it")
    return checkpoint_meta(copy, stem.with_suffix(".json")).model_dump(mode="json")


def load_checkpoint(path: str | Path, check_copy: bool = True) -> tuple[dict[str, torch.Tensor], dict]:
    """(tensors, validated metadata) of a checkpoint; corrupt, foreign or mismatched files raise CnnkitError.

    `check_copy=False` reads a tensors file that holds its metadata without its STEM.json (a resume repairs the
    copy later, when it first writes: until then it changes nothing)."""
    stem = resolve_checkpoint(path)
    tensors_path = stem.with_suffix(".safetensors")
    tensors, embedded = _read_tensors(tensors_path)
    meta = None if embedded is None else parse_json(embedded, tensors_path)
    copy = _json_copy(stem) if check_copy or meta is None else None
    if meta is not None and copy is not None and copy != meta:
        raise CnnkitError(f"{stem.with_suffix('.json')} does not match the metadata inside {tensors_path.name} (a "
                          f"write interrupted between the two files, or an edit); `cnnkit train --resume` repairs a "
                          f"run's copy, or delete {stem.name}.json to use the tensors file alone")
    return tensors, _validated(stem, meta, copy)


def read_metadata(path: str | Path) -> dict:
    """A checkpoint's validated metadata without its tensors: the copy in the tensors file's header, else STEM.json."""
    stem = resolve_checkpoint(path)
    tensors_path = stem.with_suffix(".safetensors")
    meta = _read_header(tensors_path) if tensors_path.exists() else None
    return _validated(stem, meta, None if meta is not None else _json_copy(stem))


def repair_json_copy(path: str | Path) -> bool:
    """Rewrite STEM.json from the metadata inside STEM.safetensors when they differ; True if it was rewritten."""
    stem = resolve_checkpoint(path)
    meta = _read_header(stem.with_suffix(".safetensors"))  # the header alone: no tensor is read to compare
    if meta is None:
        return False
    try:
        current = _json_copy(stem)
    except CnnkitError:  # a torn or garbled copy: rewritten below
        current = None
    if current == meta:
        return False
    atomic_write(stem.with_suffix(".json"), json.dumps(meta, indent=1).encode())
    return True


def model_from_checkpoint(path: str | Path) -> tuple[nn.Module, Preprocessing | None, dict]:
    """Rebuild the model (eval mode), its preprocessing and metadata from a checkpoint.

    The metadata's model is first built on the meta device and its size compared with the weights the file
    holds, so a hand-edited width cannot make cnnkit allocate gigabytes for weights that are not there.
    """
    tensors, meta = load_checkpoint(path)
    spec = meta["model"]
    stored = sum(t.numel() * t.element_size() for k, t in tensors.items() if k.startswith("model."))
    try:
        model = build_model(spec, stored)
    except CnnkitError as error:
        raise CnnkitError(f"{path}: {error}") from None
    weights = {k[len("model."):]: v for k, v in tensors.items() if k.startswith("model.")}
    _check_weights(weights, model, path)
    try:
        model.load_state_dict(weights)
    except RuntimeError as error:
        detail = " ".join(str(error).split())
        raise CnnkitError(f"{path}: weights do not fit {spec['name']}: {detail[:300]}") from None
    preprocessing = None
    if meta.get("preprocessing") is not None:
        shape = (spec["in_channels"], *spec["input_size"])
        preprocessing = Preprocessing.from_tensors(meta["preprocessing"], tensors, shape, str(path))
    return model.eval(), preprocessing, meta


def _check_weights(weights: dict[str, torch.Tensor], model: nn.Module, path: str | Path) -> None:
    """Refuse, naming the tensor, weights of another dtype than the model's (load_state_dict would cast int32 or
    bool bits silently) or holding NaN or infinite values."""
    expected = model.state_dict()
    for name, tensor in weights.items():
        want = expected.get(name)
        if want is not None and tensor.dtype != want.dtype:
            raise CnnkitError(f"{path}: tensor model.{name} has dtype {str(tensor.dtype).removeprefix('torch.')}; "
                              f"the model's is {str(want.dtype).removeprefix('torch.')}")
    check_finite({f"model.{name}": tensor for name, tensor in weights.items()}, path)


def check_finite(tensors: dict[str, torch.Tensor], path: str | Path) -> None:
    """Refuse, naming the first, floating-point tensors holding NaN or infinite values (a model's every prediction
    would be NaN: '8 (8 nan%)'; a resumed optimiser's every step)."""
    for name, tensor in tensors.items():
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            raise CnnkitError(f"{path}: tensor {name} holds NaN or infinite values; a checkpoint of a run that "
                              "diverged, or a damaged file")
