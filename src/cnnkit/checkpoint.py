"""The checkpoint format: safetensors (tensors) + JSON (metadata), written atomically; loading never unpickles.

A checkpoint STEM is STEM.safetensors (model weights as `model.*`, preprocessing as `preprocess.*`, optionally
optimiser and RNG state) and STEM.json (format tag, versions, the model spec, class names, metrics, ...). The
model spec (`model_spec` / `build_model`) is how every writer (trainer, import-weights) records a model and every
reader rebuilds it.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load as load_safetensors
from safetensors.torch import save as save_safetensors
from torch import nn

from cnnkit import __version__
from cnnkit.data.preprocess import Preprocessing
from cnnkit.data.safety import read_bytes
from cnnkit.errors import CnnkitError
from cnnkit.models import get_model, resolved_options

FORMAT = "cnnkit-checkpoint"
PICKLE_SUFFIXES = (".pt", ".pth", ".ckpt", ".pkl", ".bin")


def atomic_write(path: Path, data: bytes) -> None:
    """Write via a temp file in the same folder, fsync, then rename: a crash leaves the old file or the new one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(handle, "wb") as file:
            file.write(data)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temp, path)
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise
    directory = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)


def model_spec(name: str, options: dict, num_classes: int, in_channels: int, input_size: tuple[int, int]) -> dict:
    """How to rebuild a model: registry name, options with the builder's defaults filled in, classes, shape."""
    return {"name": name, "options": resolved_options(name, options), "num_classes": int(num_classes),
            "in_channels": int(in_channels), "input_size": [int(input_size[0]), int(input_size[1])]}


def build_model(spec: dict) -> nn.Module:
    """The model a spec describes, freshly initialised (missing sizes take the model's defaults)."""
    size = spec.get("input_size")
    return get_model(spec["name"], num_classes=spec.get("num_classes"), in_channels=spec.get("in_channels"),
                     input_size=tuple(size) if size else None, **dict(spec.get("options") or {}))


def save_checkpoint(
    path: Path, model: nn.Module, meta: dict, preprocessing: Preprocessing | None = None,
    extra: dict[str, torch.Tensor] | None = None,
) -> None:
    """Write `path`.safetensors (weights, preprocessing, `extra` tensors) and `path`.json (metadata)."""
    tensors = {f"model.{k}": v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    meta = {"format": FORMAT, "cnnkit_version": __version__, "torch_version": torch.__version__, **meta}
    if preprocessing is not None:
        tensors.update(preprocessing.tensors())
        meta["preprocessing"] = preprocessing.kind
    tensors.update(extra or {})
    # Weights first, metadata last: a reader that finds the JSON finds the weights that belong to it.
    atomic_write(path.with_suffix(".safetensors"), save_safetensors(tensors))
    atomic_write(path.with_suffix(".json"), json.dumps(meta, indent=1).encode())


def resolve_checkpoint(path: str | Path) -> Path:
    """A run directory (its `best`, else `last`), a .json/.safetensors file or a stem -> the stem path."""
    path = Path(path)
    if path.is_dir():
        for name in ("best", "last"):
            if (path / f"{name}.json").exists():
                return path / name
        raise CnnkitError(f"{path}: no best.json or last.json checkpoint in this folder")
    if path.suffix in PICKLE_SUFFIXES and path.exists():
        raise CnnkitError(f"{path}: pickle-based checkpoints are refused (they can run code); cnnkit reads "
                          f"safetensors + JSON only. To convert one you trust: cnnkit import-weights {path} --trust "
                          "--model NAME --out STEM")
    stem = path.with_suffix("") if path.suffix in (".json", ".safetensors") else path
    if not stem.with_suffix(".json").exists():
        raise CnnkitError(f"{path}: no checkpoint here (expected {stem.with_suffix('.json')})")
    return stem


def load_checkpoint(path: str | Path) -> tuple[dict[str, torch.Tensor], dict]:
    """(tensors, metadata) of a checkpoint; corrupt or foreign files raise CnnkitError."""
    stem = resolve_checkpoint(path)
    try:
        meta = json.loads(read_bytes(stem.with_suffix(".json"), limit=64 * 1024**2))
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise CnnkitError(f"{stem.with_suffix('.json')}: not valid JSON ({error})") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise CnnkitError(f"{stem.with_suffix('.json')}: not a cnnkit checkpoint (format {FORMAT!r} missing)")
    try:
        tensors = load_safetensors(read_bytes(stem.with_suffix(".safetensors")))
    except CnnkitError:
        raise
    except (SafetensorError, Exception) as error:  # noqa: BLE001 - a corrupt file can fail anywhere in the parser
        raise CnnkitError(f"{stem.with_suffix('.safetensors')}: corrupt safetensors file ({error})") from None
    return tensors, meta


def model_from_checkpoint(path: str | Path) -> tuple[nn.Module, Preprocessing | None, dict]:
    """Rebuild the model (eval mode), its preprocessing and metadata from a checkpoint."""
    tensors, meta = load_checkpoint(path)
    spec = meta.get("model")
    if not isinstance(spec, dict) or not isinstance(spec.get("name"), str):
        raise CnnkitError(f"{path}: checkpoint metadata has no model entry")
    try:
        model = build_model(spec)
    except CnnkitError:
        raise
    except Exception as error:  # noqa: BLE001 - hand-edited or hostile metadata
        raise CnnkitError(f"{path}: checkpoint metadata does not describe a buildable model ({error})") from None
    weights = {k[len("model."):]: v for k, v in tensors.items() if k.startswith("model.")}
    try:
        model.load_state_dict(weights)
    except RuntimeError as error:
        first = str(error).splitlines()[0] if str(error) else "state mismatch"
        raise CnnkitError(f"{path}: weights do not fit {spec['name']}: {first}") from None
    try:
        preprocessing = Preprocessing.from_tensors(meta["preprocessing"], tensors) if "preprocessing" in meta else None
    except KeyError as error:
        raise CnnkitError(f"{path}: checkpoint lacks the preprocessing tensor {error}") from None
    return model.eval(), preprocessing, meta
