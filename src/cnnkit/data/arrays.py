"""Array files: NPZ with `x` and `y` (no pickles), and CSV with a label column then pixel columns (Kaggle MNIST).

Every size these files declare (zip directory, inflated member, array shape, row length, row count) is checked
against `cnnkit.core.limits` before anything of that size is allocated or inflated.
"""

from __future__ import annotations

import csv
import io
import math
import struct
import zipfile
from pathlib import Path

import numpy as np
import torch

from cnnkit.core.errors import CnnkitError
from cnnkit.core.limits import check_limit, env_name, limit
from cnnkit.data.dataset import ImageDataset, check_pixel_values, float_images, index_labels
from cnnkit.data.safety import file_size, reason

ZIP_END_RECORD = 22  # bytes of a zip's end-of-central-directory record, followed by a comment of up to 65,535
READ_CHUNK = 16 * 1024**2  # bytes per read when scanning a file


def to_nchw(x: np.ndarray, path: Path) -> np.ndarray:
    """(N, H, W) grey, (N, H, W, C) or (N, C, H, W) with C in 1, 3 or 4 -> (N, C, H, W) (a view)."""
    if x.ndim == 3:
        return x[:, None]
    if x.ndim == 4 and x.shape[-1] in (1, 3, 4) and x.shape[1] not in (1, 3, 4):
        return x.transpose(0, 3, 1, 2)
    if x.ndim == 4 and x.shape[1] in (1, 3, 4):
        return x
    raise CnnkitError(
        f"{path}: x has shape {x.shape}; expected (N, H, W), (N, H, W, C) or (N, C, H, W) with C 1, 3 or 4"
    )


def labels_from(y: np.ndarray, path: Path) -> tuple[torch.Tensor, list[str]]:
    """Class indices and names from integer, whole-number float or string labels (the values are the names)."""
    if y.ndim != 1:
        raise CnnkitError(f"{path}: y has shape {y.shape}; expected one label per image")
    if y.dtype.kind == "f" and not (np.all(np.isfinite(y)) and np.all(y == np.round(y))):
        raise CnnkitError(f"{path}: labels must be whole numbers or strings; found a fractional or non-finite one")
    if y.dtype.kind not in "iufUS":
        raise CnnkitError(f"{path}: labels must be integers or strings; found dtype {y.dtype}")
    return index_labels(y, str(path))


def load_npz(path: Path) -> ImageDataset:
    """`x` (images) and `y` (labels), read with numpy's .npy reader after checking each member's declared size;
    object arrays (pickles) are refused."""
    _check_zip_directory(path)
    try:
        with zipfile.ZipFile(path) as archive:
            members = {name: _member(archive, name, path) for name in ("x", "y")}
            headers = {name: _npy_header(archive, member, path) for name, member in members.items()}
            _check_dtype(members["x"], headers["x"][1], path, "uif")
            _check_dtype(members["y"], headers["y"][1], path, "iufUS")
            _check_shapes(headers["x"][0], headers["y"][0], path)
            x, y = (_read_array(archive, members[name], headers[name], path) for name in ("x", "y"))
    except CnnkitError:
        raise
    except Exception as error:  # noqa: BLE001 - zipfile/zlib/numpy fail in many ways on hostile files
        raise CnnkitError(f"{path}: not a readable NPZ archive ({reason(error)})") from None
    check_pixel_values(x, f"{path}: x")
    labels, names = labels_from(y, path)
    return ImageDataset(float_images(to_nchw(x, path)), labels, names, source=str(path),
                        pixel_max=pixel_max(x), pixel_max_known=False, largest=largest(x))


def _check_zip_directory(path: Path) -> None:
    """Refuse a file that is no zip archive, or whose central directory is too large to parse, from its end record
    alone (zipfile would read and parse a 2 GB directory of millions of entries into memory)."""
    size = file_size(path, what="an NPZ file")
    with path.open("rb") as file:
        file.seek(max(0, size - ZIP_END_RECORD - 65_535))
        tail = file.read()
    at = tail.rfind(b"PK\x05\x06")
    if at < 0 or len(tail) - at < ZIP_END_RECORD:
        raise CnnkitError(f"{path}: not an NPZ file (no zip archive end record); expected arrays x and y saved by "
                          "numpy.savez")
    directory = struct.unpack_from("<L", tail, at + 12)[0]  # an NPZ dataset's directory lists a few arrays
    check_limit("zip_directory_bytes", directory, f"{path}: zip directory size in bytes")


def _member(archive: zipfile.ZipFile, name: str, path: Path) -> zipfile.ZipInfo:
    names = set(archive.namelist())
    for candidate in (f"{name}.npy", name):
        if candidate in names:
            return archive.getinfo(candidate)
    found = sorted(n.removesuffix(".npy") for n in archive.namelist())[:20]
    raise CnnkitError(f"{path}: an NPZ dataset needs arrays 'x' and 'y'; found {found}")


def _npy_header(archive: zipfile.ZipFile, member: zipfile.ZipInfo, path: Path) -> tuple[tuple, np.dtype, int]:
    """(shape, dtype, header bytes) of one .npy member, read without inflating its data."""
    check_limit("decompressed_bytes", member.file_size, f"{path}: {member.filename} inflated size in bytes")
    with archive.open(member) as stream:
        try:
            version = np.lib.format.read_magic(stream)
            readers = {(1, 0): np.lib.format.read_array_header_1_0, (2, 0): np.lib.format.read_array_header_2_0}
            if version not in readers:
                raise CnnkitError(f"{path}: {member.filename} has .npy format version {version}; expected 1.0 or 2.0")
            shape, _, dtype = readers[version](stream)
            if any(side < 0 for side in shape):
                raise CnnkitError(f"{path}: {member.filename} declares a negative shape {shape}")
        except CnnkitError:
            raise
        except Exception as error:  # noqa: BLE001
            raise CnnkitError(f"{path}: {member.filename} is not a NumPy .npy array ({reason(error)})") from None
        return shape, dtype, stream.tell()


def _check_shapes(x_shape: tuple, y_shape: tuple, path: Path) -> None:
    if len(x_shape) not in (3, 4) or 0 in x_shape:
        raise CnnkitError(f"{path}: x has shape {x_shape}; expected (N, H, W), (N, H, W, C) or (N, C, H, W), "
                          "none of them 0")
    if len(y_shape) != 1:
        raise CnnkitError(f"{path}: y has shape {y_shape}; expected one label per image, shape (N,)")
    if x_shape[0] != y_shape[0]:
        raise CnnkitError(f"{path}: {x_shape[0]} images but {y_shape[0]} labels")


def _check_dtype(member: zipfile.ZipInfo, dtype: np.dtype, path: Path, kinds: str) -> None:
    if dtype.hasobject:
        raise CnnkitError(f"{path}: {member.filename} holds Python objects (pickled data), which cnnkit never "
                          "loads; save numbers or strings")
    if dtype.kind not in kinds:
        expected = "numbers" if kinds == "uif" else "integer or string labels"
        raise CnnkitError(f"{path}: {member.filename} has dtype {dtype}; expected {expected}")


def _read_array(archive: zipfile.ZipFile, member: zipfile.ZipInfo, header: tuple[tuple, np.dtype, int],
                path: Path) -> np.ndarray:
    """One member's array, once its element count and byte count (as declared) are within bounds."""
    shape, dtype, header_bytes = header
    name = member.filename
    count = check_limit("array_elements", math.prod(shape), f"{path}: {name} values (shape {shape})")
    if count * dtype.itemsize > member.file_size - header_bytes:
        raise CnnkitError(f"{path}: {name}'s header promises {count * dtype.itemsize:,} bytes for shape {shape}; "
                          f"the archive holds {member.file_size - header_bytes:,}")
    with archive.open(member) as stream:
        return np.lib.format.read_array(stream, allow_pickle=False)


def read_npy(path: Path) -> np.ndarray:
    """One .npy image or batch of images: its header's dtype (real numbers only), shape and size are checked
    before its data is read; pickles are never loaded; NaN, infinite or huge pixel values are refused."""
    size = file_size(path, what="a .npy array")
    try:
        with path.open("rb") as stream:
            version = np.lib.format.read_magic(stream)
            readers = {(1, 0): np.lib.format.read_array_header_1_0, (2, 0): np.lib.format.read_array_header_2_0}
            if version not in readers:
                raise CnnkitError(f"{path}: .npy format version {version}; expected 1.0 or 2.0")
            shape, _, dtype = readers[version](stream)
            check_pixel_dtype(dtype, path)
            count = check_limit("array_elements", math.prod(shape), f"{path}: values (shape {shape})")
            if count * dtype.itemsize > size - stream.tell():
                raise CnnkitError(f"{path}: its header promises {count * dtype.itemsize:,} bytes for shape {shape}; "
                                  f"the file holds {size - stream.tell():,}")
            stream.seek(0)
            array = np.lib.format.read_array(stream, allow_pickle=False)
    except CnnkitError:
        raise
    except Exception as error:  # noqa: BLE001 - numpy fails in many ways on hostile files
        raise CnnkitError(f"{path}: not a readable .npy array ({reason(error)})") from None
    check_pixel_values(array, str(path))
    return array


def check_pixel_dtype(dtype: np.dtype, where: Path | str) -> None:
    """Pixels are real numbers: integers or floats; strings, objects, complex, bool, dates and records are not."""
    if dtype.hasobject or dtype.kind not in "uif" or dtype.fields is not None:
        raise CnnkitError(f"{where}: holds dtype {dtype} ({_KIND_NAMES.get(dtype.kind, 'not numbers')}); expected "
                          "pixel values as integers or floats")


_KIND_NAMES = {"U": "strings", "S": "bytes", "O": "Python objects", "c": "complex numbers", "b": "booleans",
               "M": "dates", "m": "time spans", "V": "records or raw bytes"}


def load_csv(path: Path) -> ImageDataset:
    """First column the label, the rest pixels of a square grey image; a header row is detected and skipped."""
    file_size(path, what="a CSV file")
    rows = _count_lines(path)
    values, count, labels = None, 0, []
    try:
        with path.open(encoding="utf-8", newline="") as file:
            for line, row in _csv_rows(file, path):
                if values is None:
                    values = _allocate(row, rows, path)
                if count == len(values):
                    raise CnnkitError(f"{path}: more rows than counted lines (mixed line endings?)")
                if len(row) != values.shape[1]:
                    raise CnnkitError(f"{path}: line {line} has {len(row)} columns, expected {values.shape[1]}")
                _fill(values, count, row, line, path)
                labels.append(_label(row[0], line, path))
                count += 1
    except UnicodeDecodeError:
        raise CnnkitError(f"{path}: not a UTF-8 text CSV file") from None
    if values is None:
        raise CnnkitError(f"{path}: no data rows")
    values = values[:count]
    side = math.isqrt(values.shape[1] - 1)
    check_pixel_values(values[:, 1:], str(path))
    labels, names = labels_from(np.array(labels, dtype=np.int64), path)  # read exactly: float32 merges 2**24 + 1
    images = float_images(values[:, 1:].reshape(-1, 1, side, side))
    return ImageDataset(images, labels, names, source=str(path), pixel_max=pixel_max(values[:, 1:]),
                        pixel_max_known=False, largest=largest(values[:, 1:]))


def _count_lines(path: Path) -> int:
    """A CSV file's line count (LF, CRLF or CR endings), scanned in chunks before anything is parsed."""
    newlines = returns = 0
    with path.open("rb") as file:
        while chunk := file.read(READ_CHUNK):
            newlines, returns = newlines + chunk.count(b"\n"), returns + chunk.count(b"\r")
    return max(newlines, returns) + 1


def _csv_rows(file: io.TextIOBase, path: Path):
    """(line number, fields) of each non-empty data row; lines over csv_line_bytes and fields over the csv
    module's limit are refused before the csv module splits them."""
    cap, header_checked = limit("csv_line_bytes"), False
    for number, line in enumerate(iter(lambda: file.readline(cap + 1), ""), start=1):
        if len(line) > cap:
            raise CnnkitError(f"{path}: line {number} is longer than {cap:,} characters (csv line bytes); set "
                              f"{env_name('csv_line_bytes')} to raise it")
        try:
            row = next(csv.reader([line]), [])
        except csv.Error as error:
            if "field limit" in str(error):
                raise CnnkitError(f"{path}: line {number} holds a field longer than {csv.field_size_limit():,} "
                                  "characters (the csv module's limit); expected numbers") from None
            raise CnnkitError(f"{path}: line {number} is not CSV ({error})") from None
        if not row:
            continue
        if not header_checked:
            header_checked = True
            if not _is_number(row[0]):
                continue  # a header such as label,pixel0,pixel1,...
        yield number, row


def _allocate(first: list[str], rows: int, path: Path) -> np.ndarray:
    """The float32 table for `rows` rows shaped like the first one, once its size is within the caps."""
    width = len(first)
    side = math.isqrt(max(width - 1, 0))
    if width < 2 or side * side != width - 1:
        raise CnnkitError(f"{path}: {width - 1} pixel columns do not form a square image")
    check_limit("array_elements", rows * width, f"{path}: values in up to {rows:,} rows of {width:,} columns")
    return np.empty((rows, width), dtype=np.float32)


def _fill(values: np.ndarray, count: int, row: list[str], line: int, path: Path) -> None:
    try:
        values[count] = row  # numpy parses the strings
    except ValueError:
        bad = next((v for v in row if not _is_number(v)), row[0])
        raise CnnkitError(f"{path}: line {line} holds a non-numeric value {bad[:20]!r}") from None


def _label(text: str, line: int, path: Path) -> int:
    """A CSV label as the whole number it names ('7', '7.0'), exactly; anything else is refused with its line."""
    try:
        value = int(text)
    except ValueError:
        number = float(text)  # numeric: _fill parsed the row already
        if not (math.isfinite(number) and number.is_integer()):
            raise CnnkitError(f"{path}: line {line} has label {text[:20]!r}; labels must be whole numbers") from None
        value = int(number)
    if not -2**63 <= value < 2**63:
        raise CnnkitError(f"{path}: line {line} has label {text[:30]!r}, beyond the 64-bit range labels may take")
    return value


def pixel_max(images: np.ndarray) -> float:
    """White's guessed value in a bare array, for showing it: 1.0 for arrays already in [0, 1], else 255. Training
    states or checks white (`cnnkit.train.white`); evaluate and predict take arrays in the model's own scale (see
    `cnnkit.analysis.inference.to_model_scale`)."""
    return 1.0 if largest(images) <= 1.0 else 255.0


def largest(images: np.ndarray) -> float:
    """An array's largest value (0 for an empty one)."""
    return float(images.max()) if images.size else 0.0


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True
