"""VGG configurations A-E (Simonyan & Zisserman 2015, Table 1), with and without batch normalisation."""

from __future__ import annotations

import math

from torch import nn

from cnnkit import layers
from cnnkit.core.arithmetic import output_size
from cnnkit.models.base import Classifier, init_kaiming
from cnnkit.models.registry import register_model, sgd_recipe

# Numbers are 3x3 conv depths, "1:N" a 1x1 conv of depth N (configuration C), "M" a 2x2/2 max pool.
CFGS: dict[str, list[int | str]] = {
    "A": [64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"],
    "B": [64, 64, "M", 128, 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"],
    "C": [64, 64, "M", 128, 128, "M", 256, 256, "1:256", "M", 512, 512, "1:512", "M", 512, 512, "1:512", "M"],
    "D": [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"],
    "E": [64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M", 512, 512, 512, 512, "M", 512, 512, 512, 512, "M"],
}


def make_layers(cfg: list[int | str], in_channels: int, batch_norm: bool, max_pools: int,
                width: int = 64) -> nn.Sequential:
    """Build the conv stack; pools past `max_pools` are left out so small inputs never shrink below 1x1. Depths
    scale by `width` / 64."""
    stack, pools = nn.Sequential(), 0
    for item in cfg:
        if item == "M":
            if pools < max_pools:
                stack.append(layers.MaxPool2d(2, 2))
            pools += 1
            continue
        kernel, depth = (1, int(item[2:])) if isinstance(item, str) else (3, item)
        depth = depth * width // 64
        stack.append(layers.Conv2d(in_channels, depth, kernel, padding=kernel // 2))
        if batch_norm:
            stack.append(layers.BatchNorm2d(depth, eps=1e-5))
        stack.append(nn.ReLU(inplace=True))
        in_channels = depth
    return stack


class VGG(Classifier):
    """A VGG configuration: conv stack, then FC 4096 -> FC 4096 -> classes with dropout 0.5.

    Small-input rule: with fewer than 2**5 pixels on a side, only floor(log2(min(H, W))) pools are kept (the
    last ones are dropped), so 8x8 digits end as 512@1x1. `width` is the first conv's depth (64; every depth
    scales with it) and `fc_width` the hidden fully connected layers' (4096).
    """

    def __init__(self, cfg: str, num_classes: int, in_channels: int, input_size: tuple[int, int],
                 batch_norm: bool = False, dropout: float = 0.5, width: int = 64, fc_width: int = 4096) -> None:
        super().__init__()
        pools = min(5, int(math.log2(min(input_size))))
        self.features = make_layers(CFGS[cfg], in_channels, batch_norm, pools, width)
        h, w = input_size
        for _ in range(pools):  # each kept 2x2/2 max pool
            h, w = output_size(h, 2, 2), output_size(w, 2, 2)
        self.head = nn.Sequential(
            layers.Flatten(), nn.Linear(512 * width // 64 * h * w, fc_width), nn.ReLU(inplace=True),
            nn.Dropout(dropout), nn.Linear(fc_width, fc_width), nn.ReLU(inplace=True), nn.Dropout(dropout),
            nn.Linear(fc_width, num_classes),
        )
        init_kaiming(self)

    def torchvision_options(self, keys: set[str]) -> dict:
        """No options needed: torchvision's VGG is this one (at 224x224, where all five pools are kept)."""
        return {}

    def torchvision_names(self) -> dict[str, str]:
        """torchvision's module names -> this model's (torchvision/models/vgg.py: features.I as here, since both
        stacks list conv, [BN,] ReLU and pools in the same order; classifier.0/3/6 are head.1/4/7)."""
        names = {f"features.{i}": f"features.{i}" for i, module in enumerate(self.features)
                 if isinstance(module, (nn.Conv2d, layers.BatchNorm2d))}
        dense = [i for i, module in enumerate(self.head) if isinstance(module, nn.Linear)]
        names.update({f"classifier.{theirs}": f"head.{i}" for theirs, i in zip((0, 3, 6), dense, strict=True)})
        return names


def _paper(cfg: str, batch_norm: bool) -> str:
    return f"Simonyan & Zisserman 2015, configuration {cfg}" + (" with batch norm" if batch_norm else "")


@register_model("vgg11", paper=_paper("A", False), input_size=(3, 224, 224), recipe=sgd_recipe(0.01))
def vgg11(num_classes: int, in_channels: int, input_size: tuple[int, int], width: int = 64,
          fc_width: int = 4096) -> VGG:
    """VGG configuration A."""
    return VGG("A", num_classes, in_channels, input_size, batch_norm=False, width=width, fc_width=fc_width)


@register_model("vgg11_bn", paper=_paper("A", True), input_size=(3, 224, 224), recipe=sgd_recipe(0.05))
def vgg11_bn(num_classes: int, in_channels: int, input_size: tuple[int, int], width: int = 64,
             fc_width: int = 4096) -> VGG:
    """VGG configuration A with batch norm after every conv."""
    return VGG("A", num_classes, in_channels, input_size, batch_norm=True, width=width, fc_width=fc_width)


@register_model("vgg13", paper=_paper("B", False), input_size=(3, 224, 224), recipe=sgd_recipe(0.01))
def vgg13(num_classes: int, in_channels: int, input_size: tuple[int, int], width: int = 64,
          fc_width: int = 4096) -> VGG:
    """VGG configuration B."""
    return VGG("B", num_classes, in_channels, input_size, batch_norm=False, width=width, fc_width=fc_width)


@register_model("vgg13_bn", paper=_paper("B", True), input_size=(3, 224, 224), recipe=sgd_recipe(0.05))
def vgg13_bn(num_classes: int, in_channels: int, input_size: tuple[int, int], width: int = 64,
             fc_width: int = 4096) -> VGG:
    """VGG configuration B with batch norm after every conv."""
    return VGG("B", num_classes, in_channels, input_size, batch_norm=True, width=width, fc_width=fc_width)


@register_model("vgg16_c", paper=_paper("C", False), input_size=(3, 224, 224), recipe=sgd_recipe(0.01))
def vgg16_c(num_classes: int, in_channels: int, input_size: tuple[int, int], width: int = 64,
            fc_width: int = 4096) -> VGG:
    """VGG configuration C."""
    return VGG("C", num_classes, in_channels, input_size, batch_norm=False, width=width, fc_width=fc_width)


@register_model("vgg16_c_bn", paper=_paper("C", True), input_size=(3, 224, 224), recipe=sgd_recipe(0.05))
def vgg16_c_bn(num_classes: int, in_channels: int, input_size: tuple[int, int], width: int = 64,
               fc_width: int = 4096) -> VGG:
    """VGG configuration C with batch norm after every conv."""
    return VGG("C", num_classes, in_channels, input_size, batch_norm=True, width=width, fc_width=fc_width)


@register_model("vgg16", paper=_paper("D", False), input_size=(3, 224, 224), recipe=sgd_recipe(0.01))
def vgg16(num_classes: int, in_channels: int, input_size: tuple[int, int], width: int = 64,
          fc_width: int = 4096) -> VGG:
    """VGG configuration D."""
    return VGG("D", num_classes, in_channels, input_size, batch_norm=False, width=width, fc_width=fc_width)


@register_model("vgg16_bn", paper=_paper("D", True), input_size=(3, 224, 224), recipe=sgd_recipe(0.05))
def vgg16_bn(num_classes: int, in_channels: int, input_size: tuple[int, int], width: int = 64,
             fc_width: int = 4096) -> VGG:
    """VGG configuration D with batch norm after every conv."""
    return VGG("D", num_classes, in_channels, input_size, batch_norm=True, width=width, fc_width=fc_width)


@register_model("vgg19", paper=_paper("E", False), input_size=(3, 224, 224), recipe=sgd_recipe(0.01))
def vgg19(num_classes: int, in_channels: int, input_size: tuple[int, int], width: int = 64,
          fc_width: int = 4096) -> VGG:
    """VGG configuration E."""
    return VGG("E", num_classes, in_channels, input_size, batch_norm=False, width=width, fc_width=fc_width)


@register_model("vgg19_bn", paper=_paper("E", True), input_size=(3, 224, 224), recipe=sgd_recipe(0.05))
def vgg19_bn(num_classes: int, in_channels: int, input_size: tuple[int, int], width: int = 64,
             fc_width: int = 4096) -> VGG:
    """VGG configuration E with batch norm after every conv."""
    return VGG("E", num_classes, in_channels, input_size, batch_norm=True, width=width, fc_width=fc_width)
