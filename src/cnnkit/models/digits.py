"""The article's digits network (section 5), exactly as its TensorFlow program runs."""

from __future__ import annotations

from torch import nn

from cnnkit import layers
from cnnkit.core.arithmetic import output_size
from cnnkit.core.errors import CnnkitError
from cnnkit.models.base import Classifier, init_kaiming
from cnnkit.models.registry import register_model


class DigitsNet(Classifier):
    """conv1 3x3x10 SAME + ReLU -> conv2 3x3x5 /2 SAME -> BN -> ReLU -> max pool 3x3 /2 SAME -> FC 50 -> FC 10.

    The article also builds pool1 (max 3x3 /2 on conv1) but feeds conv1, not pool1, to conv2; pool1 is kept as a
    module for inspection and never runs. The flatten is in NHWC order, as TF's reshape of an NHWC tensor.
    2,125 trainable parameters at 8x8x1 with 10 classes.

    Args:
        seed_faithful: initialise every weight and bias from N(0, 1) like the article's `tf.random_normal`
            (training often stalls); the default uses He initialisation.
    """

    def __init__(self, num_classes: int = 10, in_channels: int = 1, input_size: tuple[int, int] = (8, 8),
                 seed_faithful: bool = False) -> None:
        super().__init__()
        half = tuple(output_size(s, 3, 2, "same") for s in input_size)  # after conv2 (3x3/2 SAME)
        quarter = tuple(output_size(s, 3, 2, "same") for s in half)  # after pool2 (3x3/2 SAME)
        self.pool1 = layers.MaxPool2d(3, 2, "same", input_size=input_size)  # dead in the article's graph
        self.features = nn.Sequential()
        self.features.add_module("conv1", layers.Conv2d(in_channels, 10, 3, 1, "same"))
        self.features.add_module("relu1", nn.ReLU())
        self.features.add_module("conv2", layers.Conv2d(10, 5, 3, 2, "same", input_size=input_size))
        self.features.add_module("bn2", layers.BatchNorm2d(5, eps=1e-3))
        self.features.add_module("relu2", nn.ReLU())
        self.features.add_module("pool2", layers.MaxPool2d(3, 2, "same", input_size=half))
        self.head = nn.Sequential()
        self.head.add_module("flatten", layers.Flatten("NHWC"))
        self.head.add_module("fc1", layers.Dense(5 * quarter[0] * quarter[1], 50))
        self.head.add_module("relu3", nn.ReLU())
        self.head.add_module("out", layers.Dense(50, num_classes))
        if seed_faithful:
            for name, parameter in self.named_parameters():
                if not name.startswith("features.bn2") and not parameter.is_meta:  # BN 0 / 1, as tf.zeros / tf.ones
                    nn.init.normal_(parameter, 0.0, 1.0)
        else:
            init_kaiming(self)


# Min-max scaling (the article's), no shifts (2,125 parameters cannot absorb them), batch 32 for 100 epochs of
# one-cycle AdamW: 97.22% on the digits (seeds 0-2: 98.33 / 96.94 / 96.39; 96.25% +- 1.21 over seeds 0-7) where
# standardisation gave 95.4% and the old shared recipe 87.6%.
DIGITSNET_RECIPE = {"preprocessing": "minmax", "shift": 0, "label_smoothing": 0.0, "batch_size": 32, "epochs": 100}


@register_model("digitsnet", paper="the article, section 5 (sklearn 8x8 digits)", input_size=(1, 8, 8),
                num_classes=10, test_size=(1, 8, 8), recipe=DIGITSNET_RECIPE)
def digitsnet(
    num_classes: int, in_channels: int, input_size: tuple[int, int], seed_faithful: bool = False,
) -> DigitsNet:
    """The article's digits CNN."""
    return DigitsNet(num_classes, in_channels, input_size, seed_faithful)


class DigitsCNN(Classifier):
    """cnnkit's default digits model: two conv-BN-ReLU pairs per stage, two SAME max-pool stages, dropout, FC.

    8x8 -> 4x4 -> 2x2 with `width` and 2*`width` maps; 38,866 parameters at width 24 (the default).
    """

    def __init__(self, num_classes: int = 10, in_channels: int = 1, input_size: tuple[int, int] = (8, 8),
                 width: int = 24, dropout: float = 0.2) -> None:
        super().__init__()
        stages, channels, size = [], in_channels, list(input_size)
        for depth in (width, 2 * width):
            stages += [layers.Conv2d(channels, depth, 3), layers.BatchNorm2d(depth, eps=1e-3), nn.ReLU(inplace=True),
                       layers.Conv2d(depth, depth, 3), layers.BatchNorm2d(depth, eps=1e-3), nn.ReLU(inplace=True),
                       layers.MaxPool2d(2, 2, "same")]
            channels, size = depth, [output_size(s, 2, 2, "same") for s in size]
        self.features = nn.Sequential(*stages)
        self.head = nn.Sequential(layers.Flatten(), nn.Dropout(dropout),
                                  layers.Dense(channels * size[0] * size[1], num_classes))
        init_kaiming(self)


@register_model("digits_cnn", paper="cnnkit's default for small images (VGG-style, batch norm)",
                input_size=(1, 8, 8), num_classes=10, test_size=(1, 8, 8))
def digits_cnn(num_classes: int, in_channels: int, input_size: tuple[int, int], width: int = 24,
               dropout: float = 0.2) -> DigitsCNN:
    """The default model of `cnnkit train`."""
    if not 1 <= width <= 4096:
        raise CnnkitError(f"digits_cnn option width must be between 1 and 4096; received width={width}")
    if not 0.0 <= dropout < 1.0:
        raise CnnkitError(f"digits_cnn option dropout must be in [0, 1); received dropout={dropout}")
    return DigitsCNN(num_classes, in_channels, input_size, width, dropout)
