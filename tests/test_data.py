"""Data sources made from small files written here, splits, preprocessing, augmentation and batching."""

import gzip
import io
import json
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


# ---- official test sets: the source's own test files are the test split ----

def write_idx_pair(folder, prefix, labels, marker):
    """An IDX pair whose images carry `marker` in their first pixel, so a test can tell which file each came from."""
    images = np.zeros((len(labels), 4, 4))
    images[:, 0, 0] = marker
    write_idx(folder / f"{prefix}-images-idx3-ubyte", images, 0x803)
    write_idx(folder / f"{prefix}-labels-idx1-ubyte", np.asarray(labels), 0x801)


def test_mnist_t10k_files_are_the_test_split(tmp_path):
    from cnnkit.analysis.inference import Trained, evaluation_data
    from cnnkit.train.config import TrainConfig
    from cnnkit.train.data import load_split, prepare_data

    write_idx_pair(tmp_path, "train", np.repeat(np.arange(10), 10), marker=1)  # 100 training images
    write_idx_pair(tmp_path, "t10k", np.repeat(np.arange(10), 3), marker=2)  # 30 test images
    config = TrainConfig(data=str(tmp_path), val_fraction=0.2, test_fraction=0.5, seed=0)
    dataset, split = load_split(config)
    first_pixel = dataset.images[:, 0, 0, 0]
    assert len(split.test) == 30 and torch.all(first_pixel[split.test] == 2)  # not 50% of 130
    assert len(split.val) == 20 and torch.all(first_pixel[split.val] == 1)  # val_fraction of the training files
    assert torch.equal(torch.bincount(dataset.labels[split.val]), torch.full((10,), 2))  # stratified
    assert len(split.train) == 80 and len(torch.cat([split.train, split.val, split.test]).unique()) == 130
    assert torch.equal(split.val, load_split(config)[1].val)
    other = TrainConfig(data=str(tmp_path), val_fraction=0.2, seed=1)
    assert not torch.equal(split.val, load_split(other)[1].val) and torch.equal(split.test, load_split(other)[1].test)
    notes = prepare_data(config, torch.device("cpu")).notes
    assert notes == ["test split: the source's own test set (t10k-images-idx3-ubyte, 30 images); --test-fraction "
                     "ignored"]
    trained = Trained(None, None, {"config": config.to_dict()}, [str(i) for i in range(10)], (1, 4, 4), 255.0)
    images, labels, _ = evaluation_data(trained, None)  # `cnnkit evaluate` tests on the same images
    assert torch.equal(images, dataset.images[split.test]) and torch.equal(labels, dataset.labels[split.test])


def test_a_test_file_alone_is_plain_data(tmp_path):
    from cnnkit.train.config import TrainConfig
    from cnnkit.train.data import load_split, prepare_data

    write_idx_pair(tmp_path, "t10k", np.repeat(np.arange(2), 10), marker=2)
    config = TrainConfig(data=str(tmp_path), val_fraction=0.1, test_fraction=0.2)
    dataset, split = load_split(config)
    assert dataset.official_test is None and len(split.test) == 4
    assert prepare_data(config, torch.device("cpu")).notes == []


def test_cifar_test_batch_is_the_test_split(tmp_path):
    from cnnkit.train.config import TrainConfig
    from cnnkit.train.data import load_split

    for name, count, marker in (("data_batch_1.bin", 20, 1), ("test_batch.bin", 10, 2)):
        records = np.zeros((count, 3073), dtype=np.uint8)
        records[:, 0] = np.arange(count) % 10
        records[:, 1] = marker
        (tmp_path / name).write_bytes(records.tobytes())
    dataset, split = load_split(TrainConfig(data=str(tmp_path), val_fraction=0.5, test_fraction=0.2))
    assert dataset.official_test_source == "test_batch.bin"
    assert len(split.test) == 10 and torch.all(dataset.images[split.test, 0, 0, 0] == 2)
    assert len(split.val) == 10 and torch.all(dataset.images[split.val, 0, 0, 0] == 1)


# ---- label values are class names ----

def test_label_values_are_class_names(tmp_path):
    np.savez(tmp_path / "d.npz", x=np.zeros((3, 2, 2)), y=np.array(["dog", "cat", "dog"]))
    data = load_source(str(tmp_path / "d.npz"))
    assert data.class_names == ["cat", "dog"] and data.labels.tolist() == [1, 0, 1]
    (tmp_path / "d.csv").write_text("7,0,0,0,0\n3,0,0,0,0\n7,1,1,1,1\n")
    data = load_source(str(tmp_path / "d.csv"))
    assert data.class_names == ["3", "7"] and data.labels.tolist() == [1, 0, 1]


def test_class_folder_names_are_kept_exactly(tmp_path):
    root = write_folder(tmp_path / "names", classes=("$x$", "a b", "50%"), per_class=1)
    assert load_source(str(root)).class_names == ["$x$", "50%", "a b"]


# ---- downscaling with an area filter, as TensorFlow's resize_area ----

def test_a_large_drawing_of_a_digit_shrinks_to_the_digit(tmp_path):
    from cnnkit.data.safety import decode_image

    digit = load_source("digits").images[0, 0].numpy() * (255 / 16)  # 8x8, 0..255
    drawing = np.kron(digit, np.ones((8, 8))).round().astype(np.uint8)  # the same digit drawn at 64x64
    Image.fromarray(drawing).save(tmp_path / "drawing.png")
    np.testing.assert_array_equal(decode_image(tmp_path / "drawing.png", (8, 8))[0], digit.round())
    noise = np.random.default_rng(0).integers(0, 256, (64, 64)).astype(np.uint8)
    reference = noise.astype(np.float64).reshape(8, 8, 8, 8).mean(axis=(1, 3))  # NumPy block average
    Image.fromarray(noise).save(tmp_path / "noise.png")
    np.testing.assert_array_equal(decode_image(tmp_path / "noise.png", (8, 8))[0], np.round(reference))
    np.savez(tmp_path / "noise.npz", x=noise[None], y=np.array([0]))
    in_memory = load_source(str(tmp_path / "noise.npz"), image_size=(8, 8)).images[0, 0].numpy()
    np.testing.assert_allclose(in_memory, reference, rtol=0, atol=1e-4)


def test_area_filter_by_hand_for_uneven_ratios_and_bilinear_for_enlarging():
    from cnnkit.data.resize import resize

    row = torch.tensor([10.0, 20.0, 30.0, 40.0, 50.0]).reshape(1, 1, 1, 5)
    # 5 -> 2: each output covers 2.5 inputs: (10 + 20 + 0.5*30) / 2.5 and (0.5*30 + 40 + 50) / 2.5
    torch.testing.assert_close(resize(row, (1, 2)).flatten(), torch.tensor([18.0, 42.0]))
    three = torch.tensor([0.0, 30.0, 60.0]).reshape(1, 1, 3, 1)  # 3 -> 2 along the height: (0 + 15)/1.5, (15 + 60)/1.5
    torch.testing.assert_close(resize(three, (2, 1)).flatten(), torch.tensor([10.0, 50.0]))
    # 2 -> 4, half-pixel centres at -0.25, 0.25, 0.75, 1.25 (clamped at the edges)
    pair = torch.tensor([0.0, 100.0]).reshape(1, 1, 1, 2)
    torch.testing.assert_close(resize(pair, (1, 4)).flatten(), torch.tensor([0.0, 25.0, 75.0, 100.0]))


# ---- progress bars, streaming, paths that are not data ----

def test_decoding_bar_obeys_the_progress_switch(tmp_path, capsys):
    root = write_folder(tmp_path / "many", per_class=250, size=(2, 2))
    for progress, shown in ((False, False), (None, False), (True, True)):  # None: stderr is not a terminal here
        load_source(str(root), progress=progress)
        captured = capsys.readouterr()
        assert ("decoding images" in captured.err) == shown and captured.out == ""


def test_stream_errors_name_the_file_on_one_line(tmp_path, capsys):
    from cnnkit.data.stream import FolderImages, stream_batches

    root = write_folder(tmp_path / "root", per_class=4)
    outside = write_folder(tmp_path / "elsewhere", classes=("x",))
    os.symlink(outside / "x" / "0.png", root / "cat" / "link.png")
    bad = root / "dog" / "2.png"
    bad.write_bytes(bad.read_bytes()[:60])  # header intact, pixels cut
    images = FolderImages(root, None)
    assert len(images) == 8 and "link.png: it leads outside" in capsys.readouterr().err  # as load_folder
    none = Preprocessing.fit("none", torch.zeros(1, 1, 6, 5))
    with pytest.raises(CnnkitError) as error:  # decoded in a worker process
        list(stream_batches(images, torch.arange(8), 4, False, none, torch.device("cpu"), workers=1))
    assert str(error.value).startswith(f"{bad}: unreadable or truncated image") and "\n" not in str(error.value)
    bad.unlink()
    Image.new("L", (9, 9)).save(bad)
    with pytest.raises(CnnkitError, match="mixed image sizes: .* pass --image-size") as error:
        list(stream_batches(images, torch.arange(8), 4, False, none, torch.device("cpu"), workers=0))
    with pytest.raises(CnnkitError, match="mixed image sizes: .* pass --image-size"):
        load_source(str(root))  # the same rule in memory


def test_paths_that_are_not_data(tmp_path, monkeypatch):
    from cnnkit.data.arrays import load_csv, load_npz
    from cnnkit.data.cifar import read_batch
    from cnnkit.data.idx import IMAGES_MAGIC, read_idx
    from cnnkit.data.safety import decode_image
    from cnnkit.train.config import TrainConfig
    from cnnkit.train.data import prepare_data

    monkeypatch.chdir(write_folder(tmp_path / "cwd"))  # a valid folder: "" must not read it
    with pytest.raises(CnnkitError, match=r"^the data path is empty \(''\)"):
        load_source("")
    with pytest.raises(CnnkitError, match="--stream reads image folders; '' is not a folder"):
        prepare_data(TrainConfig(data="", stream=True), torch.device("cpu"))
    with pytest.raises(CnnkitError, match="^/dev/null: not a regular file or folder"):
        load_source("/dev/null")
    (tmp_path / "data_batch_1.bin").write_bytes(bytes(3073))
    (tmp_path / "batches.meta.txt").mkdir()
    with pytest.raises(CnnkitError, match="batches.meta.txt: is a folder, expected a file"):
        load_source(str(tmp_path))
    missing = tmp_path / "missing"
    for read in (lambda: read_idx(missing, IMAGES_MAGIC), lambda: read_batch(missing), lambda: load_npz(missing),
                 lambda: load_csv(missing), lambda: decode_image(missing)):
        with pytest.raises(CnnkitError, match=f"^{missing}: no such file$"):
            read()


def test_an_array_file_trains_in_the_white_it_states_and_images_predict_in_it(tmp_path, capsys):
    """scikit-learn's digits as a 0..16 .npz: refused until --white says 16, then recorded, so that a PNG of a digit
    (0..255) predicts as its .npz row does; a resume keeps the recorded white and refuses another."""
    from sklearn.datasets import load_digits

    from cnnkit.cli import main

    digits, npz, run = load_digits(), tmp_path / "d16.npz", tmp_path / "run"
    np.savez(npz, x=digits.images, y=digits.target)
    assert main(["train", "--data", str(npz), "--out", str(tmp_path / "refused"), "--no-progress"]) == 2
    assert capsys.readouterr().err == (f"cnnkit train: error: {npz}: the largest value is 16; say which value is "
                                       "white with --white (16 for scikit-learn's digits, 255 for 8-bit images, 1 "
                                       "for 0..1 floats)\n")
    assert not (tmp_path / "refused").exists()
    assert main(["train", "--data", str(npz), "--white", "16", "--epochs", "2", "--out", str(run),
                 "--no-progress"]) == 0
    assert "white = 16 (stated; the data's largest value is 16)" in capsys.readouterr().out
    assert json.loads((run / "last.json").read_text())["data"]["pixel_max"] == 16
    rows = list(range(0, 1797, 90))
    for i in rows:  # 8-bit images of the same digits
        Image.fromarray(np.round(digits.images[i] * 255 / 16).astype(np.uint8)).save(tmp_path / f"{i}.png")
    np.save(tmp_path / "rows.npy", digits.images[rows][:, None])  # in the run's scale, as predict takes arrays

    def predicted(*inputs) -> list[int]:
        assert main(["predict", str(run), *map(str, inputs), "--json"]) == 0
        return [int(r["class"]) for r in json.loads(capsys.readouterr().out)]

    from_rows = predicted(tmp_path / "rows.npy")
    assert predicted(*(tmp_path / f"{i}.png" for i in rows)) == from_rows
    assert np.mean(np.array(from_rows) == digits.target[rows]) >= 0.7  # the labels: it learned something
    assert main(["train", "--resume", str(run), "--epochs", "3", "--white", "255"]) == 2
    assert "received --white 255.0: start a new run" in capsys.readouterr().err
    config = json.loads((run / "config.json").read_text())
    del config["white"]  # as a run made before the setting: its recorded scale is kept
    (run / "config.json").write_text(json.dumps(config))
    assert main(["train", "--resume", str(run), "--epochs", "3", "--no-progress"]) == 0
    assert "white = 16 (recorded by the run; the data's largest value is 16)" in capsys.readouterr().out
    assert json.loads((run / "last.json").read_text())["data"]["pixel_max"] == 16


def test_white_is_read_off_an_array_only_where_it_leaves_no_doubt(tmp_path):
    from cnnkit.train import TrainConfig, fit
    from cnnkit.train.config import SettingError
    from cnnkit.train.white import with_white

    digits = load_source("digits")
    for scale, white in ((255 / 16, 255.0), (1 / 16, 1.0)):  # 8-bit and 0..1 arrays train as before
        np.savez(tmp_path / "d.npz", x=digits.images[:300, 0].numpy() * scale, y=digits.labels[:300].numpy())
        log = io.StringIO()
        fit(TrainConfig(data=str(tmp_path / "d.npz"), epochs=1), out=tmp_path / str(white), progress=False,
            stream=log)
        assert json.loads((tmp_path / str(white) / "last.json").read_text())["data"]["pixel_max"] == white
        assert f"white = {white:g} (the data's largest value is {white:g})" in log.getvalue()
    for top, white in ((0.0, 1.0), (1.0, 1.0), (128.5, 255.0), (255.0, 255.0)):
        dataset = load_source("digits")
        dataset.pixel_max_known, dataset.largest = False, top
        assert with_white(dataset, None)[0].pixel_max == white
    for top in (1.5, 16.0, 128.0, 256.0, 65535.0):
        dataset.largest = top
        with pytest.raises(SettingError, match=rf"^digits: the largest value is {top:g}; say which value is white "
                                               r"with white= \(16 for"):
            with_white(dataset, None)
    with pytest.raises(SettingError, match=r"^digits: values reach 65535, above the stated white=255$"):
        with_white(dataset, 255.0)
