"""Why a network decided: saliency maps and Grad-CAM for one image and one class.

Saliency (Simonyan, Vedaldi & Zisserman 2014, "Deep inside convolutional networks", section 3) is the gradient of
the class score (the logit, before softmax) with respect to the model's input, shown as the largest absolute
value over channels. Grad-CAM (Selvaraju et al. 2017, equations 1-2) weights each map A_k of a convolutional layer
by the mean gradient of the class score over that map, sums, and keeps the positive part: ReLU(sum_k a_k A_k).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from cnnkit.core.errors import CnnkitError
from cnnkit.models import main_logits


def _check_class(logits: torch.Tensor, target: int) -> None:
    if not 0 <= target < logits.shape[1]:
        raise CnnkitError(f"class index {target} is out of range; the model has {logits.shape[1]} classes "
                          f"(0..{logits.shape[1] - 1})")


def input_gradient(model: nn.Module, x: torch.Tensor, target: int) -> torch.Tensor:
    """d logit[target] / d input for one (1, C, H, W) model input, as (C, H, W); the model is left in eval mode."""
    model.eval()
    x = x.detach().clone().requires_grad_(True)
    logits = main_logits(model(x))
    _check_class(logits, target)
    (gradient,) = torch.autograd.grad(logits[0, target], x)
    return gradient[0]


def saliency_map(gradient: torch.Tensor) -> torch.Tensor:
    """(C, H, W) input gradient -> (H, W): the largest absolute value over channels."""
    return gradient.abs().amax(dim=0)


def grad_cam(model: nn.Module, x: torch.Tensor, target: int, layer: str) -> torch.Tensor:
    """Grad-CAM of class `target` on the named layer's output for one (1, C, H, W) input, as (h, w)."""
    module = dict(model.named_modules()).get(layer) if layer else None
    if module is None:
        raise CnnkitError(f"no layer named {layer!r} for Grad-CAM")
    held: dict[str, torch.Tensor] = {}

    def keep(_module: nn.Module, _inputs: tuple, output: torch.Tensor) -> torch.Tensor:
        held.setdefault("maps", output)
        return output.clone()  # later in-place ops (ReLU) change the copy, never the maps we differentiate by

    model.eval()
    handle = module.register_forward_hook(keep)
    try:
        logits = main_logits(model(x.detach().clone().requires_grad_(True)))  # a graph even for frozen weights
    finally:
        handle.remove()
    maps = held.get("maps")
    if maps is None or maps.dim() != 4:
        raise CnnkitError(f"Grad-CAM needs a layer with (N, C, H, W) maps; {layer!r} gives "
                          f"{'nothing' if maps is None else tuple(maps.shape)}")
    _check_class(logits, target)
    (gradient,) = torch.autograd.grad(logits[0, target], maps)
    weights = gradient[0].mean(dim=(1, 2))  # a_k: the global average of the class gradient over map k
    return torch.relu(torch.einsum("k,khw->hw", weights, maps[0].detach()))


def upsample(heat: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """An (h, w) map stretched bilinearly to the input's (H, W), as Grad-CAM overlays it."""
    return F.interpolate(heat[None, None], size=size, mode="bilinear", align_corners=False)[0, 0]
