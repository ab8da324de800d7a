"""Memory bounded by the data, not by a number in a file: every size a data file declares is capped before it is
inflated or allocated, the cap and its environment variable are named, and conversions make no whole copies."""

import gzip
import io
import json
import struct
import subprocess
import sys
import textwrap
import tracemalloc
import zipfile

import numpy as np
import pytest

from cnnkit import CnnkitError
from cnnkit.data import load_source
from cnnkit.data.idx import IMAGES_MAGIC, read_idx

MIB = 1024**2


def refused_within(limit_bytes, load):
    """The CnnkitError `load()` raises, checking that Python and NumPy allocated under `limit_bytes` meanwhile
    (tracemalloc sees both), so the refusal came before the declared size was inflated."""
    tracemalloc.start()
    try:
        with pytest.raises(CnnkitError) as error:
            load()
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < limit_bytes, peak
    assert "\n" not in str(error.value)
    return str(error.value)


def npy_bytes(header: dict, data: bytes) -> bytes:
    buffer = io.BytesIO()
    np.lib.format.write_array_header_1_0(buffer, header)
    return buffer.getvalue() + data


def write_npz(path, members: dict[str, bytes], compress=zipfile.ZIP_STORED):
    with zipfile.ZipFile(path, "w", compress, compresslevel=1 if compress else None) as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return path


def test_npz_deflate_bomb_refused_from_declared_size(tmp_path, monkeypatch):
    x = npy_bytes({"descr": "|u1", "fortran_order": False, "shape": (16_384, 32, 32)}, bytes(16 * MIB))
    y = npy_bytes({"descr": "|u1", "fortran_order": False, "shape": (16_384,)}, bytes(16_384))
    bomb = write_npz(tmp_path / "bomb.npz", {"x.npy": x, "y.npy": y}, zipfile.ZIP_DEFLATED)
    assert bomb.stat().st_size < 200_000  # 16 MiB inflated
    monkeypatch.setenv("CNNKIT_MAX_ARRAY_ELEMENTS", "1000000")
    message = refused_within(MIB, lambda: load_source(str(bomb)))
    assert message == (f"{bomb}: x.npy values (shape (16384, 32, 32)): 16,777,216 exceeds the limit of 1,000,000 "
                       "(array elements); set CNNKIT_MAX_ARRAY_ELEMENTS to raise it")
    monkeypatch.delenv("CNNKIT_MAX_ARRAY_ELEMENTS")
    monkeypatch.setenv("CNNKIT_MAX_DECOMPRESSED_BYTES", "1000000")
    message = refused_within(MIB, lambda: load_source(str(bomb)))
    assert message.startswith(f"{bomb}: x.npy inflated size in bytes: 16,777,344 exceeds the limit of 1,000,000 "
                              "(decompressed bytes); set CNNKIT_MAX_DECOMPRESSED_BYTES")
    monkeypatch.delenv("CNNKIT_MAX_DECOMPRESSED_BYTES")
    assert load_source(str(bomb)).images.shape == (16_384, 1, 32, 32)  # a valid file: the caps alone refused it


def test_npz_header_promising_more_than_the_archive_holds(tmp_path):
    x = npy_bytes({"descr": "<f4", "fortran_order": False, "shape": (100_000, 28, 28)}, bytes(16))
    y = npy_bytes({"descr": "|u1", "fortran_order": False, "shape": (100_000,)}, bytes(100_000))
    path = write_npz(tmp_path / "liar.npz", {"x.npy": x, "y.npy": y})
    message = refused_within(MIB, lambda: load_source(str(path)))
    assert message == (f"{path}: x.npy's header promises 313,600,000 bytes for shape (100000, 28, 28); the archive "
                       "holds 16")


def test_npz_zip_directory_too_large_to_parse(tmp_path):
    end_record = b"PK\x05\x06" + struct.pack("<4H2LH", 0, 0, 65_535, 65_535, 2_300_000_000, 0, 0)
    path = tmp_path / "directory.npz"
    path.write_bytes(bytes(100) + end_record)
    message = refused_within(MIB, lambda: load_source(str(path)))
    assert message == (f"{path}: zip directory size in bytes: 2,300,000,000 exceeds the limit of 1,048,576 (zip "
                       "directory bytes); set CNNKIT_MAX_ZIP_DIRECTORY_BYTES to raise it")


@pytest.mark.parametrize("x,y,expected", [
    (np.array(5.0), np.array(1), "x has shape (); expected (N, H, W)"),
    (np.zeros((2, 0, 4)), np.array([0, 1]), "x has shape (2, 0, 4)"),
    (np.zeros((2, 4, 4)), np.array(1), "y has shape (); expected one label per image"),
    (np.full((2, 4, 4), 1e30), np.array([0, 1]), "x: pixel values reach 1e+30, beyond the limit of 1,000,000 "
                                                  "(pixel value); set CNNKIT_MAX_PIXEL_VALUE to raise it"),
    (np.full((2, 4, 4), np.nan), np.array([0, 1]), "x: pixel values must be finite numbers; found nan"),
    (np.zeros((2, 4, 4), dtype=complex), np.array([0, 1]), "x.npy has dtype complex128; expected numbers"),
    (np.zeros((2, 4, 4)), np.array([0.5, 1.0]), "labels must be whole numbers or strings"),
])
def test_npz_arrays_that_are_not_a_dataset(tmp_path, x, y, expected):
    np.savez(tmp_path / "d.npz", x=x, y=y)
    with pytest.raises(CnnkitError) as error:
        load_source(str(tmp_path / "d.npz"))
    assert str(error.value).startswith(f"{tmp_path / 'd.npz'}: {expected}"), str(error.value)


def test_random_bytes_are_not_called_a_pickle(tmp_path):
    path = tmp_path / "noise.npz"
    path.write_bytes(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    with pytest.raises(CnnkitError, match=r"noise.npz: not an NPZ file \(no zip archive end record\)") as error:
        load_source(str(path))
    assert "pickle" not in str(error.value)


def test_sparse_labels_make_few_classes_and_many_are_capped(tmp_path, monkeypatch):
    np.savez(tmp_path / "sparse.npz", x=np.zeros((3, 2, 2)), y=np.array([10**9, 0, 10**9]))
    tracemalloc.start()
    data = load_source(str(tmp_path / "sparse.npz"))
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert data.class_names == ["0", "1000000000"] and data.labels.tolist() == [1, 0, 1]
    assert peak < MIB  # a billion class names would take tens of GB
    np.savez(tmp_path / "many.npz", x=np.zeros((20, 2, 2)), y=np.arange(20))
    monkeypatch.setenv("CNNKIT_MAX_CLASSES", "10")
    with pytest.raises(CnnkitError, match="many.npz: distinct labels: 20 exceeds the limit of 10 \\(classes\\); set "
                                          "CNNKIT_MAX_CLASSES"):
        load_source(str(tmp_path / "many.npz"))


def idx_header(*dims: int) -> bytes:
    return IMAGES_MAGIC.to_bytes(4, "big") + b"".join(d.to_bytes(4, "big") for d in dims)


def test_idx_header_sizes_are_capped_before_reading(tmp_path, monkeypatch):
    huge = tmp_path / "huge-images-idx3-ubyte"
    huge.write_bytes(idx_header(2**32 - 1, 2**32 - 1, 2**32 - 1) + bytes(64))  # product overflows int64
    message = refused_within(MIB, lambda: read_idx(huge, IMAGES_MAGIC))
    assert message.startswith(f"{huge}: values its header declares (4294967295x4294967295x4294967295): "
                              "79,228,162,458,924,105,385,300,197,375 exceeds the limit of")
    bomb = tmp_path / "bomb-images-idx3-ubyte.gz"
    bomb.write_bytes(gzip.compress(idx_header(16_384, 32, 32) + bytes(16 * MIB), compresslevel=1))
    monkeypatch.setenv("CNNKIT_MAX_ARRAY_ELEMENTS", "1000000")
    message = refused_within(MIB, lambda: read_idx(bomb, IMAGES_MAGIC))
    assert message.endswith("16,777,216 exceeds the limit of 1,000,000 (array elements); set "
                            "CNNKIT_MAX_ARRAY_ELEMENTS to raise it")
    monkeypatch.delenv("CNNKIT_MAX_ARRAY_ELEMENTS")
    assert read_idx(bomb, IMAGES_MAGIC).shape == (16_384, 32, 32)


@pytest.mark.parametrize("content,expected", [
    (idx_header(2, 0, 4), "the header declares shape (2, 0, 4); every dimension must be at least 1"),
    (gzip.compress(idx_header(2, 2, 2) + bytes(9)), "header promises 8 bytes of data for shape (2, 2, 2), the "
                                                     "file holds more than 8"),
    (gzip.compress(idx_header(2, 2, 2) + bytes(7)), "header promises 8 bytes of data for shape (2, 2, 2), the "
                                                     "file holds 7"),
    (idx_header(2, 2, 2)[:6], "truncated IDX header"),
    (b"\x1f\x8b" + bytes(30), "not a readable gzip IDX file"),
])
def test_idx_files_that_do_not_match_their_header(tmp_path, content, expected):
    path = tmp_path / ("f-images-idx3-ubyte.gz" if content[:2] == b"\x1f\x8b" else "f-images-idx3-ubyte")
    path.write_bytes(content)
    with pytest.raises(CnnkitError) as error:
        read_idx(path, IMAGES_MAGIC)
    assert str(error.value).startswith(f"{path}: {expected}"), str(error.value)


def test_csv_sizes_are_capped(tmp_path, monkeypatch):
    path = tmp_path / "d.csv"
    path.write_text("label,p0,p1,p2,p3\n1,0," + "9" * 200_000 + ",3,4\n")
    with pytest.raises(CnnkitError, match=r"d.csv: line 2 holds a field longer than 131,072 characters \(the csv "
                                          r"module's limit\); expected numbers$"):
        load_source(str(path))
    path.write_text("1,0,1,2,3\n" * 3)
    monkeypatch.setenv("CNNKIT_MAX_ARRAY_ELEMENTS", "10")
    with pytest.raises(CnnkitError, match=r"d.csv: values in up to 4 rows of 5 columns: 20 exceeds the limit of 10"):
        load_source(str(path))
    monkeypatch.setenv("CNNKIT_MAX_CSV_LINE_BYTES", "8")
    with pytest.raises(CnnkitError, match=r"d.csv: line 1 is longer than 8 characters \(csv line bytes\); set "
                                          "CNNKIT_MAX_CSV_LINE_BYTES to raise it"):
        load_source(str(path))
    path.write_text("1,0,1,2,1e30\n")
    monkeypatch.delenv("CNNKIT_MAX_ARRAY_ELEMENTS")
    monkeypatch.delenv("CNNKIT_MAX_CSV_LINE_BYTES")
    with pytest.raises(CnnkitError, match=r"d.csv: pixel values reach 1e\+30, beyond the limit"):
        load_source(str(path))


PEAKS = textwrap.dedent("""
    import json, resource, sys
    import torch
    from cnnkit.data import load_source
    from cnnkit.train.config import TrainConfig
    from cnnkit.train.data import prepare_data

    def peak():
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    prepare_data(TrainConfig(), torch.device("cpu"))  # imports and warms everything on the small digits first
    base = peak()
    data = load_source(sys.argv[1])
    loaded = peak() - base
    del data
    prepare_data(TrainConfig(data=sys.argv[1]), torch.device("cpu"))
    print(json.dumps({"load": loaded, "prepare": peak() - base}))
""")


def test_conversion_makes_no_whole_copies(tmp_path):
    """A 32 MiB IDX set costs its float32 copy plus itself while loading (5x), and training's preprocessed
    splits beside the dataset (about 8x; the old readers and trainer peaked at 6x and 12.4x)."""
    n = 2_048
    (tmp_path / "train-images-idx3-ubyte").write_bytes(idx_header(n, 128, 128) + bytes(n * 128 * 128))
    labels = (np.arange(n) % 10).astype(np.uint8).tobytes()
    (tmp_path / "train-labels-idx1-ubyte").write_bytes((0x801).to_bytes(4, "big") + n.to_bytes(4, "big") + labels)
    done = subprocess.run([sys.executable, "-c", PEAKS, str(tmp_path)], capture_output=True, text=True, timeout=300,
                          env={"OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin"})
    assert done.returncode == 0, done.stderr[-2000:]
    peaks = json.loads(done.stdout.splitlines()[-1])
    raw = n * 128 * 128
    assert peaks["load"] < 5.4 * raw, peaks["load"] / raw
    assert peaks["prepare"] < 9.5 * raw, peaks["prepare"] / raw


def test_csv_labels_are_read_exactly(tmp_path):
    """2**24 and 2**24 + 1 are one float32 value; as labels (class names) they are two classes."""
    from cnnkit.data.arrays import load_csv

    path = tmp_path / "labels.csv"
    path.write_text("".join(f"{16_777_216 + i % 2},0,1,2,3\n" for i in range(6)))
    dataset = load_csv(path)
    assert dataset.class_names == ["16777216", "16777217"]
    assert dataset.labels.tolist() == [0, 1, 0, 1, 0, 1]


def test_csv_label_beyond_64_bits_is_refused(tmp_path):
    from cnnkit.data.arrays import load_csv

    path = tmp_path / "labels.csv"
    path.write_text("0,0,1,2,3\n1e30,0,1,2,3\n")
    with pytest.raises(CnnkitError, match=r"line 2 has label '1e30', beyond the 64-bit range"):
        load_csv(path)
