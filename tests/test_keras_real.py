"""Files written by real Keras 3 (tests/fixtures/keras_real/make_fixtures.py, TensorFlow 2.21 / Keras 3.15.1),
imported through the command line: cnnkit's outputs must equal the outputs Keras computed for the same inputs."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from cnnkit.cli import main
from cnnkit.store.checkpoint import model_from_checkpoint

FIXTURES = Path(__file__).parent / "fixtures" / "keras_real"

CASES = [  # (Keras file, cnnkit model, extra flags, npz with inputs and Keras' outputs, Keras ends in softmax)
    ("digitsnet.keras", "digitsnet", [], "digitsnet", False),  # Sequential, .keras
    ("digitsnet.weights.h5", "digitsnet", [], "digitsnet", False),  # Sequential, bare weights: kinds in order
    ("resnet18_w4.weights.h5", "resnet18", ["--model-option", "width=4", "--keras-config",
                                            str(FIXTURES / "resnet18_w4.json")], "resnet18_w4", False),  # Functional
    ("resnet50_w4.keras", "resnet50", ["--model-option", "width=4"], "resnet50_w4", True),  # keras.applications code
    ("vgg16_w4.weights.h5", "vgg16", ["--model-option", "width=4", "--model-option", "fc_width=64",
                                      "--input-size", "3x64x64"], "vgg16_w4", True),
]


def keras_inputs(name: str) -> tuple[np.ndarray, np.ndarray]:
    """(inputs NHWC, Keras' outputs) of a fixture."""
    data = np.load(FIXTURES / f"{name}.npz")
    x = data["x"] if "x" in data else (data["pixels"] / 255.0).astype(np.float32)
    return x, data["y"]


@pytest.mark.parametrize(("weights", "model", "flags", "npz", "softmax"), CASES, ids=[c[0] for c in CASES])
def test_outputs_equal_keras(tmp_path, capsys, weights, model, flags, npz, softmax):
    out = tmp_path / "imported"
    assert main(["import-weights", str(FIXTURES / weights), "--model", model, "--out", str(out), *flags]) == 0
    net, _, _ = model_from_checkpoint(out)
    x, expected = keras_inputs(npz)
    with torch.no_grad():
        logits = net(torch.from_numpy(x).permute(0, 3, 1, 2))
    got = torch.softmax(logits, dim=1).numpy() if softmax else logits.numpy()  # cnnkit models give logits
    assert np.abs(got - expected).max() <= 1e-4 * np.abs(expected).max()


def test_conv_biases_fold_into_batch_norm_and_say_so(tmp_path, capsys):
    """keras.applications' ResNet50 convs carry biases; cnnkit's convs before BN have none."""
    assert main(["import-weights", str(FIXTURES / "resnet50_w4.keras"), "--model", "resnet50", "--model-option",
                 "width=4", "--out", str(tmp_path / "r")]) == 0
    printed = capsys.readouterr().out
    assert "folded 53 Keras conv bias(es) into the batch norm that follows" in printed
    assert "final softmax (predictions:softmax) is left out" in printed
    meta = json.loads((tmp_path / "r.json").read_text())
    assert meta["model"]["options"]["width"] == 4 and meta["model"]["input_size"] == [64, 64]  # from the config
    assert meta["model"]["num_classes"] == 10  # from the last Dense


def test_verbose_table_maps_shortcuts_and_epsilon(tmp_path, capsys):
    """The graph order puts Keras' shortcut conv (written before the residual convs) on cnnkit's shortcut."""
    assert main(["import-weights", str(FIXTURES / "resnet18_w4.weights.h5"), "--model", "resnet18",
                 "--model-option", "width=4", "--keras-config", str(FIXTURES / "resnet18_w4.json"),
                 "--out", str(tmp_path / "r"), "--verbose"]) == 0
    lines = {line.split()[0]: line for line in capsys.readouterr().out.splitlines() if line.strip()}
    assert "features.2.0.shortcut.0" in lines["conv3_block1_0_conv"]
    assert "features.2.0.residual.0" in lines["conv3_block1_1_conv"]
    assert "(1, 1, 4, 8) -> (8, 4, 1, 1)" in lines["conv3_block1_0_conv"]
    assert "epsilon 1.001e-05" in lines["conv5_block2_2_bn"]


def test_stated_input_scale_gives_keras_accuracy(tmp_path, capsys):
    """The digits net was trained on x/16 (white = 1): evaluate must feed it that, and then scores what Keras
    scored on the same 1,797 images. Stated as --white 16 --std 16 it is the same input."""
    keras_accuracy = float(np.load(FIXTURES / "digitsnet.npz")["accuracy"])
    for flags in (["--white", "1"], ["--white", "16", "--std", "16"]):
        out = tmp_path / flags[1]
        assert main(["import-weights", str(FIXTURES / "digitsnet.keras"), "--model", "digitsnet",
                     "--out", str(out), *flags]) == 0
        capsys.readouterr()
        assert main(["evaluate", str(out), "--data", "digits", "--json"]) == 0
        assert round(json.loads(capsys.readouterr().out)["accuracy"] * 1797) == round(keras_accuracy * 1797)
    assert main(["import-weights", str(FIXTURES / "digitsnet.keras"), "--model", "digitsnet",
                 "--out", str(tmp_path / "raw")]) == 0
    assert "raw 8-bit values; state --white/--mean/--std" in capsys.readouterr().out


def test_a_different_pool_is_refused_though_shapes_agree(tmp_path, capsys):
    """A 2x2/2 pool on 4x4 maps gives 2x2 maps, as digitsnet's 3x3/2 SAME pool does: the windows tell them apart."""
    assert main(["import-weights", str(FIXTURES / "digitsnet_pool2.keras"), "--model", "digitsnet",
                 "--out", str(tmp_path / "p")]) == 2
    error = capsys.readouterr().err
    assert "MaxPooling2D 2x2/2 pad 0,0, 5x4x4 -> 5x2x2" in error
    assert "cnnkit features.pool2 (MaxPool2d 3x3/2 pad 0,0, 5x4x4 -> 5x2x2)" in error
    assert not (tmp_path / "p.json").exists()


def test_mismatches_name_the_first_differing_layer(tmp_path, capsys):
    assert main(["import-weights", str(FIXTURES / "digitsnet.keras"), "--model", "digits_cnn",
                 "--out", str(tmp_path / "d")]) == 2
    error = capsys.readouterr().err.strip()
    assert "differ at op 1: Keras layer conv2d (Conv2D 3x3/1 pad 1,1, 1x8x8 -> 10x8x8) vs cnnkit features.0" in error
    assert len(error.splitlines()) == 1


def test_branched_model_from_bare_weights_needs_its_config(tmp_path, capsys):
    assert main(["import-weights", str(FIXTURES / "resnet18_w4.weights.h5"), "--model", "resnet18",
                 "--model-option", "width=4", "--input-size", "3x16x16", "--num-classes", "10",
                 "--out", str(tmp_path / "r")]) == 2
    assert "holds no model graph and the cnnkit model has branches" in capsys.readouterr().err


def test_a_rescaling_layer_becomes_the_preprocessing(tmp_path, capsys):
    """digitsnet_rescaling holds its x/16 as a leading Rescaling layer and takes raw 0..16 digits: imported with
    white 16, evaluate scores what Keras scored; a --mean on top of it is refused."""
    keras_accuracy = float(np.load(FIXTURES / "digitsnet_rescaling.npz")["accuracy"])
    out = tmp_path / "rescaled"
    assert main(["import-weights", str(FIXTURES / "digitsnet_rescaling.keras"), "--model", "digitsnet",
                 "--white", "16", "--out", str(out)]) == 0
    assert "'rescaling' (Rescaling) scales the input inside the model" in capsys.readouterr().out
    assert main(["evaluate", str(out), "--data", "digits", "--json"]) == 0
    assert round(json.loads(capsys.readouterr().out)["accuracy"] * 1797) == round(keras_accuracy * 1797)
    assert main(["import-weights", str(FIXTURES / "digitsnet_rescaling.keras"), "--model", "digitsnet",
                 "--white", "16", "--mean", "3", "--out", str(tmp_path / "both")]) == 2
    assert "scales its input itself (layer 'rescaling': x * 0.0625 + 0)" in capsys.readouterr().err


def test_bgr_weights_take_rgb_images(tmp_path, capsys):
    """--bgr reverses the first conv's input channels: cnnkit on RGB equals Keras on the same image as BGR."""
    assert main(["import-weights", str(FIXTURES / "resnet50_w4.keras"), "--model", "resnet50", "--model-option",
                 "width=4", "--bgr", "--out", str(tmp_path / "bgr")]) == 0
    assert "features.0.0's input channels reversed" in capsys.readouterr().out
    net, _, _ = model_from_checkpoint(tmp_path / "bgr")
    bgr, expected = keras_inputs("resnet50_w4")  # what Keras read, taken as BGR
    rgb = torch.from_numpy(bgr[..., ::-1].copy()).permute(0, 3, 1, 2)
    with torch.no_grad():
        got = torch.softmax(net(rgb), dim=1).numpy()
    assert np.abs(got - expected).max() <= 1e-4 * np.abs(expected).max()
