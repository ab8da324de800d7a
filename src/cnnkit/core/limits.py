"""Caps on every size that comes from a file or a flag, checked before anything is allocated.

Each cap has a default sized for this toolkit's work (the largest zoo model, ImageNet-size images, MNIST-size
data sets in memory) and an environment variable that raises it, named in every refusal.
"""

from __future__ import annotations

import os

from cnnkit.core.errors import CnnkitError

DEFAULTS = {
    "file_bytes": 2 * 1024**3,  # one data, weights or checkpoint file read into memory
    "decompressed_bytes": 2 * 1024**3,  # what one gzip stream, NPZ member or archive member may inflate to
    "array_elements": 512 * 1024**2,  # values in one array read from a file (2 GiB as float32)
    "image_pixels": 64 * 1024**2,  # pixels of one decoded image (decompression bombs)
    "image_side": 4096,  # --image-size and other requested image sides
    "classes": 100_000,  # distinct labels / output classes
    "parameters": 1_000_000_000,  # parameters of a model built from a flag or a file's metadata
    "activation_bytes": 4 * 1024**3,  # one image's activations through a model (resnet152 at 224: 342 MiB)
    "json_bytes": 64 * 1024**2,  # one JSON metadata file
    "text_bytes": 1024**2,  # one small text file, such as a list of class names
    "csv_line_bytes": 64 * 1024**2,  # one CSV row (a 2048x2048 image of 16-character values)
    "pixel_value": 1_000_000,  # |pixel| in an array file: larger values overflow float32 statistics in training
    "zip_directory_bytes": 1024**2,  # an NPZ's zip directory, which zipfile parses whole when it opens the file
}


def env_name(name: str) -> str:
    """The environment variable that raises cap `name`."""
    return f"CNNKIT_MAX_{name.upper()}"


def limit(name: str) -> int:
    """The cap `name`, from its environment variable when set to a positive integer, else the default."""
    text = os.environ.get(env_name(name), "").strip()
    if text.isdigit() and int(text) > 0:
        return int(text)
    return DEFAULTS[name]


def check_limit(name: str, value: int, what: str) -> int:
    """Return `value`, or refuse it when it exceeds cap `name`, saying the cap and how to raise it."""
    cap = limit(name)
    if value > cap:
        raise CnnkitError(f"{what}: {value:,} exceeds the limit of {cap:,} ({name.replace('_', ' ')}); set "
                          f"{env_name(name)} to raise it")
    return value
