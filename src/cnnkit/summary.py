"""Counting what a model holds and does: parameters and multiply-adds of the real forward pass."""

from __future__ import annotations

import torch
from torch import nn


def count_parameters(model: nn.Module, trainable: bool = True) -> int:
    """Number of (trainable, or all) parameter values a model holds."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable)


def layer_macs(module: nn.Module, output: torch.Tensor) -> int:
    """Multiply-adds one sample costs in a conv or dense layer, from the output it produced."""
    if isinstance(module, nn.Conv2d):
        per_output = module.in_channels // module.groups * module.kernel_size[0] * module.kernel_size[1]
        return output[0].numel() * per_output
    if isinstance(module, nn.Linear):
        return output[0].numel() // module.out_features * module.in_features * module.out_features
    return 0


def count_macs(model: nn.Module, input_shape: tuple[int, ...], device: str | torch.device = "meta") -> int:
    """Multiply-adds of convs and dense layers for one (C, H, W) sample in eval mode, from a real forward.

    On the meta device (the default) only shapes flow, so counting ResNet-152 at 224x224 costs no arithmetic;
    the model is expected to live on `device`.
    """
    total = 0

    def hook(module: nn.Module, _inputs: tuple, output: torch.Tensor) -> None:
        nonlocal total
        total += layer_macs(module, output)

    handles = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            model(torch.zeros((1, *input_shape), device=device))
    finally:
        for handle in handles:
            handle.remove()
        model.train(was_training)
    return total
