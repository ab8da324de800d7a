"""What a model holds and costs, counted from the model itself: parameters, multiply-adds, a models-table row."""

from __future__ import annotations

import torch
from torch import nn

from cnnkit.core.arithmetic import conv_macs, dense_macs
from cnnkit.models.registry import get_model, model_info


def count_parameters(model: nn.Module, trainable: bool = True) -> int:
    """Number of (trainable, or all) parameter values a model holds."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable)


def layer_macs(module: nn.Module, output: torch.Tensor) -> int:
    """Multiply-adds one sample costs in a conv or dense layer, from the output it produced."""
    if isinstance(module, nn.Conv2d):
        (kh, kw), (out_h, out_w) = module.kernel_size, output.shape[-2:]
        return conv_macs(kh, kw, module.in_channels, module.out_channels, out_h, out_w, module.groups)
    if isinstance(module, nn.Linear):
        positions = output[0].numel() // module.out_features  # a dense layer applied at every leading position
        return positions * dense_macs(module.in_features, module.out_features)
    return 0


def inference_parameters(model: nn.Module) -> int:
    """Trainable parameters of the inference path, `features` then `head` (the Classifier contract): modules
    outside it, such as GoogLeNet's auxiliary classifiers, run only in training."""
    return count_parameters(model.features) + count_parameters(model.head)


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
    forward_once(model, input_shape, device, handles)
    return total


def forward_once(model: nn.Module, input_shape: tuple[int, ...], device, handles: list) -> None:
    """One zero image through the model in eval mode; then remove `handles` and restore the mode."""
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            model(torch.zeros((1, *input_shape), device=device))
    finally:
        for handle in handles:
            handle.remove()
        model.train(was_training)


def model_row(name: str) -> dict:
    """A registered model's row of the models table, counted from the model built on the meta device (shapes only:
    no arithmetic, no memory for VGG's 138 M weights): name, paper, trainable parameters (all, and in the
    inference path), default input size and classes."""
    info = model_info(name)
    with torch.device("meta"):
        model = get_model(name)
    return {"name": name, "paper": info.paper, "parameters": count_parameters(model),
            "inference_parameters": inference_parameters(model), "input_size": "x".join(map(str, info.input_size)),
            "num_classes": info.num_classes}
