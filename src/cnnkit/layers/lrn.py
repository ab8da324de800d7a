"""Local response normalisation across neighbouring feature maps, with the article's / AlexNet's formula."""

from __future__ import annotations

import torch
from torch import nn

from cnnkit import tf
from cnnkit.core.errors import CnnkitError


class LocalResponseNorm(nn.Module):
    """b[i] = a[i] / (k + alpha * sum_{j=max(0, i-n/2)}^{min(N-1, i+n/2)} a[j]^2) ** beta (AlexNet, section 3.3).

    `alpha` is NOT divided by n (PyTorch's `nn.LocalResponseNorm` divides it); `size` (n) must be odd so the
    window is centred. Conversions: TF's `depth_radius` = n // 2 with the same alpha, bias = k; PyTorch's
    alpha = alpha * n. See `to_tf`, `from_tf`, `to_torch`, `from_torch`.
    """

    def __init__(self, size: int = 5, alpha: float = 1e-4, beta: float = 0.75, k: float = 2.0) -> None:
        super().__init__()
        if not isinstance(size, int) or size < 1 or size % 2 == 0:
            raise CnnkitError(
                f"LocalResponseNorm size must be a positive odd int (a centred window); received size={size!r}"
            )
        self.size, self.alpha, self.beta, self.k = size, alpha, beta, k

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Normalise (N, C, H, W) features across channels."""
        return tf.local_response_normalization(x, self.size // 2, self.k, self.alpha, self.beta, data_format="NCHW")

    def to_tf(self) -> dict:
        """Arguments for `tf.nn.local_response_normalization` that compute the same function."""
        return {"depth_radius": self.size // 2, "bias": self.k, "alpha": self.alpha, "beta": self.beta}

    @classmethod
    def from_tf(
        cls, depth_radius: int = 5, bias: float = 1.0, alpha: float = 1.0, beta: float = 0.5,
    ) -> LocalResponseNorm:
        """The layer equal to TF's LRN with these arguments (TF's defaults by default)."""
        return cls(size=2 * depth_radius + 1, alpha=alpha, beta=beta, k=bias)

    def to_torch(self) -> nn.LocalResponseNorm:
        """The equal `torch.nn.LocalResponseNorm` (which divides alpha by the window size)."""
        return nn.LocalResponseNorm(self.size, alpha=self.alpha * self.size, beta=self.beta, k=self.k)

    @classmethod
    def from_torch(cls, module: nn.LocalResponseNorm) -> LocalResponseNorm:
        """The layer equal to a `torch.nn.LocalResponseNorm` of odd size."""
        return cls(size=module.size, alpha=module.alpha / module.size, beta=module.beta, k=module.k)

    def extra_repr(self) -> str:
        return f"size={self.size}, alpha={self.alpha}, beta={self.beta}, k={self.k}"
