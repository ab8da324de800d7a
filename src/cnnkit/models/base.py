"""The shape every cnnkit model shares: forward = forward_head(forward_features(x))."""

from __future__ import annotations

import torch
from torch import nn


class Classifier(nn.Module):
    """Base for the zoo: `features` (N, C, H, W) -> feature maps, `head` feature maps -> logits."""

    features: nn.Module
    head: nn.Module

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """The convolutional part: the last feature maps, for visualisation, summaries and export."""
        return self.features(x)

    def forward_head(self, x: torch.Tensor) -> torch.Tensor:
        """Feature maps -> class logits."""
        return self.head(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Class logits for a (N, C, H, W) batch."""
        return self.forward_head(self.forward_features(x))


def init_kaiming(model: nn.Module) -> None:
    """He initialisation for convs and dense layers (ReLU networks), zero biases, BN at gamma 1 / beta 0."""
    for module in model.modules():
        if isinstance(module, (nn.Conv2d, nn.Linear)):
            nn.init.kaiming_normal_(module.weight, mode="fan_out" if isinstance(module, nn.Conv2d) else "fan_in",
                                    nonlinearity="relu")
            if module.bias is not None:
                nn.init.zeros_(module.bias)
