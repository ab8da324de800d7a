"""GoogLeNet / Inception v1 (Szegedy et al. 2015, Going deeper with convolutions, Table 1)."""

from __future__ import annotations

import torch
from torch import nn

from cnnkit import layers
from cnnkit.core.arithmetic import output_size
from cnnkit.core.errors import CnnkitError
from cnnkit.models.base import Classifier, TrainingOutputs, init_kaiming
from cnnkit.models.registry import register_model, sgd_recipe

PAPER_STEM_MIN = 64
AUX_WEIGHT = 0.3  # section 5: the auxiliary classifiers' losses are added with weight 0.3
# Table 1: name -> (#1x1, #3x3 reduce, #3x3, #5x5 reduce, #5x5, pool proj); "M" = 3x3/2 max pool.
TABLE1: list[tuple[str, tuple[int, ...]] | str] = [
    ("3a", (64, 96, 128, 16, 32, 32)), ("3b", (128, 128, 192, 32, 96, 64)), "M",
    ("4a", (192, 96, 208, 16, 48, 64)), ("4b", (160, 112, 224, 24, 64, 64)), ("4c", (128, 128, 256, 24, 64, 64)),
    ("4d", (112, 144, 288, 32, 64, 64)), ("4e", (256, 160, 320, 32, 128, 128)), "M",
    ("5a", (256, 160, 320, 32, 128, 128)), ("5b", (384, 192, 384, 48, 128, 128)),
]


def _halved(size: list[int]) -> list[int]:
    """Map size after a stride-2 SAME layer (conv1, and every 3x3/2 max pool)."""
    return [output_size(s, 3, 2, "same") for s in size]


def _pool(kernel: int, torchvision: bool) -> nn.Module:
    """A stride-2 max pool: the paper's 3x3 SAME, or torchvision's kernel x kernel with ceil_mode."""
    return nn.MaxPool2d(kernel, 2, ceil_mode=True) if torchvision else layers.MaxPool2d(3, 2, "same")


def conv_unit(in_ch: int, out_ch: int, kernel: int, stride: int = 1, bn: bool = False,
              padding: str | int = "same") -> nn.Sequential:
    """Conv (SAME unless `padding` says otherwise) -> [BN] -> ReLU."""
    unit = nn.Sequential(layers.Conv2d(in_ch, out_ch, kernel, stride, padding, bias=not bn))
    if bn:
        unit.append(layers.BatchNorm2d(out_ch, eps=1e-3))
    unit.append(nn.ReLU(inplace=True))
    return unit


class Inception(nn.Module):
    """Four parallel branches (1x1; 1x1 -> 3x3; 1x1 -> 5x5; 3x3 max pool -> 1x1) concatenated in depth.

    `five` is the third branch's kernel: 5 in the paper, 3 in torchvision's GoogLeNet (pytorch/vision#906).
    """

    def __init__(self, in_ch: int, spec: tuple[int, ...], bn: bool = False, five: int = 5) -> None:
        super().__init__()
        n1, r3, n3, r5, n5, proj = spec
        self.branches = layers.Branches([
            conv_unit(in_ch, n1, 1, bn=bn),
            nn.Sequential(conv_unit(in_ch, r3, 1, bn=bn), conv_unit(r3, n3, 3, bn=bn)),
            nn.Sequential(conv_unit(in_ch, r5, 1, bn=bn), conv_unit(r5, n5, five, bn=bn)),
            nn.Sequential(layers.MaxPool2d(3, 1, "same"), conv_unit(in_ch, proj, 1, bn=bn)),
        ])
        self.fuse = layers.Fuse("concat")
        self.out_channels = n1 + n3 + n5 + proj

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(N, in, H, W) -> (N, out_channels, H, W)."""
        return self.fuse(self.branches(x))


class AuxClassifier(nn.Module):
    """Avg pool 5x5/3 -> 1x1 conv 128 -> FC 1024 -> dropout 0.7 -> classes (paper section 5).

    On maps other than 14-16 pixels (where 5x5/3 gives 4x4), or with `adaptive` (torchvision's), an adaptive 4x4
    average pool stands in.
    """

    def __init__(self, in_ch: int, num_classes: int, map_size: tuple[int, int], bn: bool = False,
                 adaptive: bool = False) -> None:
        super().__init__()
        paper_pool = not adaptive and all(14 <= s <= 16 for s in map_size)
        self.pool = layers.AvgPool2d(5, 3) if paper_pool else nn.AdaptiveAvgPool2d(4)
        self.conv = conv_unit(in_ch, 128, 1, bn=bn)
        self.fc = nn.Sequential(layers.Flatten(), nn.Linear(128 * 4 * 4, 1024), nn.ReLU(inplace=True),
                                nn.Dropout(0.7), nn.Linear(1024, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Auxiliary logits."""
        return self.fc(self.conv(self.pool(x)))


class GoogLeNet(Classifier):
    """Inception v1. In training, forward returns TrainingOutputs (main logits, the two auxiliary classifiers'
    logits on 4a and 4d, weight 0.3); in eval, plain logits.

    Args:
        bn: batch norm after every conv (no LRN), as in Inception v2 / torchvision.
        aux: build the two auxiliary classifiers.
        torchvision: torchvision's GoogLeNet (ported from TensorFlow), so its weights compute what they compute
            there: conv1 padded 3 on every side, 3x3/2 pools with ceil_mode instead of SAME, a 2x2/2 pool before
            5a, 3x3 convs in the '5x5' branches, adaptive pools in the auxiliary classifiers, dropout 0.2.
    Inputs under 64x64 get a small-input stem: one 3x3 conv to 192 maps and no early pools (32x32 -> 8x8 at 5b).
    """

    def __init__(self, num_classes: int, in_channels: int, input_size: tuple[int, int], bn: bool = False,
                 aux: bool = True, dropout: float = 0.4, torchvision: bool = False) -> None:
        super().__init__()
        paper_stem = min(input_size) >= PAPER_STEM_MIN
        stem = nn.Sequential()
        size = list(input_size)
        self.torchvision_layout = torchvision
        if paper_stem:
            stem.add_module("conv1", conv_unit(in_channels, 64, 7, 2, bn, padding=3 if torchvision else "same"))
            stem.add_module("pool1", _pool(3, torchvision))
            if not bn:  # Caffe's bvlc_googlenet LRN: n=5, alpha=1e-4/n (Caffe divides by n), beta=0.75, k=1
                stem.add_module("lrn1", layers.LocalResponseNorm(5, 2e-5, 0.75, 1.0))
            stem.add_module("conv2_reduce", conv_unit(64, 64, 1, bn=bn))
            stem.add_module("conv2", conv_unit(64, 192, 3, bn=bn))
            if not bn:
                stem.add_module("lrn2", layers.LocalResponseNorm(5, 2e-5, 0.75, 1.0))
            stem.add_module("pool2", _pool(3, torchvision))
            size = _halved(_halved(_halved(size)))  # conv1, pool1 and pool2 each halve (SAME: ceil)
        else:
            stem.add_module("conv1", conv_unit(in_channels, 192, 3, bn=bn))
        self.features = nn.Sequential()
        self.features.add_module("stem", stem)
        self.aux1 = self.aux2 = None
        channels = 192
        for index, item in enumerate(TABLE1):
            if item == "M":
                self.features.add_module(f"pool{index}", _pool(2 if index > 3 else 3, torchvision))
                size = _halved(size)
                continue
            name, spec = item
            block = Inception(channels, spec, bn, five=3 if torchvision else 5)
            self.features.add_module(f"inception{name}", block)
            if aux and name in ("4a", "4d"):
                head = AuxClassifier(block.out_channels, num_classes, tuple(size), bn, adaptive=torchvision)
                setattr(self, "aux1" if name == "4a" else "aux2", head)
            channels = block.out_channels
        self.head = nn.Sequential(layers.GlobalAvgPool2d(), nn.Dropout(0.2 if torchvision else dropout),
                                  nn.Linear(channels, num_classes))
        init_kaiming(self)

    def torchvision_options(self, keys: set[str]) -> dict:
        """torchvision's GoogLeNet has batch norm and its own layout (see `torchvision`); its auxiliary classifiers
        are in the file only when it was saved with aux_logits=True."""
        if not any(isinstance(m, layers.BatchNorm2d) for m in self.modules()):
            raise CnnkitError("torchvision's GoogLeNet has batch norm after every conv: import it as --model "
                              "googlenet_bn (cnnkit's googlenet is the paper's, with LRN and no batch norm)")
        return {"torchvision": True, "aux": any(key.startswith("aux1.") for key in keys)}

    def torchvision_names(self) -> dict[str, str]:
        """torchvision's module names -> this model's (torchvision/models/googlenet.py: BasicConv2d units
        conv1..conv3 and inceptionX.branch1..4, each a .conv and a .bn; aux1/aux2 .conv, .fc1, .fc2; fc)."""
        names = {"fc": "head.2"}
        stem = {"conv1": "conv1", "conv2": "conv2_reduce", "conv3": "conv2"}
        for theirs, ours in stem.items():
            names.update(_unit(theirs, f"features.stem.{ours}"))
        for name, block in self.features.named_children():
            if isinstance(block, Inception):
                ours = f"features.{name}.branches.branches"
                names.update(_unit(f"{name}.branch1", f"{ours}.0"))
                for branch in (2, 3):
                    names.update(_unit(f"{name}.branch{branch}.0", f"{ours}.{branch - 1}.0"))
                    names.update(_unit(f"{name}.branch{branch}.1", f"{ours}.{branch - 1}.1"))
                names.update(_unit(f"{name}.branch4.1", f"{ours}.3.1"))
        for aux in ("aux1", "aux2"):
            if getattr(self, aux) is not None:
                names.update(_unit(f"{aux}.conv", f"{aux}.conv"))
                names.update({f"{aux}.fc1": f"{aux}.fc.1", f"{aux}.fc2": f"{aux}.fc.4"})
        return names

    def forward(self, x: torch.Tensor) -> torch.Tensor | TrainingOutputs:
        """Logits in eval; logits plus both auxiliary logits in training."""
        if not (self.training and self.aux1 is not None):
            return super().forward(x)
        aux = {}
        for name, block in self.features.named_children():
            x = block(x)
            if name in ("inception4a", "inception4d"):
                aux[name] = (self.aux1 if name == "inception4a" else self.aux2)(x)
        return TrainingOutputs(self.forward_head(x), (aux["inception4a"], aux["inception4d"]), AUX_WEIGHT)


def _unit(theirs: str, ours: str) -> dict[str, str]:
    """torchvision's BasicConv2d (.conv, .bn) -> a conv_unit (0: conv, 1: BN)."""
    return {f"{theirs}.conv": f"{ours}.0", f"{theirs}.bn": f"{ours}.1"}


@register_model("googlenet", paper="Szegedy et al. 2015, Going deeper with convolutions (Inception v1)",
                input_size=(3, 224, 224), test_size=(3, 32, 32), recipe=sgd_recipe(0.01))
def googlenet(num_classes: int, in_channels: int, input_size: tuple[int, int], aux: bool = True) -> GoogLeNet:
    """Inception v1 per Table 1 with LRN and both auxiliary classifiers."""
    return GoogLeNet(num_classes, in_channels, input_size, bn=False, aux=aux)


@register_model("googlenet_bn", paper="Szegedy et al. 2015 with batch norm (Ioffe & Szegedy 2015)",
                input_size=(3, 224, 224), recipe=sgd_recipe(0.05))
def googlenet_bn(num_classes: int, in_channels: int, input_size: tuple[int, int], aux: bool = True,
                 torchvision: bool = False) -> GoogLeNet:
    """Inception v1 with batch norm after every conv instead of LRN; `torchvision` for torchvision's layout."""
    return GoogLeNet(num_classes, in_channels, input_size, bn=True, aux=aux, torchvision=torchvision)
