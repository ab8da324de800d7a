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


def refuse_existing(paths: list[Path], overwrite: bool) -> None:
    """Refuse to replace any of `paths` unless `overwrite` (checked before anything is written)."""
    for path in paths:
        if path.exists() and not path.is_file():
            raise CnnkitError(f"{path}: exists and is not a file")
        if path.exists() and not overwrite:
            raise CnnkitError(f"{path} already exists; pass --overwrite to replace it")
