"""LeNet-5 as in LeCun et al. 1998 (Gradient-based learning applied to document recognition), and a modern variant."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from cnnkit import layers
from cnnkit.core.arithmetic import output_size
from cnnkit.core.errors import CnnkitError
from cnnkit.models.base import Classifier, init_kaiming
from cnnkit.models.registry import register_model

# AdamW without label smoothing: the RBF output's logits are minus squared distances to fixed codes, which
# smoothing would pull towards a uniform distance to every code.
LENET5_RECIPE = {"lr": 1e-3, "label_smoothing": 0.0, "epochs": 40, "batch_size": 64, "shift": 2}

# Table I of the paper: which S2 maps feed each C3 map (columns 0..15).
C3_TABLE = (
    [[i, (i + 1) % 6, (i + 2) % 6] for i in range(6)]
    + [[i, (i + 1) % 6, (i + 2) % 6, (i + 3) % 6] for i in range(6)]
    + [[0, 1, 3, 4], [1, 2, 4, 5], [0, 2, 3, 5]]
    + [[0, 1, 2, 3, 4, 5]]
)


class ScaledTanh(nn.Module):
    """The paper's squashing function f(a) = A tanh(S a), A = 1.7159, S = 2/3 (appendix A)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Apply f."""
        return 1.7159 * torch.tanh(x * (2.0 / 3.0))


class Subsampling(nn.Module):
    """S2/S4: the sum of each 2x2 window times a trainable coefficient plus a trainable bias, per map."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.kernel_size, self.stride = 2, 2
        self.coefficient = nn.Parameter(torch.full((channels,), 0.25))
        self.bias = nn.Parameter(torch.zeros(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(N, C, H, W) -> (N, C, H/2, W/2)."""
        sums = F.avg_pool2d(x, 2) * 4
        return sums * self.coefficient[:, None, None] + self.bias[:, None, None]


class PartialConv(nn.Module):
    """C3: sixteen 5x5 maps, each reading only the S2 maps of Table I (1,516 parameters, not 2,416).

    The maps with the same number of inputs form one grouped conv over the gathered input channels.
    """

    def __init__(self, table: list[list[int]] = C3_TABLE, kernel_size: int = 5) -> None:
        super().__init__()
        self.order: list[int] = []
        self.convs = nn.ModuleList()
        groups: dict[int, list[int]] = {}
        for out_map, inputs in enumerate(table):
            groups.setdefault(len(inputs), []).append(out_map)
        for width, out_maps in groups.items():
            index = torch.tensor([c for m in out_maps for c in table[m]])
            self.register_buffer(f"index{len(self.convs)}", index, persistent=False)
            self.convs.append(nn.Conv2d(width * len(out_maps), len(out_maps), kernel_size, groups=len(out_maps)))
            self.order += out_maps
        self.register_buffer("inverse", torch.argsort(torch.tensor(self.order)), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(N, 6, H, W) -> (N, 16, H-4, W-4)."""
        outs = [conv(x.index_select(1, getattr(self, f"index{i}"))) for i, conv in enumerate(self.convs)]
        return torch.cat(outs, dim=1).index_select(1, self.inverse)


class RBFOutput(nn.Module):
    """The output layer: y_i = sum_j (x_j - w_ij)^2 with fixed (non-trainable) +-1 codes; logits are -y.

    The paper draws the codes as 7x12 character bitmaps; these are fixed pseudo-random +-1 codes instead.
    """

    def __init__(self, in_features: int, num_classes: int) -> None:
        super().__init__()
        # Drawn on the CPU even when the model is built on the meta device (sizing it): the same codes everywhere,
        # and no seconds-long registration of meta-device random ops.
        codes = torch.randint(0, 2, (num_classes, in_features), generator=torch.Generator().manual_seed(1998),
                              device="cpu")
        self.register_buffer("codes", codes.float() * 2 - 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Negative squared Euclidean distance to each class code."""
        return -(x[:, None, :] - self.codes).square().sum(dim=-1)  # (N, classes); exports to plain ONNX ops


class LeNet5(Classifier):
    """C1 6@5x5 -> S2 -> C3 16@5x5 (Table I) -> S4 -> C5 120@5x5 -> F6 84 -> RBF output; 60,000 trainable."""

    def __init__(self, num_classes: int = 10, in_channels: int = 1) -> None:
        super().__init__()
        self.features = nn.Sequential()
        self.features.add_module("c1", nn.Conv2d(in_channels, 6, 5))
        self.features.add_module("act1", ScaledTanh())
        self.features.add_module("s2", Subsampling(6))
        self.features.add_module("act2", ScaledTanh())
        self.features.add_module("c3", PartialConv() if in_channels == 1 else nn.Conv2d(6, 16, 5))
        self.features.add_module("act3", ScaledTanh())
        self.features.add_module("s4", Subsampling(16))
        self.features.add_module("act4", ScaledTanh())
        self.features.add_module("c5", nn.Conv2d(16, 120, 5))
        self.features.add_module("act5", ScaledTanh())
        self.head = nn.Sequential()
        self.head.add_module("flatten", layers.Flatten())
        self.head.add_module("f6", nn.Linear(120, 84))
        self.head.add_module("act6", ScaledTanh())
        self.head.add_module("output", RBFOutput(84, num_classes))


@register_model("lenet5", paper="LeCun et al. 1998, Gradient-based learning applied to document recognition",
                input_size=(1, 32, 32), num_classes=10, min_size=32, test_size=(1, 32, 32), recipe=LENET5_RECIPE)
def lenet5(num_classes: int, in_channels: int, input_size: tuple[int, int]) -> LeNet5:
    """The 1998 paper's LeNet-5; it takes exactly 32x32 (the paper pads 28x28 MNIST digits to 32x32)."""
    if input_size != (32, 32):
        raise CnnkitError(f"lenet5 (the 1998 paper's network) takes 32x32 inputs; received {input_size[0]}x"
                          f"{input_size[1]}: pad the images to 32x32 as the paper did, or use lenet5_modern")
    return LeNet5(num_classes, in_channels)


class LeNet5Modern(Classifier):
    """LeNet-5 as commonly trained today: ReLU, max pooling, a full C3 and a linear head.

    Small-input rule: C1 pads SAME below 32x32 (so 28x28 keeps the classic 5x5x16 before C5), and C3 pads SAME
    when the pooled map is below 10x10 (8x8 digits end as 16@2x2).
    """

    def __init__(self, num_classes: int, in_channels: int, input_size: tuple[int, int]) -> None:
        super().__init__()
        pad1 = "same" if min(input_size) < 32 else "valid"
        size = [output_size(s, 5, 1, pad1) for s in input_size]
        size = [output_size(s, 2, 2) for s in size]
        pad3 = "same" if min(size) < 10 else "valid"
        size = [output_size(output_size(s, 5, 1, pad3), 2, 2) for s in size]
        self.features = nn.Sequential(
            layers.Conv2d(in_channels, 6, 5, padding=pad1), nn.ReLU(), layers.MaxPool2d(2),
            layers.Conv2d(6, 16, 5, padding=pad3), nn.ReLU(), layers.MaxPool2d(2),
        )
        self.head = nn.Sequential(
            layers.Flatten(), nn.Linear(16 * size[0] * size[1], 120), nn.ReLU(), nn.Linear(120, 84), nn.ReLU(),
            nn.Linear(84, num_classes),
        )
        init_kaiming(self)


@register_model("lenet5_modern", paper="LeCun et al. 1998, modernised (ReLU, max pool, full C3)",
                input_size=(1, 28, 28), num_classes=10, min_size=4, test_size=(1, 8, 8),
                recipe={"epochs": 100, "batch_size": 64})  # digits: 98.70% mean of seeds 0-2 (98.24% at 60 epochs)
def lenet5_modern(num_classes: int, in_channels: int, input_size: tuple[int, int]) -> LeNet5Modern:
    """Modern LeNet-5 for 28x28, 32x32 or 8x8 inputs."""
    return LeNet5Modern(num_classes, in_channels, input_size)
