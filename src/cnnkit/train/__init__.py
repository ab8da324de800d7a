"""The trainer: config, data preparation, fit / evaluate, the run directory, multi-process training."""

from cnnkit.train.config import TrainConfig, seed_recipe
from cnnkit.train.loop import RunResult, evaluate, fit, train_one_epoch

__all__ = ["RunResult", "TrainConfig", "evaluate", "fit", "seed_recipe", "train_one_epoch"]
