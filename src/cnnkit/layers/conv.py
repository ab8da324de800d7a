"""Convolution layer with TensorFlow-exact SAME/VALID padding, weights in PyTorch's OIHW layout."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from cnnkit.core.arithmetic import Padding, pair
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
    """The same convolution as one matrix product over shifted copies of the input (im2col), batch innermost.

    Patches are laid out (C * kh * kw, Ho, Wo, N): every read and write runs along the batch, so the compiled
    graph's copy loops (and their backward, a sum of shifted slices) are plain vector loops, and the product is
    one GEMM of (out channels, C * kh * kw) by that matrix. The result is an (N, O, Ho, Wo) view of that layout.
    """
    if padding != (0, 0):
        x = F.pad(x, (padding[1], padding[1], padding[0], padding[0]))
    n, c, h, w = x.shape
    out_ch, _, kh, kw = weight.shape
    (sh, sw), (dh, dw) = stride, dilation
    ho = (h - (kh - 1) * dh - 1) // sh + 1
    wo = (w - (kw - 1) * dw - 1) // sw + 1
    batch_last = x.permute(1, 2, 3, 0)  # (C, H, W, N)
    shifted = [batch_last[:, a * dh:a * dh + (ho - 1) * sh + 1:sh, b * dw:b * dw + (wo - 1) * sw + 1:sw]
               for a in range(kh) for b in range(kw)]
    patches = torch.stack(shifted, 1).reshape(c * kh * kw, ho * wo * n)
    out = (weight.reshape(out_ch, -1) @ patches).view(out_ch, ho, wo, n)
    if bias is not None:
        out = out + bias.view(-1, 1, 1, 1)
    return out.permute(3, 0, 1, 2)
