"""The trainer: config, data preparation, fit / evaluate, checkpoints, multi-process training."""

from cnnkit.train.checkpoint import load_checkpoint, model_from_checkpoint, save_checkpoint
from cnnkit.train.config import TrainConfig, seed_recipe
from cnnkit.train.loop import RunResult, evaluate, fit, train_one_epoch

__all__ = ["RunResult", "TrainConfig", "evaluate", "fit", "load_checkpoint", "model_from_checkpoint",
           "save_checkpoint", "seed_recipe", "train_one_epoch"]
