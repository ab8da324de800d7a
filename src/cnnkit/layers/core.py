"""Input, flatten, fully connected, dropout, activation and softmax output layers."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from cnnkit.core.errors import CnnkitError

Dense = nn.Linear  # a fully connected layer: y = x W^T + b
Dropout = nn.Dropout
ReLU = nn.ReLU


class Input(nn.Module):
    """Check a batch against the per-sample `shape` in `data_format` and hand it on as NCHW.

    `Input((8, 8, 1), data_format="NHWC")` accepts (N, 8, 8, 1) float tensors and returns (N, 1, 8, 8) (a
    channels-last view, no copy); `Input((1, 8, 8))` accepts NCHW. A dimension given as None accepts any size.
    """

    def __init__(self, shape: Sequence[int | None], data_format: str = "NCHW") -> None:
        super().__init__()
        if data_format not in ("NCHW", "NHWC"):
            raise CnnkitError(f"data_format must be 'NCHW' or 'NHWC'; received data_format={data_format!r}")
        if len(shape) != 3:
            layout = "C, H, W" if data_format == "NCHW" else "H, W, C"
            raise CnnkitError(f"Input shape is per sample, 3 numbers ({layout}); received shape={tuple(shape)}")
        self.shape, self.data_format = tuple(shape), data_format

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Validate and convert to NCHW."""
        layout = "N, " + ", ".join(self.data_format[1:])
        if x.dim() != 4:
            raise CnnkitError(f"expected a 4-D ({layout}) batch of shape (N, {self._shape_text()}); received shape "
                              f"{tuple(x.shape)}")
        if not x.is_floating_point():
            raise CnnkitError(
                f"expected a floating-point tensor; received dtype {x.dtype} (scale images to floats first)"
            )
        if any(want is not None and want != got for want, got in zip(self.shape, x.shape[1:], strict=True)):
            raise CnnkitError(f"expected input of shape (N, {self._shape_text()}) in {self.data_format}; received "
                              f"{tuple(x.shape)}")
        return x.permute(0, 3, 1, 2) if self.data_format == "NHWC" else x

    def _shape_text(self) -> str:
        return ", ".join("?" if s is None else str(s) for s in self.shape)

    def extra_repr(self) -> str:
        return f"shape={self.shape}, data_format={self.data_format!r}"


class Flatten(nn.Module):
    """Flatten (N, C, H, W) to (N, C*H*W) in NCHW order, or in NHWC order to reuse TensorFlow-trained FC weights."""

    def __init__(self, order: str = "NCHW") -> None:
        super().__init__()
        if order not in ("NCHW", "NHWC"):
            raise CnnkitError(f"Flatten order must be 'NCHW' or 'NHWC'; received order={order!r}")
        self.order = order

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Flatten all but the batch axis."""
        if self.order == "NHWC" and x.dim() == 4:
            x = x.permute(0, 2, 3, 1)
        return x.flatten(1)  # exports as one ONNX Flatten, free of shape arithmetic

    def extra_repr(self) -> str:
        return f"order={self.order!r}"


class SoftmaxOutput(nn.Module):
    """Softmax over classes: turns logits into probabilities (the article's output layer)."""

    def __init__(self, dim: int = 1) -> None:
        super().__init__()
        self.dim = dim

    def forward(self, logits: torch.Tensor) -> torch.Tensor:
        """Probabilities that sum to 1 along `dim`."""
        return torch.softmax(logits, dim=self.dim)
