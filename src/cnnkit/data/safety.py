"""Reading files from strangers safely: regular files only, size caps, decompression caps, no paths outside the
given folder."""

from __future__ import annotations

import os
import stat
import warnings
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from cnnkit.core.errors import CnnkitError
from cnnkit.core.limits import check_limit
from cnnkit.data.resize import resize

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif")
GREY_MODES = ("1", "L", "LA", "I", "I;16", "F")


def reason(error: BaseException) -> str:
    """An exception as one short line, for messages about hostile files (their errors may span lines)."""
    text = str(error).strip().splitlines()[0] if str(error).strip() else ""
    return f"{type(error).__name__}: {text[:200]}" if text else type(error).__name__


def file_size(path: Path, cap: str = "file_bytes", what: str = "a file") -> int:
    """The size of the regular file `path`, refusing a missing path, a folder, a device or pipe (reading
    /dev/zero or a FIFO never ends) and a file larger than cap `cap`."""
    try:
        info = path.stat()
    except (FileNotFoundError, NotADirectoryError):
        raise CnnkitError(f"{path}: no such file") from None
    except OSError as error:
        raise CnnkitError(f"{path}: cannot be read ({error.strerror or error})") from None
    if stat.S_ISDIR(info.st_mode):
        raise CnnkitError(f"{path}: is a folder, expected {what}")
    if not stat.S_ISREG(info.st_mode):
        raise CnnkitError(f"{path}: not a regular file (a device or pipe?), expected {what}")
    return check_limit(cap, info.st_size, f"{path}: file size in bytes")


def read_bytes(path: Path, limit: int | None = None, cap: str = "file_bytes") -> bytes:
    """The whole file, refusing missing, unreadable, irregular or oversized files with the file's name.

    The size cap is `limit` bytes when given, else the named cap of `cnnkit.core.limits`.
    """
    size = file_size(path, cap)
    if limit is not None and size > limit:
        raise CnnkitError(f"{path}: {size:,} bytes is larger than the {limit:,}-byte limit for this file")
    most = limit if limit is not None else size
    try:
        with path.open("rb") as file:
            data = file.read(most + 1)  # the file may have grown since stat()
    except OSError as error:
        raise CnnkitError(f"{path}: cannot be read ({error.strerror or error})") from None
    if len(data) > most:
        raise CnnkitError(f"{path}: grew while being read (more than {most:,} bytes)")
    return data


def inside(root: Path, path: Path) -> bool:
    """True if `path`, with symlinks resolved, stays inside `root`."""
    return Path(os.path.realpath(path)).is_relative_to(os.path.realpath(root))


def decode_image(path: Path, size: tuple[int, int] | None = None, grey: bool | None = None) -> np.ndarray:
    """Decode one image to a uint8 (C, H, W) array: grey (C=1) or RGB (C=3), resized to (H, W) if given (an area
    filter when shrinking, as TensorFlow's resize_area; bilinear when enlarging).

    Missing, truncated or corrupt files and images over the image_pixels cap raise CnnkitError naming the file.
    """
    file_size(path, what="an image file")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # our own cap below decides
            with Image.open(path) as image:
                check_limit("image_pixels", image.width * image.height,
                            f"{path}: pixels of a {image.width}x{image.height} image")
                image.load()
                is_grey = image.mode in GREY_MODES if grey is None else grey
                array = np.asarray(image.convert("L" if is_grey else "RGB"), dtype=np.uint8)
    except CnnkitError:
        raise
    except FileNotFoundError:
        raise CnnkitError(f"{path}: no such file") from None
    except PermissionError as error:
        raise CnnkitError(f"{path}: cannot be read ({error.strerror})") from None
    except Exception as error:  # noqa: BLE001 - decoders of hostile files fail in many ways; all mean "unreadable"
        raise CnnkitError(f"{path}: unreadable or truncated image ({reason(error)})") from None
    array = array[None] if array.ndim == 2 else array.transpose(2, 0, 1)  # (C, H, W)
    if size is None or array.shape[1:] == tuple(size):
        return array
    resized = resize(torch.from_numpy(array.astype(np.float32))[None], size)[0]
    return resized.round().clamp(0, 255).to(torch.uint8).numpy()


def image_is_grey(path: Path) -> bool:
    """Whether an image file is stored in a grey mode (read from its header only)."""
    file_size(path, what="an image file")
    try:
        with Image.open(path) as image:
            return image.mode in GREY_MODES
    except Exception as error:  # noqa: BLE001
        raise CnnkitError(f"{path}: unreadable or truncated image ({reason(error)})") from None
