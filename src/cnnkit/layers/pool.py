"""Max, average and global average pooling with TensorFlow-exact SAME semantics."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from cnnkit.core.arithmetic import Padding, pair
from cnnkit.core.errors import CnnkitError
from cnnkit.layers.padding import TFPadding
from cnnkit.tf import avg_pool_real_cells


class _Pool2d(TFPadding, nn.Module):
    def __init__(
        self, kernel_size: int | tuple[int, int], stride: int | tuple[int, int] | None = None,
        padding: Padding = "valid", input_size: int | tuple[int, int] | None = None,
    ) -> None:
        super().__init__()
        self.kernel_size = pair(kernel_size, "kernel_size")
        self.stride = pair(stride, "stride") if stride is not None else self.kernel_size
        self.padding = self.plan_padding(self.kernel_size, self.stride, (1, 1), padding, input_size)
        if self.tf_padding == "explicit" and (2 * self.padding[0] > self.kernel_size[0]
                                                or 2 * self.padding[1] > self.kernel_size[1]):
            raise CnnkitError(f"{type(self).__name__}: explicit padding {padding!r} must be at most half the "
                              f"kernel {self.kernel_size}")

    def extra_repr(self) -> str:
        return f"kernel_size={self.kernel_size}, stride={self.stride}, {self.padding_repr()}"


class MaxPool2d(_Pool2d):
    """Max pooling; SAME pads with -inf so a window never picks a padded cell. Stride defaults to the kernel."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Pool each feature map."""
        return F.max_pool2d(self.pad_input(x, float("-inf")), self.kernel_size, self.stride, self.padding)


class AvgPool2d(_Pool2d):
    """Average pooling; SAME divides by the real (unpadded) cells of each window, as TF does."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Pool each feature map."""
        pads = self.input_pads(x)
        if pads is None:  # no asymmetric/dynamic pad: torch's op is already exact (symmetric pads use torch rules)
            return F.avg_pool2d(x, self.kernel_size, self.stride, self.padding,
                                count_include_pad=self.tf_padding == "explicit")
        return avg_pool_real_cells(x, self.kernel_size, self.stride, pads)


class GlobalAvgPool2d(nn.Module):
    """Average each feature map to one number: (N, C, H, W) -> (N, C), or (N, C, 1, 1) with keepdim."""

    def __init__(self, keepdim: bool = False) -> None:
        super().__init__()
        self.keepdim = keepdim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Mean over H and W."""
        return x.mean(dim=(-2, -1), keepdim=self.keepdim)
