"""Data: sources (digits, folders, IDX, CIFAR-10, NPZ, CSV), splits, preprocessing, augmentation, batches."""

from cnnkit.data.dataset import ImageDataset
from cnnkit.data.preprocess import Preprocessing
from cnnkit.data.sources import load_source
from cnnkit.data.split import Split, stratified_split

__all__ = ["ImageDataset", "Preprocessing", "Split", "load_source", "stratified_split"]
