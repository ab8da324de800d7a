"""AlexNet (Krizhevsky, Sutskever & Hinton 2012) with LRN and the two-GPU split, and torchvision's variant."""

from __future__ import annotations

from torch import nn

from cnnkit import layers
from cnnkit.core.arithmetic import output_size
from cnnkit.models.base import Classifier, init_kaiming
from cnnkit.models.registry import register_model, sgd_recipe

PAPER_STEM_MIN = 63  # 11x11/4 conv + three 3x3/2 pools need 63 pixels to leave a 1x1 map


class AlexNet(Classifier):
    """conv 11/4 -> ReLU -> LRN -> pool 3/2 -> conv 5 -> ReLU -> LRN -> pool -> conv 3 x3 -> pool -> FC x2 -> out.

    Args:
        widths: the five conv depths (paper: 96, 256, 384, 384, 256; torchvision: 64, 192, 384, 256, 256).
        lrn: the paper's local response normalisation (n=5, alpha=1e-4, beta=0.75, k=2) after conv1 and conv2.
        groups: 2 reproduces the paper's two-GPU split: conv2, conv4 and conv5 only see their own GPU's maps.
        adaptive_pool: torchvision's adaptive 6x6 average pool before the classifier (when the maps are larger).
    Inputs under 63x63 get a small-input stem: conv1 5x5 stride 1 SAME and SAME-padded pools (32x32 -> 4x4).
    """

    def __init__(
        self, num_classes: int, in_channels: int, input_size: tuple[int, int],
        widths: tuple[int, ...] = (96, 256, 384, 384, 256), lrn: bool = True, groups: int = 1,
        adaptive_pool: bool = False, dropout: float = 0.5,
    ) -> None:
        super().__init__()
        paper_stem = min(input_size) >= PAPER_STEM_MIN
        pool_pad = "valid" if paper_stem else "same"
        c1, c2, c3, c4, c5 = widths
        f = nn.Sequential()
        if paper_stem:
            f.add_module("conv1", layers.Conv2d(in_channels, c1, 11, stride=4, padding=2))
        else:
            f.add_module("conv1", layers.Conv2d(in_channels, c1, 5, stride=1, padding="same"))
        f.add_module("relu1", nn.ReLU(inplace=True))
        if lrn:
            f.add_module("lrn1", layers.LocalResponseNorm(5, 1e-4, 0.75, 2.0))
        f.add_module("pool1", layers.MaxPool2d(3, 2, pool_pad))
        f.add_module("conv2", layers.Conv2d(c1, c2, 5, padding=2, groups=groups))
        f.add_module("relu2", nn.ReLU(inplace=True))
        if lrn:
            f.add_module("lrn2", layers.LocalResponseNorm(5, 1e-4, 0.75, 2.0))
        f.add_module("pool2", layers.MaxPool2d(3, 2, pool_pad))
        f.add_module("conv3", layers.Conv2d(c2, c3, 3, padding=1))  # crosses the two GPUs in the paper
        f.add_module("relu3", nn.ReLU(inplace=True))
        f.add_module("conv4", layers.Conv2d(c3, c4, 3, padding=1, groups=groups))
        f.add_module("relu4", nn.ReLU(inplace=True))
        f.add_module("conv5", layers.Conv2d(c4, c5, 3, padding=1, groups=groups))
        f.add_module("relu5", nn.ReLU(inplace=True))
        f.add_module("pool5", layers.MaxPool2d(3, 2, pool_pad))
        self.features = f
        size = [output_size(s, 11, 4, 2) for s in input_size] if paper_stem else list(input_size)
        for _ in range(3):  # conv2..conv5 keep the size; the three pools shrink it
            size = [output_size(s, 3, 2, pool_pad) for s in size]
        head = nn.Sequential()
        if adaptive_pool and min(size) > 6:  # torchvision's adaptive 6x6 pool; at 6x6 and below it would be an
            head.add_module("avgpool", nn.AdaptiveAvgPool2d((6, 6)))  # identity or an upsampling, so it is left out
            size = [6, 6]
        head.add_module("flatten", layers.Flatten())
        head.add_module("drop6", nn.Dropout(dropout))
        head.add_module("fc6", nn.Linear(c5 * size[0] * size[1], 4096))
        head.add_module("relu6", nn.ReLU(inplace=True))
        head.add_module("drop7", nn.Dropout(dropout))
        head.add_module("fc7", nn.Linear(4096, 4096))
        head.add_module("relu7", nn.ReLU(inplace=True))
        head.add_module("fc8", nn.Linear(4096, num_classes))
        self.head = head
        init_kaiming(self)

    def torchvision_options(self, keys: set[str]) -> dict:
        """No options needed: torchvision's AlexNet is `alexnet_owt` (other variants differ in their shapes)."""
        return {}

    def torchvision_names(self) -> dict[str, str]:
        """torchvision's module names -> this model's (torchvision/models/alexnet.py: convs features.0/3/6/8/10,
        fully connected classifier.1/4/6)."""
        convs = [f"features.{name}" for name, m in self.features.named_children() if isinstance(m, nn.Conv2d)]
        dense = [f"head.{name}" for name, m in self.head.named_children() if isinstance(m, nn.Linear)]
        names = dict(zip((f"features.{i}" for i in (0, 3, 6, 8, 10)), convs, strict=True))
        names.update(zip((f"classifier.{i}" for i in (1, 4, 6)), dense, strict=True))
        return names


@register_model("alexnet", paper="Krizhevsky et al. 2012, ImageNet classification with deep CNNs",
                input_size=(3, 224, 224), recipe=sgd_recipe(0.01))
def alexnet(num_classes: int, in_channels: int, input_size: tuple[int, int], groups: int = 1,
            lrn: bool = True) -> AlexNet:
    """The paper's AlexNet (96-256-384-384-256, LRN); groups=2 for the two-GPU split (60,965,224 parameters)."""
    return AlexNet(num_classes, in_channels, input_size, lrn=lrn, groups=groups)


@register_model("alexnet_owt", paper="Krizhevsky 2014, One weird trick (torchvision's AlexNet)",
                input_size=(3, 224, 224), recipe=sgd_recipe(0.01))
def alexnet_owt(num_classes: int, in_channels: int, input_size: tuple[int, int]) -> AlexNet:
    """torchvision's AlexNet: 64-192-384-256-256, no LRN, adaptive 6x6 pool (61,100,840 parameters)."""
    return AlexNet(num_classes, in_channels, input_size, widths=(64, 192, 384, 256, 256), lrn=False,
                   adaptive_pool=True)
