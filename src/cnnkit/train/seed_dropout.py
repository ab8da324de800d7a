"""Dropout for several seeds trained as one batched computation, with the masks each seed's single run draws.

A single run seeds the global generator at each epoch and its dropout layers draw their masks from it, step by
step, in the order the forward pass meets them. Inside `vmap` every seed would share one random stream, so
instead each seed gets its own generator seeded as its single run seeds the global one, the masks are drawn
outside the batched call in the same order and shapes, and the dropout layers of the batched model multiply by
them exactly as PyTorch's CPU dropout does (mask / (1 - p), then times the input).
"""

from __future__ import annotations

import torch
from torch import nn


class MaskedDropout(nn.Module):
    """nn.Dropout whose mask comes from outside (a buffer each step fills), so vmap needs no randomness."""

    def __init__(self, p: float) -> None:
        super().__init__()
        self.p = p
        self.register_buffer("mask", torch.empty(0), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Scaled mask times x in training (the mask is this seed's slice), x itself in eval."""
        if not self.training or self.p == 0.0:
            return x
        return x * (self.mask / (1.0 - self.p))


def mask_dropout(template: nn.Module) -> list[tuple[str, float]]:
    """Replace every nn.Dropout of `template` by a MaskedDropout; (name, p) of each, in module order."""
    replaced = []
    for name, module in list(template.named_modules()):
        if isinstance(module, nn.Dropout):
            parent, _, leaf = name.rpartition(".")
            setattr(template.get_submodule(parent), leaf, MaskedDropout(module.p))
            replaced.append((name, module.p))
    return replaced


def dropout_inputs(template: nn.Module, batch_shape: tuple[int, ...]) -> list[tuple[str, float, torch.Size]]:
    """(name, p, input shape) of each nn.Dropout call of one training forward pass of a batch, in call order.

    `template` is a throwaway copy on the meta device: training mode reaches every dropout (GoogLeNet's auxiliary
    heads run only in training), and nothing real is computed or changed."""
    names = {module: name for name, module in template.named_modules() if isinstance(module, nn.Dropout)}
    calls: list[tuple[str, float, torch.Size]] = []
    hooks = [m.register_forward_pre_hook(lambda m, args: calls.append((names[m], m.p, args[0].shape)))
             for m in names]
    try:
        template.train()
        template(torch.empty(batch_shape, device="meta"))
    finally:
        for hook in hooks:
            hook.remove()
    return calls


def draw_masks(calls: list[tuple[str, float, torch.Size]], generators: list[torch.Generator]) -> dict:
    """{name.mask: (seeds, *shape)} masks, seed k's drawn from generators[k] as its single run's dropout draws."""
    masks: dict[str, list[torch.Tensor]] = {}
    for generator in generators:
        for name, p, shape in calls:
            masks.setdefault(f"{name}.mask", []).append(torch.empty(shape).bernoulli_(1.0 - p, generator=generator))
    return {key: torch.stack(values) for key, values in masks.items()}
