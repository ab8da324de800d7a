"""Hostile input: random bytes and mutated valid files thrown at every reader either load or raise CnnkitError."""

import io
import json
import time
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image
from safetensors.torch import save as save_safetensors

from cnnkit import CnnkitError
from cnnkit.data.arrays import load_csv, load_npz
from cnnkit.data.cifar import read_batch
from cnnkit.data.idx import IMAGES_MAGIC, read_idx
from cnnkit.data.safety import decode_image
from cnnkit.store.checkpoint import FORMAT, model_from_checkpoint

FUZZ = settings(max_examples=40, deadline=2000, suppress_health_check=[HealthCheck.function_scoped_fixture])


def valid_files() -> dict[str, bytes]:
    png = io.BytesIO()
    Image.fromarray(np.arange(64, dtype=np.uint8).reshape(8, 8)).save(png, format="PNG")
    jpeg = io.BytesIO()
    Image.fromarray(np.zeros((8, 8, 3), dtype=np.uint8)).save(jpeg, format="JPEG")
    idx = IMAGES_MAGIC.to_bytes(4, "big") + b"".join(d.to_bytes(4, "big") for d in (2, 4, 4)) + bytes(32)
    cifar = bytes([3]) + bytes(3072)
    npz = io.BytesIO()
    np.savez(npz, x=np.zeros((2, 4, 4)), y=np.array([0, 1]))
    csv = b"label,p0,p1,p2,p3\n1,0,255,3,4\n"
    meta = json.dumps({"format": FORMAT, "model": {"name": "digitsnet", "options": {}, "num_classes": 10,
                                                    "in_channels": 1, "input_size": [8, 8]}}).encode()
    from cnnkit.models import get_model

    weights = save_safetensors({f"model.{k}": v.contiguous() for k, v in get_model("digitsnet").state_dict().items()})
    return {"png": png.getvalue(), "jpg": jpeg.getvalue(), "idx": idx, "cifar": cifar, "npz": npz.getvalue(),
            "csv": csv, "json": meta, "safetensors": weights}


VALID = valid_files()


def read_or_refuse(kind: str, data: bytes, folder: Path) -> None:
    """Read, or be refused with one line; random bytes are never called a pickle."""
    try:
        read(kind, data, folder)
    except CnnkitError as error:
        assert "\n" not in str(error), str(error)
        assert kind != "npz" or "pickle" not in str(error), str(error)


def read(kind: str, data: bytes, folder: Path) -> None:
    """Run the reader for `kind` on `data`; only CnnkitError may escape."""
    if kind in ("json", "safetensors"):
        other = "safetensors" if kind == "json" else "json"
        (folder / "ckpt.json").write_bytes(data if kind == "json" else VALID["json"])
        (folder / "ckpt.safetensors").write_bytes(data if kind == "safetensors" else VALID[other])
        model_from_checkpoint(folder / "ckpt")
        return
    path = folder / {"png": "f.png", "jpg": "f.jpg", "idx": "f-images-idx3-ubyte", "cifar": "f.bin",
                     "npz": "f.npz", "csv": "f.csv"}[kind]
    path.write_bytes(data)
    if kind in ("png", "jpg"):
        decode_image(path)
    elif kind == "idx":
        read_idx(path, IMAGES_MAGIC)
    elif kind == "cifar":
        read_batch(path)
    elif kind == "npz":
        load_npz(path)
    else:
        load_csv(path)


def mutate(data: bytes, edits: list[tuple[int, int]], cut: int) -> bytes:
    buffer = bytearray(data)
    for position, value in edits:
        if buffer:
            buffer[position % len(buffer)] = value
    return bytes(buffer[: max(0, len(buffer) - cut)])


def test_the_valid_files_load(tmp_path):
    for kind, data in VALID.items():
        read(kind, data, tmp_path)  # the mutations below start from files that really load


@FUZZ
@given(kind=st.sampled_from(sorted(VALID)), data=st.binary(max_size=512))
def test_random_bytes(tmp_path_factory, kind, data):
    folder = tmp_path_factory.mktemp("fuzz")
    started = time.perf_counter()
    read_or_refuse(kind, data, folder)  # loading, or cnnkit's own error: both fine; nothing else is
    assert time.perf_counter() - started < 2.0


@FUZZ
@given(kind=st.sampled_from(sorted(VALID)), edits=st.lists(st.tuples(st.integers(0, 10_000), st.integers(0, 255)),
                                                             max_size=6), cut=st.integers(0, 64))
def test_mutated_valid_files(tmp_path_factory, kind, edits, cut):
    folder = tmp_path_factory.mktemp("fuzz")
    read_or_refuse(kind, mutate(VALID[kind], edits, cut), folder)


def test_decompression_bomb_is_refused(tmp_path, monkeypatch):
    Image.new("L", (3000, 3000)).save(tmp_path / "big.png")  # 9 Mpixel, tiny on disk
    monkeypatch.setenv("CNNKIT_MAX_IMAGE_PIXELS", "1000000")
    with pytest.raises(CnnkitError, match=r"3000x3000 image: 9,000,000 exceeds the limit of 1,000,000 .*"
                                          "CNNKIT_MAX_IMAGE_PIXELS"):
        decode_image(tmp_path / "big.png")
    monkeypatch.setenv("CNNKIT_MAX_IMAGE_PIXELS", "9000000")
    assert decode_image(tmp_path / "big.png").shape == (1, 3000, 3000)  # the cap, not the image, decided
