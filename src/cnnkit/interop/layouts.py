"""TensorFlow / Keras tensor layouts -> PyTorch's: conv and dense kernels, flatten order, BN momentum."""

from __future__ import annotations

import numpy as np
import torch

from cnnkit.core.errors import CnnkitError


def conv_kernel_from_tf(kernel: np.ndarray) -> torch.Tensor:
    """[h, w, in, out] -> (out, in, h, w)."""
    return torch.from_numpy(np.ascontiguousarray(np.transpose(kernel, (3, 2, 0, 1)))).float()


def dense_kernel_from_tf(kernel: np.ndarray, nhwc_shape: tuple[int, int, int] | None = None) -> torch.Tensor:
    """(in, out) -> (out, in); with `nhwc_shape` = (H, W, C) of the flattened maps, also reorder the inputs from
    TF's NHWC flatten order to PyTorch's NCHW order, so a cnnkit Flatten() (NCHW) gives identical outputs."""
    weight = np.asarray(kernel)
    if nhwc_shape is not None:
        h, w, c = nhwc_shape
        if weight.shape[0] != h * w * c:
            raise CnnkitError(f"dense kernel has {weight.shape[0]} inputs; {h}x{w}x{c} maps flatten to {h * w * c}")
        weight = weight.reshape(h, w, c, -1).transpose(2, 0, 1, 3).reshape(h * w * c, -1)
    return torch.from_numpy(np.ascontiguousarray(weight.T)).float()


def keras_momentum_to_torch(momentum: float) -> float:
    """Keras' moving-average decay (0.99) -> PyTorch's update weight (0.01)."""
    return 1.0 - momentum
