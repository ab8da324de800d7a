"""Import plumbing: layout converters, graph pairing order, stated preprocessing, size caps on .keras archives,
and the trust model for pickles. Outputs against real Keras are in test_keras_real.py."""

import io
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from cnnkit import CnnkitError
from cnnkit.cli import main
from cnnkit.data.preprocess import Preprocessing
from cnnkit.interop import dense_kernel_from_tf, keras_momentum_to_torch
from cnnkit.interop.graph import Op, canonical_order
from cnnkit.layers import Flatten
from cnnkit.store.checkpoint import model_from_checkpoint

REAL = Path(__file__).parent / "fixtures" / "keras_real"


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


def test_canonical_order_visits_the_residual_branch_first():
    """Keras' Add lists the shortcut first, cnnkit's block computes the residual first: both orders agree."""
    def order(add_inputs: list[str]) -> list[str]:
        ops = [Op("conv", "stem", "", ["input"]), Op("conv", "short", "", ["stem"]), Op("conv", "res1", "", ["stem"]),
               Op("relu", "res_relu", "", ["res1"]), Op("conv", "res2", "", ["res_relu"]),
               Op("add", "add", "", add_inputs), Op("relu", "out", "", ["add"])]
        return [op.name for op in canonical_order({op.name: op for op in ops}, "out")]

    expected = ["stem", "res1", "res_relu", "res2", "short", "add", "out"]
    assert order(["short", "res2"]) == order(["res2", "short"]) == expected


def test_stated_preprocessing_is_x_minus_mean_over_std():
    pre = Preprocessing.stated((0.485, 0.456, 0.406), (0.229, 0.224, 0.225), channels=3)
    x = torch.full((1, 3, 1, 1), 0.5)
    expected = [(0.5 - 0.485) / 0.229, (0.5 - 0.456) / 0.224, (0.5 - 0.406) / 0.225]
    np.testing.assert_allclose(pre(x).flatten().numpy(), expected, rtol=1e-6)
    assert pre.kind == "standardize"
    one_value = Preprocessing.stated((8.0,), (16.0,), channels=1)
    assert torch.equal(one_value(torch.full((1, 1, 2, 2), 16.0)), torch.full((1, 1, 2, 2), 0.5))
    with pytest.raises(CnnkitError, match="std must be positive"):
        Preprocessing.stated((0.0,), (0.0,), 1)
    with pytest.raises(CnnkitError, match="mean must be 1 or 3 finite numbers"):
        Preprocessing.stated((0.0, 1.0), (1.0,), 3)


def keras_archive(weights: bytes, config: bytes = b'{"class_name": "Sequential", "config": {"layers": []}}') -> bytes:
    """A .keras zip archive holding `config` and `weights` (as model.weights.h5), deflated."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("config.json", config)
        archive.writestr("model.weights.h5", weights)
    return buffer.getvalue()


def test_keras_zip_bomb_is_refused_before_inflating(tmp_path, capsys):
    """An archive member declaring 3 GiB (issue 13: a .keras zip bomb raised MemoryError) is refused by its
    declared size: a one-line error naming the cap and how to raise it, and no file written."""
    data = bytearray(keras_archive(b"\0" * 1000))
    central = data.rindex(b"PK\x01\x02")  # the last central directory entry: model.weights.h5
    data[central + 24:central + 28] = (3 * 1024**3).to_bytes(4, "little")  # its uncompressed size
    (tmp_path / "bomb.keras").write_bytes(bytes(data))
    assert main(["import-weights", str(tmp_path / "bomb.keras"), "--model", "digitsnet",
                 "--out", str(tmp_path / "b")]) == 2
    error = capsys.readouterr().err.strip()
    assert "archive member model.weights.h5 inflates to: 3,221,225,472 exceeds the limit of 2,147,483,648" in error
    assert "set CNNKIT_MAX_DECOMPRESSED_BYTES to raise it" in error and len(error.splitlines()) == 1
    assert not (tmp_path / "b.json").exists()


def test_keras_member_and_array_caps_can_be_lowered(tmp_path, monkeypatch, capsys):
    (tmp_path / "zeros.keras").write_bytes(keras_archive(b"\0" * 4_000_000))  # 4 MB inflating from 4 kB
    monkeypatch.setenv("CNNKIT_MAX_DECOMPRESSED_BYTES", "1000000")
    assert main(["import-weights", str(tmp_path / "zeros.keras"), "--model", "digitsnet",
                 "--out", str(tmp_path / "z")]) == 2
    assert "4,000,000 exceeds the limit of 1,000,000" in capsys.readouterr().err
    monkeypatch.setenv("CNNKIT_MAX_ARRAY_ELEMENTS", "100")  # digitsnet's conv2 kernel has 450 values
    assert main(["import-weights", str(REAL / "digitsnet.keras"), "--model", "digitsnet",
                 "--out", str(tmp_path / "d")]) == 2
    assert "elements: 450 exceeds the limit of 100" in capsys.readouterr().err


@pytest.mark.parametrize(("flags", "message"), [
    (["--model-option", "width=100000"], "resnet50: parameter values: 57,190,229,609,727 exceeds the limit"),
    (["--input-size", "3x9999x9999"], "--input-size: side: 9,999 exceeds the limit of 4,096"),
    (["--num-classes", "1000000000"], "resnet50: classes: 1,000,000,000 exceeds the limit of 100,000"),
])
def test_sizes_from_flags_are_capped_before_building(tmp_path, capsys, flags, message):
    assert main(["import-weights", str(REAL / "resnet50_w4.keras"), "--model", "resnet50", *flags,
                 "--out", str(tmp_path / "r")]) == 2
    assert message in capsys.readouterr().err


def test_a_huge_input_in_the_keras_config_is_refused(tmp_path, capsys):
    """A config whose input layer claims 10^12 channels would make the model allocate petabytes."""
    archive = zipfile.ZipFile(REAL / "digitsnet.keras")
    config = archive.read("config.json").replace(b'"batch_shape": [null, 8, 8, 1]',
                                                   b'"batch_shape": [null, 8, 8, 1000000000000]')
    assert b"1000000000000" in config
    (tmp_path / "huge.keras").write_bytes(keras_archive(archive.read("model.weights.h5"), config))
    assert main(["import-weights", str(tmp_path / "huge.keras"), "--model", "digitsnet",
                 "--out", str(tmp_path / "h")]) == 2
    assert "the Keras input has 1000000000000 channels; cnnkit models take 1 to 64" in capsys.readouterr().err


@pytest.mark.parametrize(("config", "message"), [
    (b"not json", "config.json: not valid JSON"),
    (b"[1, 2]", "expected a Keras model config"),
    (b'{"class_name": "Sequential", "config": {"layers": [{"class_name": "Conv2D", "config": {"name": "c", '
     b'"kernel_size": "big"}}]}}', "layer 'c' has kernel_size='big'; expected two positive integers"),
    (b'{"class_name": "Sequential", "config": {"layers": [{"class_name": "Conv2D", "config": {"name": "c", '
     b'"kernel_size": 3, "strides": 1}}]}}', "layer 'c' (Conv2D) has a config cnnkit cannot read (KeyError"),
])
def test_malformed_keras_configs_get_one_line(tmp_path, capsys, config, message):
    import h5py

    weights = io.BytesIO()
    with h5py.File(weights, "w") as file:
        file.create_group("layers/conv2d/vars")
    (tmp_path / "m.keras").write_bytes(keras_archive(weights.getvalue(), config))
    assert main(["import-weights", str(tmp_path / "m.keras"), "--model", "digitsnet",
                 "--out", str(tmp_path / "m")]) == 2
    error = capsys.readouterr().err.strip()
    assert message in error and len(error.splitlines()) == 1


def test_import_weights_cli_and_trust(tmp_path, capsys):
    out = tmp_path / "imported"
    assert main(["import-weights", str(REAL / "digitsnet.keras"), "--model", "digitsnet", "--out", str(out)]) == 0
    model, preprocessing, meta = model_from_checkpoint(out)
    assert preprocessing is None and meta["imported_from"].endswith("digitsnet.keras")
    assert main(["import-weights", str(REAL / "digitsnet.keras"), "--model", "digitsnet", "--out", str(out)]) == 2
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
