"""VGG configurations A-E (Simonyan & Zisserman 2015, Table 1), with and without batch normalisation."""

from __future__ import annotations

import math

from torch import nn

from cnnkit import layers
from cnnkit.arithmetic import output_size
from cnnkit.models.base import Classifier, init_kaiming
from cnnkit.models.registry import register_model

# Numbers are 3x3 conv depths, "1:N" a 1x1 conv of depth N (configuration C), "M" a 2x2/2 max pool.
CFGS: dict[str, list[int | str]] = {
    "A": [64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"],
    "B": [64, 64, "M", 128, 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"],
    "C": [64, 64, "M", 128, 128, "M", 256, 256, "1:256", "M", 512, 512, "1:512", "M", 512, 512, "1:512", "M"],
    "D": [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"],
    "E": [64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M", 512, 512, 512, 512, "M", 512, 512, 512, 512, "M"],
}


def make_layers(cfg: list[int | str], in_channels: int, batch_norm: bool, max_pools: int) -> nn.Sequential:
    """Build the conv stack; pools past `max_pools` are left out so small inputs never shrink below 1x1."""
    stack, pools = nn.Sequential(), 0
    for item in cfg:
        if item == "M":
            if pools < max_pools:
                stack.append(layers.MaxPool2d(2, 2))
            pools += 1
            continue
        kernel, depth = (1, int(item[2:])) if isinstance(item, str) else (3, item)
        stack.append(layers.Conv2d(in_channels, depth, kernel, padding=kernel // 2))
        if batch_norm:
            stack.append(layers.BatchNorm2d(depth, eps=1e-5))
        stack.append(nn.ReLU(inplace=True))
        in_channels = depth
    return stack


class VGG(Classifier):
    """A VGG configuration: conv stack, then FC 4096 -> FC 4096 -> classes with dropout 0.5.

    Small-input rule: with fewer than 2**5 pixels on a side, only floor(log2(min(H, W))) pools are kept (the
    last ones are dropped), so 8x8 digits end as 512@1x1.
    """

    def __init__(self, cfg: str, num_classes: int, in_channels: int, input_size: tuple[int, int],
                 batch_norm: bool = False, dropout: float = 0.5) -> None:
        super().__init__()
        pools = min(5, int(math.log2(min(input_size))))
        self.features = make_layers(CFGS[cfg], in_channels, batch_norm, pools)
        h, w = input_size
        for _ in range(pools):  # each kept 2x2/2 max pool
            h, w = output_size(h, 2, 2), output_size(w, 2, 2)
        self.head = nn.Sequential(
            layers.Flatten(), nn.Linear(512 * h * w, 4096), nn.ReLU(inplace=True), nn.Dropout(dropout),
            nn.Linear(4096, 4096), nn.ReLU(inplace=True), nn.Dropout(dropout), nn.Linear(4096, num_classes),
        )
        init_kaiming(self)


def _paper(cfg: str, batch_norm: bool) -> str:
    return f"Simonyan & Zisserman 2015, configuration {cfg}" + (" with batch norm" if batch_norm else "")


@register_model("vgg11", paper=_paper("A", False), input_size=(3, 224, 224))
def vgg11(num_classes: int, in_channels: int, input_size: tuple[int, int]) -> VGG:
    """VGG configuration A."""
    return VGG("A", num_classes, in_channels, input_size, batch_norm=False)


@register_model("vgg11_bn", paper=_paper("A", True), input_size=(3, 224, 224))
def vgg11_bn(num_classes: int, in_channels: int, input_size: tuple[int, int]) -> VGG:
    """VGG configuration A with batch norm after every conv."""
    return VGG("A", num_classes, in_channels, input_size, batch_norm=True)


@register_model("vgg13", paper=_paper("B", False), input_size=(3, 224, 224))
def vgg13(num_classes: int, in_channels: int, input_size: tuple[int, int]) -> VGG:
    """VGG configuration B."""
    return VGG("B", num_classes, in_channels, input_size, batch_norm=False)


@register_model("vgg13_bn", paper=_paper("B", True), input_size=(3, 224, 224))
def vgg13_bn(num_classes: int, in_channels: int, input_size: tuple[int, int]) -> VGG:
    """VGG configuration B with batch norm after every conv."""
    return VGG("B", num_classes, in_channels, input_size, batch_norm=True)


@register_model("vgg16_c", paper=_paper("C", False), input_size=(3, 224, 224))
def vgg16_c(num_classes: int, in_channels: int, input_size: tuple[int, int]) -> VGG:
    """VGG configuration C."""
    return VGG("C", num_classes, in_channels, input_size, batch_norm=False)


@register_model("vgg16_c_bn", paper=_paper("C", True), input_size=(3, 224, 224))
def vgg16_c_bn(num_classes: int, in_channels: int, input_size: tuple[int, int]) -> VGG:
    """VGG configuration C with batch norm after every conv."""
    return VGG("C", num_classes, in_channels, input_size, batch_norm=True)


@register_model("vgg16", paper=_paper("D", False), input_size=(3, 224, 224))
def vgg16(num_classes: int, in_channels: int, input_size: tuple[int, int]) -> VGG:
    """VGG configuration D."""
    return VGG("D", num_classes, in_channels, input_size, batch_norm=False)


@register_model("vgg16_bn", paper=_paper("D", True), input_size=(3, 224, 224))
def vgg16_bn(num_classes: int, in_channels: int, input_size: tuple[int, int]) -> VGG:
    """VGG configuration D with batch norm after every conv."""
    return VGG("D", num_classes, in_channels, input_size, batch_norm=True)


@register_model("vgg19", paper=_paper("E", False), input_size=(3, 224, 224))
def vgg19(num_classes: int, in_channels: int, input_size: tuple[int, int]) -> VGG:
    """VGG configuration E."""
    return VGG("E", num_classes, in_channels, input_size, batch_norm=False)


@register_model("vgg19_bn", paper=_paper("E", True), input_size=(3, 224, 224))
def vgg19_bn(num_classes: int, in_channels: int, input_size: tuple[int, int]) -> VGG:
    """VGG configuration E with batch norm after every conv."""
    return VGG("E", num_classes, in_channels, input_size, batch_norm=True)
