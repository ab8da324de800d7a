"""Convolution layer with TensorFlow-exact SAME/VALID padding, weights in PyTorch's OIHW layout."""

from __future__ import annotations

import torch
import torch.nn.functional as F
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
        self.im2col = False  # set by the compiled trainer for tiny convs: gather + matmul beats oneDNN there

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Pad (if the plan needs it) and convolve."""
        x = self.pad_input(x)
        if self.im2col and self.groups == 1:
            return conv_as_matmul(x, self.weight, self.bias, self.stride, self.dilation, self.padding)
        return self._conv_forward(x, self.weight, self.bias)

    def extra_repr(self) -> str:
        """Show TF padding instead of torch's symmetric pad."""
        return super().extra_repr().replace(f"padding={self.padding}", self.padding_repr())


def conv_as_matmul(
    x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, stride: tuple[int, int],
    dilation: tuple[int, int], padding: tuple[int, int],
) -> torch.Tensor:
    """The same convolution as one gather of input patches and one matrix product (im2col).

    Under torch.compile the gather and its backward (a scatter-add) become generated loops and the product one
    small GEMM, which on tiny maps (8x8 digits) costs a fraction of a oneDNN convolution call.
    """
    if padding != (0, 0):
        x = F.pad(x, (padding[1], padding[1], padding[0], padding[0]))
    n, c, h, w = x.shape
    out_ch, _, kh, kw = weight.shape
    ho = (h - (kh - 1) * dilation[0] - 1) // stride[0] + 1
    wo = (w - (kw - 1) * dilation[1] - 1) // stride[1] + 1
    rows = torch.arange(ho, device=x.device)[:, None] * stride[0] + torch.arange(kh, device=x.device) * dilation[0]
    cols = torch.arange(wo, device=x.device)[:, None] * stride[1] + torch.arange(kw, device=x.device) * dilation[1]
    channel = torch.arange(c, device=x.device) * (h * w)
    # index[(i, j), (ch, a, b)] = ch*h*w + rows[i, a]*w + cols[j, b]
    index = (channel[None, None, :, None, None] + rows[:, None, None, :, None] * w + cols[None, :, None, None, :])
    patches = x.reshape(n, c * h * w)[:, index.reshape(ho * wo, c * kh * kw)]  # (N, L, C*kh*kw)
    out = patches @ weight.reshape(out_ch, -1).t()
    if bias is not None:
        out = out + bias
    return out.transpose(1, 2).reshape(n, out_ch, ho, wo)
