"""The article's layer taxonomy as `nn.Module`s (NCHW inside, like PyTorch)."""

from cnnkit.layers.batchnorm import BatchNorm2d, batch_statistics, recompute_batchnorm_stats
from cnnkit.layers.branches import Branches, Fuse, Split, split_sizes
from cnnkit.layers.conv import Conv2d
from cnnkit.layers.core import Dense, Dropout, Flatten, Input, ReLU, SoftmaxOutput
from cnnkit.layers.lrn import LocalResponseNorm
from cnnkit.layers.pool import AvgPool2d, GlobalAvgPool2d, MaxPool2d

__all__ = [
    "AvgPool2d", "BatchNorm2d", "Branches", "Conv2d", "Dense", "Dropout", "Flatten", "Fuse", "GlobalAvgPool2d",
    "Input", "LocalResponseNorm", "MaxPool2d", "ReLU", "SoftmaxOutput", "Split", "batch_statistics",
    "recompute_batchnorm_stats", "split_sizes",
]
