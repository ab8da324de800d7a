"""Keras / TensorFlow weights into cnnkit, checked against NumPy arithmetic on the same weights."""

from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from cnnkit import CnnkitError
from cnnkit.checkpoint import model_from_checkpoint
from cnnkit.cli import main
from cnnkit.interop import dense_kernel_from_tf, keras_momentum_to_torch, load_keras_into, read_keras_weights
from cnnkit.layers import Flatten
from cnnkit.models import get_model
from tests import tf_reference as ref

FIXTURES = Path(__file__).parent / "fixtures"


def numpy_digits_forward(x_nhwc: np.ndarray, w: dict, eps: float = 1e-3) -> np.ndarray:
    """The Keras digits network in NumPy (NHWC), from the fixture's raw Keras variables."""
    relu = lambda a: np.maximum(a, 0)  # noqa: E731
    h = relu(ref.conv2d_nhwc(x_nhwc, w["conv2d.0"], (1, 1), "SAME") + w["conv2d.1"])
    h = ref.conv2d_nhwc(h, w["conv2d_1.0"], (2, 2), "SAME") + w["conv2d_1.1"]
    gamma, beta, mean, var = (w[f"batch_normalization.{i}"] for i in range(4))
    h = relu((h - mean) / np.sqrt(var + eps) * gamma + beta)
    h = ref.pool_nhwc(h, (3, 3), (2, 2), "SAME", "max").reshape(len(h), -1)  # Keras Flatten: NHWC order
    h = relu(h @ w["dense.0"] + w["dense.1"])
    return h @ w["dense_1.0"] + w["dense_1.1"]


@pytest.mark.parametrize("name", ["digitsnet.weights.h5", "digitsnet.keras"])
def test_keras_digits_weights_give_numpy_outputs(name):
    model = get_model("digitsnet")
    assert load_keras_into(model, read_keras_weights(FIXTURES / name)) == 5
    x = np.random.default_rng(0).random((4, 8, 8, 1))
    expected = numpy_digits_forward(x, dict(np.load(FIXTURES / "digitsnet_weights.npz")))
    got = model.eval()(torch.tensor(x, dtype=torch.float32).permute(0, 3, 1, 2)).detach().numpy()
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4)


def test_flatten_order_fix_for_nchw_models():
    rng = np.random.default_rng(1)
    maps = rng.normal(size=(2, 3, 4, 5)).astype(np.float32)  # (H, W, C) = (3, 4, 5) in TF
    kernel = rng.normal(size=(3 * 4 * 5, 6)).astype(np.float32)
    tf_out = maps.reshape(2, -1) @ kernel  # TF: NHWC flatten, then the dense kernel
    dense = nn.Linear(60, 6, bias=False)
    with torch.no_grad():
        dense.weight.copy_(dense_kernel_from_tf(kernel, nhwc_shape=(3, 4, 5)))
    ours = dense(Flatten()(torch.from_numpy(maps).permute(0, 3, 1, 2)))  # cnnkit: NCHW flatten
    np.testing.assert_allclose(ours.detach().numpy(), tf_out, rtol=1e-5, atol=1e-5)
    assert keras_momentum_to_torch(0.99) == pytest.approx(0.01)


def test_mismatch_names_the_first_layer(tmp_path):
    with pytest.raises(CnnkitError, match=r"shapes differ at features.conv1 \(Keras layer 'conv2d'\)"):
        load_keras_into(get_model("digitsnet", in_channels=3), read_keras_weights(FIXTURES / "digitsnet.weights.h5"))
    with pytest.raises(CnnkitError, match="the Keras file has 2 dense layers, the model 3"):
        load_keras_into(get_model("lenet5_modern", input_size=8), read_keras_weights(FIXTURES / "digitsnet.keras"))
    (tmp_path / "bad.weights.h5").write_bytes(b"not hdf5 at all")
    with pytest.raises(CnnkitError, match="not a readable Keras weights file"):
        read_keras_weights(tmp_path / "bad.weights.h5")


def test_import_weights_cli_and_trust(tmp_path, capsys):
    out = tmp_path / "imported"
    assert main(["import-weights", str(FIXTURES / "digitsnet.keras"), "--model", "digitsnet", "--out", str(out)]) == 0
    model, preprocessing, meta = model_from_checkpoint(out)
    assert preprocessing is None and meta["imported_from"].endswith("digitsnet.keras")
    assert main(["import-weights", str(FIXTURES / "digitsnet.keras"), "--model", "digitsnet", "--out", str(out)]) == 2
    assert "already exists" in capsys.readouterr().err
    torch.save(model.state_dict(), tmp_path / "w.pt")
    assert main(["import-weights", str(tmp_path / "w.pt"), "--model", "digitsnet", "--out", str(tmp_path / "p")]) == 2
    assert "--trust" in capsys.readouterr().err
    assert main(["import-weights", str(tmp_path / "w.pt"), "--model", "digitsnet", "--trust",
                 "--out", str(tmp_path / "p")]) == 0
    again, _, _ = model_from_checkpoint(tmp_path / "p")
    for a, b in zip(model.state_dict().values(), again.state_dict().values(), strict=True):
        assert torch.equal(a, b)
    assert main(["evaluate", str(tmp_path / "w.pt")]) == 2  # a pickle is never opened as a checkpoint
    assert "pickle-based checkpoints are refused" in capsys.readouterr().err


class Evil:
    def __reduce__(self):
        return (print, ("pwned",))


def test_trusted_pickle_still_refuses_code(tmp_path, capsys):
    import pickle

    (tmp_path / "evil.pt").write_bytes(pickle.dumps({"x": Evil()}))
    assert main(["import-weights", str(tmp_path / "evil.pt"), "--model", "digitsnet", "--trust",
                 "--out", str(tmp_path / "e")]) == 2
    captured = capsys.readouterr()
    assert "pwned" not in captured.out and "not a plain tensor state dict" in captured.err


def test_keras_resnet_names_map_shortcuts_correctly(tmp_path):
    """keras.applications names (conv2_block1_0_conv = shortcut) land on cnnkit's matching tensors."""
    import h5py

    model = get_model("resnet18", num_classes=10, input_size=32)
    rng = np.random.default_rng(0)
    expected = {}
    with h5py.File(tmp_path / "r.weights.h5", "w") as file:
        def put(name, arrays):
            group = file.create_group(f"layers/{name}/vars")
            for i, a in enumerate(arrays):
                group.create_dataset(str(i), data=a)
            expected[name] = arrays

        def conv(name, k, cin, cout):
            put(name, [rng.normal(size=(k, k, cin, cout)).astype(np.float32)])

        def bn(name, c):
            put(name, [rng.random(c, dtype=np.float32) + 0.5 for _ in range(4)])

        conv("conv1_conv", 3, 3, 64)
        bn("conv1_bn", 64)
        cin = 64
        for stage, width in zip((2, 3, 4, 5), (64, 128, 256, 512), strict=True):
            for block in (1, 2):
                if block == 1 and stage > 2:  # projection shortcut, written first as Keras does
                    conv(f"conv{stage}_block1_0_conv", 1, cin, width)
                    bn(f"conv{stage}_block1_0_bn", width)
                conv(f"conv{stage}_block{block}_1_conv", 3, cin if block == 1 else width, width)
                bn(f"conv{stage}_block{block}_1_bn", width)
                conv(f"conv{stage}_block{block}_2_conv", 3, width, width)
                bn(f"conv{stage}_block{block}_2_bn", width)
            cin = width
        put("predictions", [rng.normal(size=(512, 10)).astype(np.float32), np.zeros(10, np.float32)])
    load_keras_into(model, read_keras_weights(tmp_path / "r.weights.h5"), bn_epsilon=1.001e-5)
    shortcut = model.features[2][0].shortcut[0].weight  # conv3_block1_0_conv: 1x1, 64 -> 128
    np.testing.assert_array_equal(shortcut.detach().numpy(), expected["conv3_block1_0_conv"][0].transpose(3, 2, 0, 1))
    second = model.features[2][0].residual[3].weight  # conv3_block1_2_conv
    np.testing.assert_array_equal(second.detach().numpy(), expected["conv3_block1_2_conv"][0].transpose(3, 2, 0, 1))
    mean = model.features[4][1].residual[1].running_mean  # conv5_block2_1_bn moving mean
    np.testing.assert_array_equal(mean.numpy(), expected["conv5_block2_1_bn"][2])
    assert model.features[4][1].residual[1].eps == 1.001e-5
