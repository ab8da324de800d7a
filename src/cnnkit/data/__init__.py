"""Data: sources (digits, folders, IDX, CIFAR-10, NPZ, CSV), splits, preprocessing, augmentation, batches.

Names are imported on first use (PEP 562), so light modules (the preprocessing kinds) import without torch.
"""

from importlib import import_module

_HOMES = {"ImageDataset": "cnnkit.data.dataset", "Preprocessing": "cnnkit.data.preprocess",
          "load_source": "cnnkit.data.sources", "Split": "cnnkit.data.split",
          "stratified_split": "cnnkit.data.split"}
__all__ = sorted(_HOMES)


def __getattr__(name: str) -> object:
    if name in _HOMES:
        return getattr(import_module(_HOMES[name]), name)
    raise AttributeError(f"module 'cnnkit.data' has no attribute {name!r}")
