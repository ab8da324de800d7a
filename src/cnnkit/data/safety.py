"""Reading files from strangers safely: size caps, decompression-bomb caps, no paths outside the given folder."""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np
from PIL import Image

from cnnkit.errors import CnnkitError

MAX_FILE_BYTES = 2 * 1024**3  # a dataset file larger than this is refused rather than read into memory
MAX_IMAGE_PIXELS = 64 * 1024 * 1024  # per image; larger ones are decompression bombs for this toolkit
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif")


def read_bytes(path: Path, limit: int = MAX_FILE_BYTES) -> bytes:
    """The whole file, refusing missing, unreadable or oversized files with the file's name."""
    try:
        size = path.stat().st_size
        if size > limit:
            raise CnnkitError(f"{path}: {size} bytes is larger than the {limit}-byte limit for one file")
        return path.read_bytes()
    except FileNotFoundError:
        raise CnnkitError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise CnnkitError(f"{path}: is a folder, expected a file") from None
    except OSError as error:
        raise CnnkitError(f"{path}: cannot be read ({error.strerror or error})") from None


def inside(root: Path, path: Path) -> bool:
    """True if `path`, with symlinks resolved, stays inside `root`."""
    return Path(os.path.realpath(path)).is_relative_to(os.path.realpath(root))


def decode_image(path: Path, size: tuple[int, int] | None = None, grey: bool | None = None) -> np.ndarray:
    """Decode one image to a uint8 (C, H, W) array: grey (C=1) or RGB (C=3), resized to (H, W) if given.

    Truncated or corrupt files and images over MAX_IMAGE_PIXELS raise CnnkitError naming the file.
    """
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as image:
                if image.width * image.height > MAX_IMAGE_PIXELS:
                    raise CnnkitError(f"{path}: {image.width}x{image.height} pixels exceeds the limit of "
                                      f"{MAX_IMAGE_PIXELS} (a decompression bomb?)")
                image.load()
                is_grey = image.mode in ("1", "L", "LA", "I", "I;16", "F") if grey is None else grey
                image = image.convert("L" if is_grey else "RGB")
                if size is not None and image.size != (size[1], size[0]):
                    image = image.resize((size[1], size[0]), Image.Resampling.BILINEAR)
                array = np.asarray(image, dtype=np.uint8)
    except CnnkitError:
        raise
    except FileNotFoundError:
        raise CnnkitError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise CnnkitError(f"{path}: is a folder, expected an image file") from None
    except Exception as error:  # noqa: BLE001 - decoders of hostile files fail in many ways; all mean "unreadable"
        raise CnnkitError(f"{path}: unreadable or truncated image ({type(error).__name__}: {error})") from None
    return array[None] if array.ndim == 2 else array.transpose(2, 0, 1)


def image_is_grey(path: Path) -> bool:
    """Whether an image file is stored in a grey mode (read from its header only)."""
    try:
        with Image.open(path) as image:
            return image.mode in ("1", "L", "LA", "I", "I;16", "F")
    except Exception as error:  # noqa: BLE001
        raise CnnkitError(f"{path}: unreadable or truncated image ({type(error).__name__}: {error})") from None


def gunzip(data: bytes, path: Path, limit: int = MAX_FILE_BYTES) -> bytes:
    """Decompress gzip data, refusing corrupt streams and anything that inflates past `limit` (a gzip bomb)."""
    import gzip
    import io

    try:
        with gzip.GzipFile(fileobj=io.BytesIO(data)) as stream:
            out = stream.read(limit + 1)
    except (OSError, EOFError, ValueError) as error:
        raise CnnkitError(f"{path}: not a readable gzip file ({error})") from None
    if len(out) > limit:
        raise CnnkitError(f"{path}: decompresses to more than {limit} bytes")
    return out
