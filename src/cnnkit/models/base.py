"""The shape every cnnkit model shares: forward = forward_head(forward_features(x)), and what forward returns.

The output contract: `forward` returns logits (N, classes), except that a model with auxiliary classifiers
(GoogLeNet) returns `TrainingOutputs` in training mode: its main logits, the auxiliary logits, and the weight
their losses get. Trainers, losses and the compiled step read outputs only through `main_logits` and
`auxiliary_logits`, never by naming a model family.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import nn


class TrainingOutputs(NamedTuple):
    """Training-mode output of a model with auxiliary classifiers."""

    logits: torch.Tensor
    auxiliary: tuple[torch.Tensor, ...]
    aux_weight: float  # each auxiliary loss is added to the main loss times this


def main_logits(output: torch.Tensor | TrainingOutputs) -> torch.Tensor:
    """The logits that predictions and accuracy are measured on."""
    return output.logits if isinstance(output, TrainingOutputs) else output


def auxiliary_logits(output: torch.Tensor | TrainingOutputs) -> tuple[tuple[torch.Tensor, ...], float]:
    """(auxiliary logits, their loss weight); empty for a plain logits tensor."""
    return (output.auxiliary, output.aux_weight) if isinstance(output, TrainingOutputs) else ((), 0.0)


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
    """He initialisation for convs and dense layers (ReLU networks), zero biases, BN at gamma 1 / beta 0.

    Models built on the meta device (shapes only, to size them before allocating) are left alone: there is
    nothing to initialise, and random init on meta tensors would import torch's reference ops (seconds).
    """
    for module in model.modules():
        if isinstance(module, (nn.Conv2d, nn.Linear)) and not module.weight.is_meta:
            nn.init.kaiming_normal_(module.weight, mode="fan_out" if isinstance(module, nn.Conv2d) else "fan_in",
                                    nonlinearity="relu")
            if module.bias is not None:
                nn.init.zeros_(module.bias)
