"""The `cnnkit models` table, recorded: each built-in model's parameter counts, input, classes and paper.

Counting parameters means building the network (torch's import alone is 1-2 s, VGG holds 138 M weights), so the
counts of the built-in models are written down here; tests/test_startup.py holds every row against the registry
and a network built from it, and the counts against the published ones. A model registered at run time that is
not recorded here is counted from the model itself.
"""

from __future__ import annotations

from cnnkit.models.registry import registered_names

# name: (trainable parameters, those of the inference path, default (C, H, W), classes, paper)
RECORDED: dict[str, tuple[int, int, tuple[int, int, int], int, str]] = {
    "alexnet": (62_378_344, 62_378_344, (3, 224, 224), 1000,
        "Krizhevsky et al. 2012, ImageNet classification with deep CNNs"),
    "alexnet_owt": (61_100_840, 61_100_840, (3, 224, 224), 1000,
        "Krizhevsky 2014, One weird trick (torchvision's AlexNet)"),
    "digits_cnn": (38_866, 38_866, (1, 8, 8), 10,
        "cnnkit's default for small images (VGG-style, batch norm)"),
    "digitsnet": (2_125, 2_125, (1, 8, 8), 10,
        "the article, section 5 (sklearn 8x8 digits)"),
    "googlenet": (13_378_280, 6_998_552, (3, 224, 224), 1000,
        "Szegedy et al. 2015, Going deeper with convolutions (Inception v1)"),
    "googlenet_bn": (13_385_816, 7_005_832, (3, 224, 224), 1000,
        "Szegedy et al. 2015 with batch norm (Ioffe & Szegedy 2015)"),
    "lenet5": (60_000, 60_000, (1, 32, 32), 10,
        "LeCun et al. 1998, Gradient-based learning applied to document recognition"),
    "lenet5_modern": (61_706, 61_706, (1, 28, 28), 10,
        "LeCun et al. 1998, modernised (ReLU, max pool, full C3)"),
    "resnet101": (44_549_160, 44_549_160, (3, 224, 224), 1000,
        "He et al. 2016, Deep residual learning (101-layer)"),
    "resnet152": (60_192_808, 60_192_808, (3, 224, 224), 1000,
        "He et al. 2016, Deep residual learning (152-layer)"),
    "resnet18": (11_689_512, 11_689_512, (3, 224, 224), 1000,
        "He et al. 2016, Deep residual learning (18-layer)"),
    "resnet34": (21_797_672, 21_797_672, (3, 224, 224), 1000,
        "He et al. 2016, Deep residual learning (34-layer)"),
    "resnet50": (25_557_032, 25_557_032, (3, 224, 224), 1000,
        "He et al. 2016, Deep residual learning (50-layer)"),
    "vgg11": (132_863_336, 132_863_336, (3, 224, 224), 1000,
        "Simonyan & Zisserman 2015, configuration A"),
    "vgg11_bn": (132_868_840, 132_868_840, (3, 224, 224), 1000,
        "Simonyan & Zisserman 2015, configuration A with batch norm"),
    "vgg13": (133_047_848, 133_047_848, (3, 224, 224), 1000,
        "Simonyan & Zisserman 2015, configuration B"),
    "vgg13_bn": (133_053_736, 133_053_736, (3, 224, 224), 1000,
        "Simonyan & Zisserman 2015, configuration B with batch norm"),
    "vgg16": (138_357_544, 138_357_544, (3, 224, 224), 1000,
        "Simonyan & Zisserman 2015, configuration D"),
    "vgg16_bn": (138_365_992, 138_365_992, (3, 224, 224), 1000,
        "Simonyan & Zisserman 2015, configuration D with batch norm"),
    "vgg16_c": (133_638_952, 133_638_952, (3, 224, 224), 1000,
        "Simonyan & Zisserman 2015, configuration C"),
    "vgg16_c_bn": (133_647_400, 133_647_400, (3, 224, 224), 1000,
        "Simonyan & Zisserman 2015, configuration C with batch norm"),
    "vgg19": (143_667_240, 143_667_240, (3, 224, 224), 1000,
        "Simonyan & Zisserman 2015, configuration E"),
    "vgg19_bn": (143_678_248, 143_678_248, (3, 224, 224), 1000,
        "Simonyan & Zisserman 2015, configuration E with batch norm"),}


def model_table() -> list[dict]:
    """One row per model, by name: name, paper, trainable parameters (all, and in the inference path where
    training-only modules such as auxiliary classifiers make them differ), default input size and classes."""
    rows = {name: recorded_row(name) for name in RECORDED}
    unrecorded = [name for name in registered_names() if name not in RECORDED]
    if unrecorded:  # registered in this process by a caller: count it (this imports torch, already imported)
        from cnnkit.models.stats import model_row

        rows.update((name, model_row(name)) for name in unrecorded)
    return [rows[name] for name in sorted(rows)]


def recorded_row(name: str) -> dict:
    """The table row of a recorded built-in model."""
    parameters, inference, input_size, classes, paper = RECORDED[name]
    return {"name": name, "paper": paper, "parameters": parameters, "inference_parameters": inference,
            "input_size": "x".join(map(str, input_size)), "num_classes": classes}
