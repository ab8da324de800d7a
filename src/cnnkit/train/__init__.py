"""The trainer: config, data preparation, fit / evaluate, the run directory, multi-process training.

Names are imported on first use (PEP 562), so `cnnkit --help` can read the config's choices without torch.
"""

from importlib import import_module

_HOMES = {"TrainConfig": "cnnkit.train.config", "seed_recipe": "cnnkit.train.config",
          "RunResult": "cnnkit.train.loop", "evaluate": "cnnkit.train.evaluation", "fit": "cnnkit.train.loop",
          "train_one_epoch": "cnnkit.train.loop"}
__all__ = sorted(_HOMES)


def __getattr__(name: str) -> object:
    if name in _HOMES:
        return getattr(import_module(_HOMES[name]), name)
    raise AttributeError(f"module 'cnnkit.train' has no attribute {name!r}")
