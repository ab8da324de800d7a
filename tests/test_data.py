"""Data sources made from small files written here, splits, preprocessing, augmentation and batching."""

import gzip
import os

import numpy as np
import pytest
import torch
from PIL import Image

from cnnkit import CnnkitError
from cnnkit.data import Preprocessing, load_source, stratified_split
from cnnkit.data.augment import random_flip, random_shift
from cnnkit.data.batches import epoch_order, num_batches, tensor_batches


def write_folder(root, classes=("cat", "dog"), per_class=3, size=(6, 5), mode="L"):
    rng = np.random.default_rng(0)
    for c in classes:
        (root / c).mkdir(parents=True)
        for i in range(per_class):
            shape = (size[0], size[1]) if mode == "L" else (size[0], size[1], 3)
            Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8), mode).save(root / c / f"{i}.png")
    return root


def test_digits_builtin():
    data = load_source("digits")
    assert data.images.shape == (1797, 1, 8, 8) and data.images.max() == 16
    assert data.class_names == [str(i) for i in range(10)] and data.labels[:10].tolist() == list(range(10))


def test_image_folder_grey_rgb_and_resize(tmp_path):
    grey = load_source(str(write_folder(tmp_path / "grey")))
    assert grey.images.shape == (6, 1, 6, 5) and grey.class_names == ["cat", "dog"]
    assert grey.labels.tolist() == [0, 0, 0, 1, 1, 1]
    expected = np.asarray(Image.open(tmp_path / "grey" / "dog" / "1.png"), dtype=np.float32)
    np.testing.assert_array_equal(grey.images[4, 0].numpy(), expected)
    rgb = load_source(str(write_folder(tmp_path / "rgb", mode="RGB")), image_size=(4, 4))
    assert rgb.images.shape == (6, 3, 4, 4)
    Image.new("RGB", (5, 6)).save(tmp_path / "grey" / "cat" / "x.jpg")  # one RGB file turns the set RGB
    assert load_source(str(tmp_path / "grey")).images.shape[1] == 3


def test_image_folder_errors(tmp_path):
    root = write_folder(tmp_path / "mixed")
    Image.new("L", (9, 9)).save(root / "cat" / "big.png")
    with pytest.raises(CnnkitError, match="mixed image sizes.*--image-size"):
        load_source(str(root))
    assert load_source(str(root), image_size=(8, 8)).images.shape == (7, 1, 8, 8)
    (tmp_path / "empty").mkdir()
    with pytest.raises(CnnkitError, match="the folder is empty"):
        load_source(str(tmp_path / "empty"))
    root = write_folder(tmp_path / "noimg")
    (root / "bird").mkdir()
    with pytest.raises(CnnkitError, match="bird: class folder holds no images"):
        load_source(str(root))
    root = write_folder(tmp_path / "trunc")
    data = (root / "cat" / "0.png").read_bytes()
    (root / "cat" / "0.png").write_bytes(data[: len(data) // 2])
    with pytest.raises(CnnkitError, match="0.png: unreadable or truncated"):
        load_source(str(root))
    with pytest.raises(CnnkitError, match="no such file or folder"):
        load_source(str(tmp_path / "missing"))


def test_symlink_outside_folder_is_skipped(tmp_path, capsys):
    root = write_folder(tmp_path / "root")
    outside = write_folder(tmp_path / "elsewhere", classes=("x",))
    os.symlink(outside / "x" / "0.png", root / "cat" / "link.png")
    data = load_source(str(root))
    assert len(data) == 6
    assert "link.png: it leads outside" in capsys.readouterr().err


def write_idx(path, array, magic, compress=False):
    header = magic.to_bytes(4, "big") + b"".join(d.to_bytes(4, "big") for d in array.shape)
    blob = header + array.astype(np.uint8).tobytes()
    path.write_bytes(gzip.compress(blob) if compress else blob)


@pytest.mark.parametrize("compress", [False, True])
def test_mnist_idx(tmp_path, compress):
    images = np.arange(3 * 4 * 4).reshape(3, 4, 4) % 256
    suffix = ".gz" if compress else ""
    write_idx(tmp_path / f"train-images-idx3-ubyte{suffix}", images, 0x803, compress)
    write_idx(tmp_path / f"train-labels-idx1-ubyte{suffix}", np.array([2, 0, 1]), 0x801, compress)
    data = load_source(str(tmp_path))
    assert data.images.shape == (3, 1, 4, 4) and data.labels.tolist() == [2, 0, 1]
    np.testing.assert_array_equal(data.images[1, 0].numpy(), images[1])


def test_mnist_idx_errors(tmp_path):
    write_idx(tmp_path / "train-images-idx3-ubyte", np.zeros((2, 4, 4)), 0x801)
    write_idx(tmp_path / "train-labels-idx1-ubyte", np.array([0, 1]), 0x801)
    with pytest.raises(CnnkitError, match="wrong magic number 0x00000801, expected 0x00000803"):
        load_source(str(tmp_path))
    write_idx(tmp_path / "train-images-idx3-ubyte", np.zeros((2, 4, 4)), 0x803)
    (tmp_path / "train-images-idx3-ubyte").write_bytes((tmp_path / "train-images-idx3-ubyte").read_bytes()[:-3])
    with pytest.raises(CnnkitError, match="header promises 32 bytes"):
        load_source(str(tmp_path))


def test_cifar_binary(tmp_path):
    records = np.zeros((2, 3073), dtype=np.uint8)
    records[:, 0] = [3, 9]
    records[1, 1:1025] = 200  # red plane of the second image
    (tmp_path / "data_batch_1.bin").write_bytes(records.tobytes())
    data = load_source(str(tmp_path))
    assert data.images.shape == (2, 3, 32, 32) and data.labels.tolist() == [3, 9]
    assert data.images[1, 0].max() == 200 and data.images[1, 1].max() == 0
    assert data.class_names[3] == "cat"
    (tmp_path / "data_batch_1.bin").write_bytes(records.tobytes()[:-1])
    with pytest.raises(CnnkitError, match="not a whole number of 3073-byte"):
        load_source(str(tmp_path))


def test_npz_and_csv(tmp_path):
    x = np.random.default_rng(0).integers(0, 255, (4, 5, 5, 3))
    np.savez(tmp_path / "d.npz", x=x, y=np.array([0, 1, 1, 0]))
    data = load_source(str(tmp_path / "d.npz"))
    assert data.images.shape == (4, 3, 5, 5)
    np.testing.assert_array_equal(data.images[2].numpy(), x[2].transpose(2, 0, 1))
    np.savez(tmp_path / "obj.npz", x=np.array([object()] * 2), y=np.array([0, 1]))
    with pytest.raises(CnnkitError, match="x.npy holds Python objects"):
        load_source(str(tmp_path / "obj.npz"))
    rows = ["label," + ",".join(f"pixel{i}" for i in range(4)), "1,0,255,3,4", "0,9,8,7,6"]
    (tmp_path / "d.csv").write_text("\n".join(rows) + "\n")
    data = load_source(str(tmp_path / "d.csv"))
    assert data.images.shape == (2, 1, 2, 2) and data.labels.tolist() == [1, 0]
    assert data.images[0].flatten().tolist() == [0, 255, 3, 4]
    (tmp_path / "bad.csv").write_text("label,p0,p1,p2,p3\n1,0,x,3,4\n")
    with pytest.raises(CnnkitError, match="line 2 holds a non-numeric value 'x'"):
        load_source(str(tmp_path / "bad.csv"))


def test_stratified_split_is_deterministic_and_stratified():
    labels = load_source("digits").labels
    a, b = stratified_split(labels, 0.1, 0.2, seed=3), stratified_split(labels, 0.1, 0.2, seed=3)
    assert torch.equal(a.test, b.test) and len(a.test) == 360
    parts = torch.cat([a.train, a.val, a.test])
    assert len(parts.unique()) == len(labels)  # disjoint and complete
    overall = torch.bincount(labels, minlength=10).float() / len(labels)
    test_share = torch.bincount(labels[a.test], minlength=10).float() / len(a.test)
    assert (overall - test_share).abs().max() < 0.01
    assert not torch.equal(a.test, stratified_split(labels, 0.1, 0.2, seed=4).test)
    with pytest.raises(CnnkitError, match="test_fraction must be in"):
        stratified_split(labels, 0.1, 1.5, seed=0)


def test_preprocessing_fitted_on_training_images_only():
    train = torch.tensor([[[[0.0, 10.0]]], [[[4.0, 20.0]]]])  # (2, 1, 1, 2)
    minmax = Preprocessing.fit("minmax", train)
    torch.testing.assert_close(minmax(train), torch.tensor([[[[0.0, 0.0]]], [[[1.0, 1.0]]]]))
    torch.testing.assert_close(minmax(torch.tensor([[[[8.0, 15.0]]]])), torch.tensor([[[[2.0, 0.5]]]]))
    standard = Preprocessing.fit("standardize", train)
    values = train.flatten()
    torch.testing.assert_close(standard(train).flatten(), (values - values.mean()) / values.std())
    with pytest.raises(CnnkitError, match="3 channels; the model expects 1"):
        standard(torch.zeros(1, 3, 1, 2))


def test_random_shift_moves_pixels_with_zero_fill():
    image = torch.zeros(1, 1, 5, 5)
    image[0, 0, 2, 2] = 1.0
    shifted = random_shift(image.repeat(200, 1, 1, 1), 1, torch.Generator().manual_seed(0))
    positions = {tuple(torch.nonzero(s[0])[0].tolist()) for s in shifted}
    assert positions == {(r, c) for r in (1, 2, 3) for c in (1, 2, 3)}  # every shift within one pixel occurs
    assert torch.all(shifted.sum(dim=(1, 2, 3)) == 1)
    flipped = random_flip(torch.arange(6.0).reshape(1, 1, 2, 3).repeat(50, 1, 1, 1), torch.Generator().manual_seed(0))
    assert {tuple(f[0, 0].tolist()) for f in flipped} == {(0.0, 1.0, 2.0), (2.0, 1.0, 0.0)}


def test_batches_cover_every_sample_and_split_across_processes():
    x, y = torch.arange(10.0)[:, None, None, None], torch.arange(10)
    order = epoch_order(10, True, seed=0, epoch=1)
    assert torch.equal(order, epoch_order(10, True, seed=0, epoch=1))
    seen = torch.cat([b[1] for b in tensor_batches(x, y, 3, order)])
    assert sorted(seen.tolist()) == list(range(10)) and num_batches(10, 3, False) == 4
    assert len(list(tensor_batches(x, y, 3, order, drop_last=True))) == 3 == num_batches(10, 3, True)
    shares = [torch.cat([b[1] for b in tensor_batches(x, y, 2, order, rank=r, world_size=2)]) for r in (0, 1)]
    assert len(set(shares[0].tolist()) & set(shares[1].tolist())) == 0 and len(shares[0]) == len(shares[1]) == 5
