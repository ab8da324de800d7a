"""ResNet-18/34/50/101/152 (He et al. 2016, Deep residual learning for image recognition, Table 1)."""

from __future__ import annotations

import torch
from torch import nn

from cnnkit import layers
from cnnkit.models.base import Classifier, init_kaiming
from cnnkit.models.registry import register_model, sgd_recipe

PAPER_STEM_MIN = 64


def _bn(channels: int) -> layers.BatchNorm2d:
    return layers.BatchNorm2d(channels, eps=1e-5)


class ResidualBlock(nn.Module):
    """output = ReLU(F(x) + shortcut(x)); subclasses build `residual`, `shortcut`, `fuse` and `relu`."""

    residual: nn.Module
    shortcut: nn.Module

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """F(x) + x, then ReLU."""
        return self.relu(self.fuse([self.residual(x), self.shortcut(x)]))


class BasicBlock(ResidualBlock):
    """Two 3x3 convs; output = ReLU(F(x) + shortcut(x)) (ResNet-18/34)."""

    expansion = 1

    def __init__(self, in_ch: int, width: int, stride: int = 1, stride_in_3x3: bool = True) -> None:
        super().__init__()
        self.residual = nn.Sequential(
            layers.Conv2d(in_ch, width, 3, stride, padding=1, bias=False), _bn(width), nn.ReLU(inplace=True),
            layers.Conv2d(width, width, 3, 1, padding=1, bias=False), _bn(width),
        )
        self.shortcut = _shortcut(in_ch, width, stride)
        self.fuse = layers.Fuse("add")
        self.relu = nn.ReLU(inplace=True)


class Bottleneck(ResidualBlock):
    """1x1 reduce -> 3x3 -> 1x1 expand (x4); output = ReLU(F(x) + shortcut(x)) (ResNet-50/101/152).

    The paper (v1) strides in the first 1x1 conv, giving its FLOPs row; `stride_in_3x3=True` is torchvision's v1.5.
    """

    expansion = 4

    def __init__(self, in_ch: int, width: int, stride: int = 1, stride_in_3x3: bool = False) -> None:
        super().__init__()
        out_ch = width * self.expansion
        s1, s3 = (1, stride) if stride_in_3x3 else (stride, 1)
        self.residual = nn.Sequential(
            layers.Conv2d(in_ch, width, 1, s1, padding=0, bias=False), _bn(width), nn.ReLU(inplace=True),
            layers.Conv2d(width, width, 3, s3, padding=1, bias=False), _bn(width), nn.ReLU(inplace=True),
            layers.Conv2d(width, out_ch, 1, 1, padding=0, bias=False), _bn(out_ch),
        )
        self.shortcut = _shortcut(in_ch, out_ch, stride)
        self.fuse = layers.Fuse("add")
        self.relu = nn.ReLU(inplace=True)


def _shortcut(in_ch: int, out_ch: int, stride: int) -> nn.Module:
    """Identity when shapes match, else a 1x1 projection with BN (the paper's option B)."""
    if stride == 1 and in_ch == out_ch:
        return nn.Identity()
    return nn.Sequential(layers.Conv2d(in_ch, out_ch, 1, stride, padding=0, bias=False), _bn(out_ch))


class ResNet(Classifier):
    """conv1 7x7/2 -> max pool 3x3/2 -> conv2_x..conv5_x -> global average pool -> FC.

    Inputs under 64x64 get the CIFAR-style stem (3x3 conv, stride 1, no max pool), so 32x32 ends at 4x4.
    `width` is the first stage's width (64; the later stages 2x, 4x, 8x it); the stem keeps 64 maps, as
    keras.applications' and torchvision's builders do.
    """

    def __init__(self, block: type[BasicBlock | Bottleneck], depths: list[int], num_classes: int, in_channels: int,
                 input_size: tuple[int, int], stride_in_3x3: bool = False, width: int = 64) -> None:
        super().__init__()
        if min(input_size) >= PAPER_STEM_MIN:
            stem = nn.Sequential(layers.Conv2d(in_channels, 64, 7, 2, padding=3, bias=False), _bn(64),
                                 nn.ReLU(inplace=True), layers.MaxPool2d(3, 2, padding=1))
        else:
            stem = nn.Sequential(layers.Conv2d(in_channels, 64, 3, 1, padding=1, bias=False), _bn(64),
                                 nn.ReLU(inplace=True))
        stages, channels = [stem], 64
        for stage, depth in enumerate(depths):
            blocks, stage_width = [], width * 2**stage
            for i in range(depth):
                stride = 2 if stage > 0 and i == 0 else 1
                blocks.append(block(channels, stage_width, stride, stride_in_3x3))
                channels = stage_width * block.expansion
            stages.append(nn.Sequential(*blocks))
        self.features = nn.Sequential(*stages)
        self.head = nn.Sequential(layers.GlobalAvgPool2d(), nn.Linear(channels, num_classes))
        init_kaiming(self)

    def torchvision_options(self, keys: set[str]) -> dict:
        """Options under which torchvision's weights compute what torchvision computes: its bottleneck strides in
        the 3x3 conv (ResNet v1.5), where the paper and this model's default stride in the first 1x1."""
        return {"stride_in_3x3": True} if isinstance(self.features[1][0], Bottleneck) else {}

    def torchvision_names(self) -> dict[str, str]:
        """torchvision's module names -> this model's (torchvision/models/resnet.py: conv1, bn1,
        layerS.B.{conv1, bn1, conv2, bn2[, conv3, bn3], downsample.0, downsample.1}, fc)."""
        names = {"conv1": "features.0.0", "bn1": "features.0.1", "fc": "head.1"}
        for stage in range(1, 5):
            for index, block in enumerate(self.features[stage]):
                theirs, ours = f"layer{stage}.{index}", f"features.{stage}.{index}"
                convs = [i for i, module in enumerate(block.residual) if isinstance(module, nn.Conv2d)]
                for number, i in enumerate(convs, start=1):  # each conv is followed by its BN
                    names[f"{theirs}.conv{number}"] = f"{ours}.residual.{i}"
                    names[f"{theirs}.bn{number}"] = f"{ours}.residual.{i + 1}"
                if not isinstance(block.shortcut, nn.Identity):
                    names[f"{theirs}.downsample.0"] = f"{ours}.shortcut.0"
                    names[f"{theirs}.downsample.1"] = f"{ours}.shortcut.1"
        return names


def _paper(depth: int) -> str:
    return f"He et al. 2016, Deep residual learning ({depth}-layer)"


@register_model("resnet18", paper=_paper(18), input_size=(3, 224, 224), recipe=sgd_recipe(0.1))
def resnet18(num_classes: int, in_channels: int, input_size: tuple[int, int], stride_in_3x3: bool = False,
             width: int = 64) -> ResNet:
    """ResNet-18 per Table 1: basic blocks [2, 2, 2, 2]."""
    return ResNet(BasicBlock, [2, 2, 2, 2], num_classes, in_channels, input_size, stride_in_3x3, width)


@register_model("resnet34", paper=_paper(34), input_size=(3, 224, 224), recipe=sgd_recipe(0.1))
def resnet34(num_classes: int, in_channels: int, input_size: tuple[int, int], stride_in_3x3: bool = False,
             width: int = 64) -> ResNet:
    """ResNet-34 per Table 1: basic blocks [3, 4, 6, 3]."""
    return ResNet(BasicBlock, [3, 4, 6, 3], num_classes, in_channels, input_size, stride_in_3x3, width)


@register_model("resnet50", paper=_paper(50), input_size=(3, 224, 224), recipe=sgd_recipe(0.1))
def resnet50(num_classes: int, in_channels: int, input_size: tuple[int, int], stride_in_3x3: bool = False,
             width: int = 64) -> ResNet:
    """ResNet-50 per Table 1: bottleneck blocks [3, 4, 6, 3]."""
    return ResNet(Bottleneck, [3, 4, 6, 3], num_classes, in_channels, input_size, stride_in_3x3, width)


@register_model("resnet101", paper=_paper(101), input_size=(3, 224, 224), recipe=sgd_recipe(0.1))
def resnet101(num_classes: int, in_channels: int, input_size: tuple[int, int],
              stride_in_3x3: bool = False, width: int = 64) -> ResNet:
    """ResNet-101 per Table 1: bottleneck blocks [3, 4, 23, 3]."""
    return ResNet(Bottleneck, [3, 4, 23, 3], num_classes, in_channels, input_size, stride_in_3x3, width)


@register_model("resnet152", paper=_paper(152), input_size=(3, 224, 224), recipe=sgd_recipe(0.1))
def resnet152(num_classes: int, in_channels: int, input_size: tuple[int, int],
              stride_in_3x3: bool = False, width: int = 64) -> ResNet:
    """ResNet-152 per Table 1: bottleneck blocks [3, 8, 36, 3]."""
    return ResNet(Bottleneck, [3, 8, 36, 3], num_classes, in_channels, input_size, stride_in_3x3, width)
