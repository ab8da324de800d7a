"""Read what Keras 3 writes: a `.keras` archive (config.json + model.weights.h5) or a bare `.weights.h5`.

Keras 3 files its variables by object path, not by layer name: `layers/<generated name>/vars/<i>`, where the
generated name is the layer class in snake case with a counter per class in the model's layer order (conv2d,
conv2d_1, batch_normalization, ...; keras/src/saving/saving_lib.py `_save_container_state`). The layer names of
config.json (conv1_conv, conv2_block1_0_conv) are not in the weights file; this module rebuilds the paths from
the config's layer order. Every size read from a file is capped before anything is inflated or allocated.
"""

from __future__ import annotations

import io
import json
import re
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from cnnkit.core.errors import CnnkitError
from cnnkit.core.limits import check_limit, limit
from cnnkit.data.safety import read_bytes

NESTED_MODELS = ("Sequential", "Functional", "Model")


@dataclass
class KerasLayer:
    """One layer of a Keras model: its config, the layers feeding it, and its variables in Keras' order."""

    name: str  # the layer's own name (config.json), or its object path name when the file has no config
    class_name: str  # Conv2D, BatchNormalization, ...
    config: dict
    inbound: list[str]  # names of the layers whose outputs it takes, in call order
    path: str  # where its variables live in the weights file: layers/conv2d_3
    variables: list[np.ndarray] = field(default_factory=list)


@dataclass
class KerasModel:
    """A Keras model as its files describe it."""

    layers: list[KerasLayer]  # config order (topological), or the weights file's own order without a config
    input_shape: tuple[int | None, int | None, int | None] | None  # (H, W, C) of the input when the config says
    output: str | None  # the output layer's name
    has_graph: bool  # False for a bare .weights.h5: layer kinds and order come from the object path names only
    source: Path


def read_keras(path: Path, config_path: Path | None = None) -> KerasModel:
    """A `.keras` archive or `.weights.h5` file (with an optional separate config) as a KerasModel."""
    config = None
    if path.suffix == ".keras":
        config, weights = read_archive(path)
    else:
        weights = read_bytes(path, limit=limit("file_bytes"))
    if config_path is not None:
        config = read_config(config_path)
    variables = read_variables(weights, path)
    if config is None:
        return _model_without_config(variables, path)
    model = model_from_config(config, path)
    for layer in model.layers:
        layer.variables = variables.pop(layer.path, [])
    stray = [name for name, arrays in variables.items() if arrays]
    if stray:
        raise CnnkitError(f"{path}: the weights file holds variables at {stray[0]!r} that no layer of the config "
                          "owns: the config is not this file's model")
    return model


def read_archive(path: Path) -> tuple[dict, bytes]:
    """(config, weights file bytes) of a .keras zip archive, refusing members that would inflate past the caps."""
    data = read_bytes(path, limit=limit("file_bytes"))
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            config = _parse_json(_member(archive, "config.json", "json_bytes", path), f"{path}: config.json")
            weights = _member(archive, "model.weights.h5", "decompressed_bytes", path)
    except (zipfile.BadZipFile, zipfile.LargeZipFile, NotImplementedError, EOFError, OSError) as error:
        raise CnnkitError(f"{path}: not a readable .keras archive ({error})") from None
    return config, weights


def _member(archive: zipfile.ZipFile, name: str, cap: str, path: Path) -> bytes:
    """One archive member, checked against cap `cap` by its declared size and again while it inflates."""
    try:
        info = archive.getinfo(name)
    except KeyError:
        raise CnnkitError(f"{path}: the .keras archive has no {name}") from None
    what = f"{path}: archive member {name} inflates to"
    check_limit(cap, info.file_size, what)
    chunks, size = [], 0
    with archive.open(info) as member:
        while chunk := member.read(1 << 20):
            size += len(chunk)
            check_limit(cap, size, what)  # a header may under-state its size
            chunks.append(chunk)
    return b"".join(chunks)


def read_config(path: Path) -> dict:
    """A model config: config.json from a .keras archive, the archive itself, or `model.to_json()` output."""
    if path.suffix == ".keras":
        return read_archive(path)[0]
    return _parse_json(read_bytes(path, limit=limit("json_bytes")), str(path))


def _parse_json(data: bytes, what: str) -> dict:
    try:
        config = json.loads(data)
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError) as error:
        raise CnnkitError(f"{what}: not valid JSON ({str(error).splitlines()[0]})") from None
    if not isinstance(config, dict):
        raise CnnkitError(f"{what}: expected a Keras model config (a JSON object), found {type(config).__name__}")
    return config


def read_variables(data: bytes, path: Path) -> dict[str, list[np.ndarray]]:
    """Object path (layers/conv2d) -> its variables, from Keras 3 weights-file bytes; array sizes are capped."""
    try:
        import h5py
    except ImportError:
        raise CnnkitError("reading Keras weights needs h5py: pip install 'cnnkit[interop]'") from None
    out: dict[str, list[np.ndarray]] = {}
    total = 0
    try:
        with h5py.File(io.BytesIO(data), "r") as file:
            if not isinstance(file.get("layers"), h5py.Group):
                raise CnnkitError(f"{path}: no 'layers' group: not a Keras 3 weights file")
            for name, group in file["layers"].items():
                if not isinstance(group, h5py.Group):
                    continue
                if isinstance(group.get("layers"), h5py.Group) and len(group["layers"]):
                    raise CnnkitError(f"{path}: layer {name!r} is a model nested inside the model; import the "
                                      "inner model on its own")
                arrays = []
                variables = group.get("vars")
                for index in range(len(variables) if isinstance(variables, h5py.Group) else 0):
                    dataset = variables.get(str(index))
                    if not isinstance(dataset, h5py.Dataset) or dataset.dtype.kind != "f":
                        raise CnnkitError(f"{path}: layers/{name}/vars/{index} is not a floating-point array")
                    check_limit("array_elements", dataset.size, f"{path}: layers/{name}/vars/{index} elements")
                    total = check_limit("parameters", total + dataset.size, f"{path}: values in all layers")
                    array = np.asarray(dataset[()], dtype=np.float32)
                    if not np.isfinite(array).all():
                        raise CnnkitError(f"{path}: layers/{name}/vars/{index} holds NaN or infinite values")
                    arrays.append(array)
                out[f"layers/{name}"] = arrays
    except CnnkitError:
        raise
    except Exception as error:  # noqa: BLE001 - h5py reports corrupt files with many exception types
        raise CnnkitError(f"{path}: not a readable Keras weights file ({type(error).__name__}: {error})") from None
    return out


def _model_without_config(variables: dict[str, list[np.ndarray]], path: Path) -> KerasModel:
    """Layers named by their object paths, ordered per class by Keras' counters (conv2d, conv2d_1, ...)."""
    def order(item: tuple[str, list]) -> tuple[str, int]:
        stem, number = re.fullmatch(r"layers/(.*?)(?:_(\d+))?", item[0]).groups()
        return stem, int(number or 0)

    layers = [KerasLayer(key.removeprefix("layers/"), "", {}, [], key, arrays)
              for key, arrays in sorted(variables.items(), key=order) if arrays]
    return KerasModel(layers, None, None, False, path)


def snake_case(name: str) -> str:
    """Keras' object path stem for a class name (BatchNormalization -> batch_normalization), as
    keras/src/utils/naming.py `to_snake_case`."""
    name = re.sub(r"\W+", "", name)
    name = re.sub("(.)([A-Z][a-z]+)", r"\1_\2", name)
    return re.sub("([a-z])([A-Z])", r"\1_\2", name).lower()


def model_from_config(config: dict, path: Path) -> KerasModel:
    """The layers of a Sequential or Functional config, with the object paths Keras files their variables by."""
    kind, body = config.get("class_name"), config.get("config")
    if kind not in NESTED_MODELS or not isinstance(body, dict) or not isinstance(body.get("layers"), list):
        raise CnnkitError(f"{path}: the config describes a {kind!r}, not a Sequential or Functional Keras model")
    entries = body["layers"]
    check_limit("parameters", len(entries), f"{path}: layers in the config")
    layers, counters = [], {}
    for index, entry in enumerate(entries):
        name, class_name, layer_config = _entry(entry, index, path)
        if class_name in NESTED_MODELS:
            raise CnnkitError(f"{path}: layer {name!r} is a {class_name} nested inside the model; import the inner "
                              "model on its own")
        stem = snake_case(class_name)
        counters[stem] = counters.get(stem, -1) + 1
        object_name = stem if counters[stem] == 0 else f"{stem}_{counters[stem]}"
        inbound = _inbound(entry, name, path) if kind != "Sequential" else ([layers[-1].name] if layers else [])
        layers.append(KerasLayer(name, class_name, layer_config, inbound, f"layers/{object_name}"))
    if kind == "Sequential":
        layers = [layer for layer in layers if layer.class_name != "InputLayer"]
        if layers:
            layers[0].inbound = []
        output = layers[-1].name if layers else None
    else:
        output = _single_endpoint(body.get("output_layers"), "output", path)
        _single_endpoint(body.get("input_layers"), "input", path)
    return KerasModel(layers, _input_shape(config, entries), output, True, path)


def _entry(entry: object, index: int, path: Path) -> tuple[str, str, dict]:
    """(name, class name, config) of one layer entry, refusing malformed ones."""
    if not isinstance(entry, dict) or not isinstance(entry.get("class_name"), str) \
            or not isinstance(entry.get("config"), dict) or not isinstance(entry["config"].get("name"), str):
        raise CnnkitError(f"{path}: layer {index} of the config is malformed (expected class_name and a config "
                          "with a name)")
    return entry["config"]["name"], entry["class_name"], entry["config"]


def _inbound(entry: dict, name: str, path: Path) -> list[str]:
    """Names of the layers a Functional layer is called on (Keras 3 `__keras_tensor__` args)."""
    nodes = entry.get("inbound_nodes") or []
    if not isinstance(nodes, list):
        raise CnnkitError(f"{path}: layer {name!r} has malformed inbound_nodes")
    if len(nodes) > 1:
        raise CnnkitError(f"{path}: layer {name!r} is called {len(nodes)} times (a shared layer); cnnkit models "
                          "share no layers")
    found: list[str] = []

    def collect(value: object) -> None:
        if isinstance(value, dict):
            history = value.get("config", {}).get("keras_history") if value.get("class_name") == \
                "__keras_tensor__" and isinstance(value.get("config"), dict) else None
            if isinstance(history, list) and history and isinstance(history[0], str):
                found.append(history[0])
        elif isinstance(value, list):
            for item in value:
                collect(item)

    try:
        for node in nodes:
            collect(node.get("args", []) if isinstance(node, dict) else node)
    except RecursionError:
        raise CnnkitError(f"{path}: layer {name!r} has inbound_nodes nested too deeply") from None
    return found


def _single_endpoint(value: object, what: str, path: Path) -> str:
    """The one input/output layer name of a Functional config ([name, 0, 0] or [[name, 0, 0]])."""
    if isinstance(value, list) and len(value) == 1 and isinstance(value[0], list):
        value = value[0]
    if not (isinstance(value, list) and value and isinstance(value[0], str)):
        raise CnnkitError(f"{path}: cnnkit models have one {what}; the config lists {value!r}")
    return value[0]


def _input_shape(config: dict, entries: list) -> tuple[int | None, ...] | None:
    """(H, W, C) of the model input from the InputLayer's batch_shape or the model's build config."""
    shapes = [entry["config"].get("batch_shape") or entry["config"].get("batch_input_shape")
              for entry in entries if entry.get("class_name") == "InputLayer"]
    build = config.get("build_config")
    if not shapes and isinstance(build, dict):
        shapes = [build.get("input_shape")]
    shape = shapes[0] if shapes else None
    if isinstance(shape, list) and len(shape) == 4 and all(s is None or isinstance(s, int) for s in shape[1:]):
        return tuple(shape[1:])
    return None
