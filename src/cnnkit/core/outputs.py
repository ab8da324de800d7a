"""Writing files: output folders made with one-line errors, and atomic replacement that keeps the old file."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from cnnkit.core.errors import CnnkitError

TEMP_SUFFIX = ".tmp"


def ensure_parent(path: Path) -> Path:
    """Create `path`'s folder if needed; a parent that is a file, or a folder cnnkit cannot create, is refused."""
    for parent in reversed(path.parents):
        if parent.exists() and not parent.is_dir():
            raise CnnkitError(f"{path}: cannot be written because {parent} is a file, not a folder")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise CnnkitError(f"{path}: its folder cannot be created ({error.strerror or error})") from None
    return path


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write(path: Path, data: bytes) -> None:
    """Write via a temp file in the same folder, fsync, then rename: a crash leaves the old file or the new one.

    The file gets the user's normal mode (0666 minus the umask), not the temp file's private 0600.
    """
    ensure_parent(path)
    try:
        handle, temp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=TEMP_SUFFIX)
    except OSError as error:
        raise CnnkitError(f"{path}: cannot be written ({error.strerror or error})") from None
    try:
        with os.fdopen(handle, "wb") as file:
            file.write(data)
            file.flush()
            os.fchmod(file.fileno(), 0o666 & ~_umask())
            os.fsync(file.fileno())
        os.replace(temp, path)
    except OSError as error:  # a full disk or a vanished folder: the old file stays, the temp file goes
        Path(temp).unlink(missing_ok=True)
        raise CnnkitError(f"{path}: cannot be written ({error.strerror or error}); the previous version is kept") \
            from None
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise
    directory = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)


def leftover_temp_files(folder: Path) -> list[Path]:
    """Temp files an interrupted `atomic_write` left in `folder` (the next writer of the folder removes them)."""
    return sorted(p for p in folder.glob(f".*{TEMP_SUFFIX}") if p.is_file())


# A training run's own files, and the files whose presence marks a folder as a run (or a --seeds folder).
RUN_OWN_FILES = ("config.json", "metrics.jsonl", "seeds.json", "last.safetensors", "last.json", "best.safetensors",
                 "best.json")
RUN_MARKERS = ("config.json", "metrics.jsonl", "seeds.json", "last.safetensors", "best.safetensors", ".cnnkit.lock")


def refuse_run_files(paths: list[Path], command: str) -> None:
    """Refuse to write a training run's own files (checkpoints, config, metrics, seeds summary) from any other
    command, with or without --overwrite: an export or import over RUN/best would destroy the run's results."""
    for path in paths:
        folder = path.parent
        if path.name in RUN_OWN_FILES and any((folder / marker).exists() for marker in RUN_MARKERS):
            raise CnnkitError(f"{path}: is a file of the training run in {folder}, which {command} never replaces "
                              "(not even with --overwrite); choose another --out")


def refuse_existing(paths: list[Path], overwrite: bool, command: str = "this command") -> None:
    """Refuse to replace any of `paths` unless `overwrite`, and a run's own files always (checked before anything
    is written)."""
    refuse_run_files(paths, command)
    for path in paths:
        if path.exists() and not path.is_file():
            raise CnnkitError(f"{path}: exists and is not a file")
        if path.exists() and not overwrite:
            raise CnnkitError(f"{path} already exists; pass --overwrite to replace it")
