"""Which files in a folder are a cnnkit run's own: what `--overwrite` may replace, and what it must leave alone.

A file that only shares a run file's name (a user's own config.json or metrics.jsonl, imported weights saved as
best) is the user's: a folder holding one is refused, even with --overwrite, and nothing in it is touched.
"""

from __future__ import annotations

from pathlib import Path

from cnnkit.core.errors import CnnkitError
from cnnkit.data.safety import read_bytes
from cnnkit.store.checkpoint import read_metadata
from cnnkit.store.metadata import checkpoint_meta, parse_json, read_metrics
from cnnkit.train.config import TrainConfig

RUN_FILES = ("config.json", "metrics.jsonl", "last.json", "last.safetensors", "best.json", "best.safetensors")
ANCHORS = ("config.json", "last.json", "last.safetensors", "best.json", "best.safetensors")  # each: a run's alone


def foreign(folder: Path, existing: list[str]) -> list[str]:
    """Of the run files `existing` in `folder`, those that are not a cnnkit run's: all of them when none is
    recognisably a run's (a config.json of training settings, a checkpoint with a training run's metadata), else
    those that fail their own check (a metrics.jsonl of other records beside a real run)."""
    own = {name for name in existing if is_run_file(folder, name)}
    if not own & set(ANCHORS):
        return list(existing)
    return [name for name in existing if name not in own]


def run_path(out: str | Path | None) -> Path | None:
    """A run's folder from `out`; None for no folder. An empty string is refused: as a Path it is the current
    folder, and a run would write its files among whatever is there."""
    if isinstance(out, str) and not out:
        raise CnnkitError("out is '' (an empty path); pass a folder for the run, or None to keep no files")
    return None if out is None else Path(out)


def is_run_file(folder: Path, name: str) -> bool:
    """Whether FOLDER/NAME is what cnnkit writes there: config.json training settings, metrics.jsonl epoch and
    final records, a checkpoint (tensors or JSON copy) whose metadata is a training run's."""
    path = folder / name
    try:
        if not path.is_file():
            return False
        if name == "config.json":  # cnnkit writes every setting: a few that validate may be anyone's
            values = parse_json(read_bytes(path, cap="json_bytes"), path)
            TrainConfig.from_dict(values, str(path))
            return isinstance(values, dict) and {"model", "data", "epochs", "lr"} <= values.keys()
        if name == "metrics.jsonl":
            return all("epoch" in record or "final" in record for record in read_metrics(path)[0])
        if name.endswith(".json"):
            meta = checkpoint_meta(parse_json(read_bytes(path, cap="json_bytes"), path), path).config
        else:  # the tensors file's own header (files of early versions: their JSON copy holds it)
            meta = read_metadata(path.with_suffix("")).get("config")
        return meta is not None
    except (CnnkitError, OSError, ValueError, TypeError):
        return False
