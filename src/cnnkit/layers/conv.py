"""Convolution layer with TensorFlow-exact SAME/VALID padding, weights in PyTorch's OIHW layout."""

from __future__ import annotations

import torch
from torch import nn

from cnnkit.arithmetic import Padding, pair
from cnnkit.layers.padding import TFPadding


class Conv2d(TFPadding, nn.Conv2d):
    """2-D convolution; padding 'same' | 'valid' | int | (h, w), TF-exact SAME for any stride and input size.

    Args:
        in_channels, out_channels: input and output depth.
        kernel_size, stride, dilation: an int or an (h, w) pair.
        padding: 'same' (out = ceil(in / stride), extra cell bottom/right), 'valid', or explicit symmetric pads.
        groups, bias: as in `torch.nn.Conv2d`.
        input_size: (H, W) of the input, when known: makes a strided SAME pad static (clean ONNX export).
    """

    def __init__(
        self, in_channels: int, out_channels: int, kernel_size: int | tuple[int, int],
        stride: int | tuple[int, int] = 1, padding: Padding = "same", dilation: int | tuple[int, int] = 1,
        groups: int = 1, bias: bool = True, input_size: int | tuple[int, int] | None = None,
    ) -> None:
        kernel, step, dil = pair(kernel_size, "kernel_size"), pair(stride, "stride"), pair(dilation, "dilation")
        nn.Conv2d.__init__(self, in_channels, out_channels, kernel, step, 0, dil, groups, bias)
        self.padding = self.plan_padding(kernel, step, dil, padding, input_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Pad (if the plan needs it) and convolve."""
        return self._conv_forward(self.pad_input(x), self.weight, self.bias)

    def extra_repr(self) -> str:
        """Show TF padding instead of torch's symmetric pad."""
        return super().extra_repr().replace(f"padding={self.padding}", self.padding_repr())
