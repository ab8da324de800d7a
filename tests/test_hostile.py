"""Hostile input: every case exits 2 with one line naming the problem, no traceback, under a memory limit, and
leaves existing files untouched.

Add a case with one line in CASES: (name, command line, the first words of the error message). `{files}` is a
folder of hostile and valid files made by `make_files` and `make_checkpoints` (add a file there with one line
too), `{run}` a small trained run directory, `{tmp}` an empty folder for outputs. A command starting with
`FSIZE=N` runs with writes capped at N bytes per file, as on a full disk. All cases run in one subprocess
(cnnkit imported once) whose address space is capped, so a case that tries to allocate gigabytes fails the test
instead of swapping the machine.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import math
import os
import shlex
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

MEMORY_LIMIT = 6 * 1024**3  # bytes of address space for the whole subprocess (torch itself maps ~1-2 GiB)
RUNNER = Path(__file__).with_name("hostile_runner.py")

CASES: list[tuple[str, str, str]] = [
    # train: names and paths
    ("unknown model", "train --model nosuch --out {tmp}/a", "unknown model 'nosuch'"),
    # explore (helper exhard): --train checks its run folder before the server starts; a missing stem is named
    ("explore --train to an unwritable --out", "explore digits_cnn --train --out /proc/cnnkit_run --no-browser",
     "--out /proc/cnnkit_run: cannot create it in /proc"),
    ("explore --train to an empty --out", "explore digits_cnn --train --out '' --no-browser",
     "--out '' names no folder"),
    ("explore --train to an --out under a file", "explore digits_cnn --train --out {files}/digit.png/run --no-browser",
     "--out {files}/digit.png/run: {files}/digit.png is a file, not a folder"),
    ("explore a missing checkpoint stem", "explore {run}/nosuch --no-browser",
     "'{run}/nosuch' is neither a registered model"),
    ("explore with an empty --out but no --train", "explore digits_cnn --out '' --no-browser", "--out needs --train"),
    # sizes, scales and registry-only flags (helper fixes2): strict CxHxW, array scales, no silently ignored flag
    ("input size with a space", "summary resnet18 --input-size '3 x32x32'",
     "--input-size '3 x32x32': expected 3 sizes as digits joined by x, like 1x8x8 (no spaces or signs)"),
    ("input size ending in x", "summary digits_cnn --input-size 1x8x8x", "--input-size '1x8x8x': expected 3 sizes"),
    ("input size with a sign", "summary digits_cnn --input-size +1x8x8", "--input-size '+1x8x8': expected 3 sizes"),
    ("input size empty", "summary digits_cnn --input-size ''", "--input-size '': expected 3 sizes"),
    ("input size of two", "summary digits_cnn --input-size 8x8", "--input-size '8x8': expected 3 positive sizes"),
    ("explore input size empty", "explore digits_cnn --no-browser --input-size ''",
     "--input-size '': expected 3 sizes"),
    ("explore input size with a space", "explore digits_cnn --no-browser --input-size '1 x8x8'",
     "--input-size '1 x8x8': expected 3 sizes"),
    ("import size with a fraction", "import-weights {files}/weights.pt --trust --model digits_cnn --input-size "
     "1x8.0x8 --out {tmp}/iw", "--input-size '1x8.0x8': expected 3 sizes"),
    ("explain input in Arabic-Indic digits", "explain conv --input ٨x٨ --json", "--input '٨x٨': expected 2 sizes"),
    ("explain padding a superscript", "explain conv --padding ³ --json", "padding must be 'same', 'valid', an int"),
    ("summary of a run with --num-classes", "summary {run} --num-classes 5",
     "--num-classes 5 applies to a registered model name; {run} is a checkpoint whose model has 10 classes"),
    ("evaluate an npz past the model's white", "evaluate {run} --data {files}/white255.npz",
     "{files}/white255.npz: values reach 255, above white in the model's training scale (0..16); pass --white 255"),
    ("predict an npy past the model's white", "predict {run} {files}/white255.npy",
     "{files}/white255.npy: values reach 255, above white in the model's training scale (0..16); pass --white 255"),
    ("predict an npy past the stated white", "predict {run} {files}/white255.npy --white 100",
     "{files}/white255.npy: values reach 255, above the stated --white 100"),
    ("white of zero", "predict {run} {files}/white255.npy --white 0", "argument --white: expected a number above 0"),
    ("white for the run's own split", "evaluate {run} --white 255",
     "--white states the scale of an array file given with --data"),
    ("white for image files", "predict {run} {files}/digit.png --white 255",
     "--white states the scale of .npy arrays or an .npz/.csv --data file"),
    ("explain to an unknown format", "explain conv --out {tmp}/e.xyz",
     "{tmp}/e.xyz: a picture is written as .png, .jpg"),
    ("explain a gif named png", "explain conv --gif --out {tmp}/e.png", "{tmp}/e.png: --gif writes an animated GIF"),
    ("missing data", "train --data /nonexistent --out {tmp}/b", "/nonexistent: no such file or folder"),
    # inspection and use
    ("summary of an unknown name", "summary nosuchmodel", "'nosuchmodel' is neither a registered model"),
    ("evaluate a pickle", "evaluate {files}/weights.pt", "{files}/weights.pt: pickle-based checkpoints are refused"),
    ("predict a missing image", "predict {run} {files}/missing.png", "{files}/missing.png: no such file"),
    # data readers: sizes a file declares are capped before inflating; one line naming the file for the rest
    ("idx gzip bomb", "train --data {files}/bomb --out {tmp}/c",
     "{files}/bomb/train-images-idx3-ubyte.gz: values its header declares (70000x128x128): 1,146,880,000 exceeds"),
    ("idx dims overflow", "train --data {files}/overflow --out {tmp}/e",
     "{files}/overflow/train-images-idx3-ubyte: values its header declares (4294967295x4294967295x4294967295)"),
    ("npz deflate bomb", "train --data {files}/bomb.npz --out {tmp}/f",
     "{files}/bomb.npz: x.npy values (shape (50331648, 8, 8)): 3,221,225,472 exceeds the limit"),
    ("npz too many classes", "train --data {files}/classes.npz --out {tmp}/g",
     "{files}/classes.npz: distinct labels: 100,001 exceeds the limit of 100,000 (classes)"),
    ("npz 0-d arrays", "train --data {files}/scalar.npz --out {tmp}/h", "{files}/scalar.npz: x has shape ()"),
    ("npz huge pixels", "train --data {files}/huge.npz --out {tmp}/i", "{files}/huge.npz: x: pixel values reach 1e+30"),
    ("npz random bytes", "train --data {files}/noise.npz --out {tmp}/j", "{files}/noise.npz: not an NPZ file"),
    ("npz of objects", "evaluate {run} --data {files}/objects.npz", "{files}/objects.npz: x.npy holds Python objects"),
    ("csv field over csv's limit", "train --data {files}/long.csv --out {tmp}/k",
     "{files}/long.csv: line 2 holds a field longer than 131,072 characters"),
    ("csv of binary", "train --data {files}/binary.csv --out {tmp}/l", "{files}/binary.csv: not a UTF-8 text CSV"),
    ("cifar meta is a folder", "train --data {files}/cifar --out {tmp}/m",
     "{files}/cifar/batches.meta.txt: is a folder, expected a file"),
    ("data /dev/null", "train --data /dev/null --out {tmp}/n", "/dev/null: not a regular file or folder"),
    ("data empty", "train --data '' --out {tmp}/o", "the data path is empty"),
    ("folder truncated image", "train --data {files}/broken --out {tmp}/p",
     "{files}/broken/b/3.png: unreadable or truncated image"),
    ("stream truncated image", "train --data {files}/broken --stream --out {tmp}/q",
     "{files}/broken/b/3.png: unreadable or truncated image"),
    # train flags: every number checked before any work
    ("lr nan", "train --lr nan --out {tmp}/t1", "--lr must be a finite number above 0 and at most 1e6; received nan"),
    ("lr not a number", "train --lr abc --out {tmp}/t1", "argument --lr: invalid float value: 'abc'"),
    ("momentum negative", "train --optimizer sgd --momentum -1 --out {tmp}/t2", "--momentum must be between 0 and"),
    ("step size zero", "train --schedule step --step-size 0 --out {tmp}/t3", "--step-size must be a whole number"),
    ("step size negative", "train --step-size -1 --out {tmp}/t3", "--step-size must be a whole number"),
    ("gamma nan", "train --gamma nan --out {tmp}/t4", "--gamma must be above 0 and at most 1"),
    ("label smoothing 5", "train --label-smoothing 5 --out {tmp}/t5", "--label-smoothing must be between 0 and"),
    ("warm-up inf", "train --warmup-epochs inf --out {tmp}/t6", "--warmup-epochs must be a finite number"),
    ("seed beyond 2^63", "train --seed 9223372036854775808 --out {tmp}/t7", "--seed must be a whole number between"),
    ("shift a million", "train --shift 1000000 --out {tmp}/t8", "--shift must be a whole number of pixels"),
    ("shift larger than the image", "train --shift 9 --out {tmp}/t8", "--shift must be smaller than the images (8x8)"),
    ("image size over the memory cap", "train --image-size 3000 --out {tmp}/t9", "digits: pixel values of 1,797"),
    ("width negative", "train --model-option width=-5 --out {tmp}/t10", "digits_cnn option width must be between 1"),
    ("width not a number", "train --model-option width=abc --out {tmp}/t11",
     "digits_cnn option width must be int; received width='abc'"),
    ("option unknown", "train --model-option depth=3 --out {tmp}/t12", "digits_cnn has no option 'depth'"),
    ("model too large for the input", "train --model lenet5 --out {tmp}/t13", "lenet5 needs inputs of at least 32x32"),
    ("out is a file", "train --epochs 1 --out {files}/digit.png", "{files}/digit.png: exists and is not a folder"),
    ("resume from garbage", "train --resume {files}/badrun", "{files}/badrun/config.json: not valid JSON"),
    ("resume with a wrong type", "train --resume {files}/typedrun", "{files}/typedrun/config.json: bad config at lr"),
    ("disk full while saving", "FSIZE=20000 train --epochs 1 --no-progress --out {tmp}/full",
     "{tmp}/full/best.safetensors: cannot be written (File too large); the previous version is kept"),
    # use and inspection
    ("top-k zero", "evaluate {run} --top-k 0", "argument --top-k: expected a whole number of 1 or more"),
    ("evaluate unknown class", "evaluate {run} --data {files}/catdog", "{files}/catdog: class 'cat' is not one of"),
    ("imported model without --data", "evaluate {files}/imported", "this checkpoint was not trained by cnnkit"),
    ("edited width", "predict {files}/wide {files}/digit.png", "{files}/wide: the metadata describes digits_cnn with"),
    ("json copy differs", "evaluate {files}/mismatch", "{files}/mismatch.json does not match the metadata inside"),
    ("nesting bomb", "evaluate {files}/nested", "{files}/nested.json: JSON nested too deeply"),
    ("short class list", "evaluate {files}/short --data digits", "{files}/short.safetensors: bad checkpoint metadata"),
    ("wrong type in metadata", "evaluate {files}/typed --data digits",
     "{files}/typed.safetensors: bad checkpoint metadata at model.in_channels"),
    ("export over a checkpoint's JSON", "export {run} --out {files}/victim", "{files}/victim.json already exists"),
    ("export under a file", "export {run} --out {files}/digit.png/model.onnx",
     "{files}/digit.png/model.onnx: cannot be written because {files}/digit.png is a file"),
    ("explain kernel 0", "explain conv --kernel 0", "argument --kernel: expected a whole number of 1 or more"),
    ("explain stride 0", "explain conv --stride 0", "argument --stride: expected a whole number of 1 or more"),
    ("explain dilation 0", "explain pool --dilation 0", "argument --dilation: expected a whole number of 1 or more"),
    ("explain huge input", "explain conv --input 100000x100000 --out {tmp}/e1.png", "the padded input is"),
    ("explain huge padding", "explain conv --padding 100000 --out {tmp}/e2.png", "the padded input is"),
    ("explain huge gif", "explain conv --input 2000x2000 --gif --out {tmp}/e3.gif", "the padded input is"),
    ("explain over a file", "explain conv --out {files}/digit.png", "{files}/digit.png already exists"),
    ("explain into /proc", "explain conv --out /proc/cnnkit-explain.png", "/proc/cnnkit-explain.png"),
    ("visualize over pictures", "visualize {run} --image {files}/digit.png --out {files}/vis",
     "{files}/vis/filters.png already exists"),
    ("report over a file", "report {run} --out {files}/report.html", "{files}/report.html already exists"),
    ("explain-decision over pictures", "explain-decision {run} {files}/digit.png --out {files}/why",
     "{files}/why/digit_saliency.png already exists"),
    ("report under a file", "report {run} --out {files}/digit.png/report.html",
     "{files}/digit.png/report.html: cannot be written because {files}/digit.png is a file"),
    ("keras zip bomb", "import-weights {files}/bomb.keras --model digitsnet --out {tmp}/k",
     "{files}/bomb.keras: archive member model.weights.h5 inflates to"),
    ("seeds out of range", "train --seeds 1000 --out {tmp}/s", "--seeds must be between 2 and 64"),
    # checkpoints: every tensor and metadata value checked at load
    ("NaN weight", "predict {files}/nanweight {files}/digit.png",
     "{files}/nanweight: tensor model.features.0.weight holds NaN or infinite values"),
    ("inf weight", "evaluate {files}/infweight", "{files}/infweight: tensor model.features.0.weight holds NaN"),
    ("NaN preprocessing scale", "predict {files}/nanscale {files}/digit.png",
     "{files}/nanscale: preprocess.scale holds NaN or infinite values"),
    ("preprocessing of the wrong shape", "evaluate {files}/wrongshape",
     "{files}/wrongshape: preprocess.scale is float32 of shape (1, 4, 4); standardize preprocessing of 1x8x8"),
    ("bogus preprocessing kind", "predict {files}/bogus {files}/digit.png",
     "{files}/bogus.safetensors: bad checkpoint metadata at preprocessing: Input should be 'standardize'"),
    ("pixel_max a string", "predict {files}/whitetext {files}/digit.png",
     "{files}/whitetext.safetensors: bad checkpoint metadata at data.pixel_max"),
    ("config of the wrong type", "predict {files}/lrtext {files}/digit.png",
     "{files}/lrtext.safetensors: the checkpoint's config: bad config at lr"),
    ("tampered data path", "evaluate {files}/moved",
     "{files}/moved.safetensors: bad checkpoint metadata at (top level): Value error, config.data is "
     "'/etc/passwd' but the checkpoint was trained on 'digits'"),
    ("header lies about a dtype", "evaluate {files}/int32",
     "{files}/int32: tensor model.features.0.weight has dtype int32"),
    ("pickle renamed .safetensors", "evaluate {files}/renamed.safetensors",
     "{files}/renamed.safetensors: corrupt safetensors file"),
    # arrays of unexpected dtypes
    ("npy of strings", "predict {run} {files}/strings.npy",
     "{files}/strings.npy: holds dtype <U1 (strings); expected pixel values as integers or floats"),
    ("npy of complex", "predict {run} {files}/complex.npy", "{files}/complex.npy: holds dtype complex64"),
    ("npy of records", "predict {run} {files}/records.npy", "{files}/records.npy: holds dtype [('a', '<f4')]"),
    ("npy of NaN", "predict {run} {files}/nan.npy", "{files}/nan.npy: pixel values must be finite numbers"),
    # model sizes from flags: parameters and one image's activations measured on fake tensors before building
    ("summary vgg16 at 4096", "summary vgg16 --input-size 3x4096x4096",
     "vgg16 on 3x4096x4096 inputs: parameter values: 34,395,335,464 exceeds the limit"),
    ("summary resnet50 at 4096", "summary resnet50 --input-size 3x4096x4096",
     "resnet50 on 3x4096x4096 inputs: bytes of one image's activations"),
    ("summary at 99999", "summary digits_cnn --input-size 1x99999x99999", "digits_cnn on 1x99999x99999 inputs"),
    # a run's own files are never replaced by another command
    ("export over a run's best", "export {run} --out {run}/best.safetensors --overwrite",
     "{run}/best.safetensors: is a file of the training run in {run}, which export never replaces"),
    ("export over a run's last.json", "export {run} --out {run}/last --overwrite",
     "{run}/last.json: is a file of the training run in {run}, which export never replaces"),
    ("import over a run's last", "import-weights {files}/weights.pt --trust --model digits_cnn --out {run}/last "
     "--overwrite", "{run}/last.safetensors: is a file of the training run in {run}, which import-weights never"),
    ("report over a run's metrics", "report {run} --out {run}/metrics.jsonl --overwrite",
     "{run}/metrics.jsonl: is a file of the training run in {run}"),
    # found by the attack on the merged redesign
    ("lr past float range", "train --lr 1e308 --out {tmp}/lr", "--lr must be a finite number above 0 and at most 1e6"),
    ("summary sizes overflowing int64", "summary vgg16 --input-size 3x99999999x99999999",
     "vgg16 on 3x99999999x99999999 inputs: the weights' sizes overflow"),
    ("pool padding past half the window", "explain pool --input 4x4 --kernel 2 --padding 8 --json",
     "a pool's padding must be at most half its 2x2 window (1); received 8"),
    ("pool with dilation", "explain pool --dilation 2 --json", "dilation is for convolutions only"),
    ("seed recipe on another model", "train --recipe seed --model resnet18 --out {tmp}/sr",
     "--recipe seed is the article's own program for its network, digitsnet; received --model resnet18"),
    ("a 5000-digit number in metadata", "evaluate {files}/digits5000",
     "{files}/digits5000.json: not valid cnnkit JSON"),
    # a refused run prints its error alone (no banner) and leaves its files as they were (the trainer's review)
    ("config.json naming a key twice", "train --resume {files}/duprun",
     "{files}/duprun/config.json: the key 'lr' appears twice in one object"),
    ("resume from NaN weights", "train --resume {files}/nanrun --epochs 3 --no-progress",
     "{files}/nanrun/last: tensor model.features.0.weight holds NaN or infinite values"),
    ("resume with another process count", "train --resume {files}/tworun --epochs 3",
     "{files}/tworun was trained with 2 processes (global batch 256); resuming it with 1 process would change"),
    ("split smaller than a batch", "train --drop-last --batch-size 5000 --no-progress --out {tmp}/sb",
     "the training split (1,257 images) is smaller than one batch of 5000"),
    ("freeze without a checkpoint", "train --freeze features --out {tmp}/fz",
     "--freeze features keeps a checkpoint's features: it needs --init-from"),
    # white in training data (helper trainwhite): stated for array files whose values leave it in doubt, refused
    # where the source states it
    ("train on an npz of unknown white", "train --data {files}/digits16.npz --out {tmp}/w1",
     "{files}/digits16.npz: the largest value is 16; say which value is white with --white (16 for scikit-learn's"),
    ("train past the stated white", "train --data {files}/white255.npz --white 16 --out {tmp}/w2",
     "{files}/white255.npz: values reach 255, above the stated --white 16"),
    ("train with white for digits", "train --white 16 --out {tmp}/w3",
     "--white states the scale of an array file (.npz, .csv); white in digits is 16 already"),
    ("train with white for a stream", "train --stream --data {files}/broken --white 255 --out {tmp}/w4",
     "--white states the scale of an array file (.npz, .csv); white in {files}/broken is 255 already"),
    ("train with white of zero", "train --data {files}/digits16.npz --white 0 --out {tmp}/w5",
     "--white must be a positive number (white's value in the array file, e.g. 16, 255 or 1); received 0.0"),
    ("resume with another white", "train --resume {run} --white 255",
     "--resume continues {run} with the settings in its config.json (only --epochs and --threads may change); "
     "received --white 255.0"),
    # the user's own files under a run file's name, and an empty --out (helper runsafe)
    ("overwrite a user's config.json", "train --out {files}/userproj --overwrite --no-progress",
     "{files}/userproj holds config.json, metrics.jsonl that are not a cnnkit run's; choose another --out"),
    ("a user's config.json without overwrite", "train --out {files}/userproj --no-progress",
     "{files}/userproj holds config.json, metrics.jsonl that are not a cnnkit run's; choose another --out"),
    ("explore --train over a user's files", "explore digits_cnn --train --out {files}/userproj --overwrite",
     "{files}/userproj holds config.json, metrics.jsonl that are not a cnnkit run's; choose another --out"),
    ("seeds over a user's files", "train --seeds 2 --out {files}/userseeds --overwrite --no-progress",
     "{files}/userseeds/seed-0 holds config.json that is not a cnnkit run's; choose another --out"),
    ("empty --out", "train --out '' --no-progress", "argument --out: expected a folder path; received ''"),
    ("empty --resume", "train --resume '' --no-progress", "argument --resume: expected a folder path; received ''"),
]


def make_files(folder: Path) -> None:
    """The files the cases read: one line (or a few) per file."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "weights.pt").write_bytes(b"\x80\x04K\x01.")  # a pickle (of the int 1)
    Image.fromarray(np.zeros((8, 8), dtype=np.uint8)).save(folder / "digit.png")
    bomb = folder / "bomb"
    bomb.mkdir()
    header = (0x803).to_bytes(4, "big") + b"".join(d.to_bytes(4, "big") for d in (70_000, 128, 128))
    (bomb / "train-images-idx3-ubyte.gz").write_bytes(gzip.compress(header + bytes(2**27)))  # claims 1.1 GB
    labels = (0x801).to_bytes(4, "big") + (70_000).to_bytes(4, "big") + bytes(70_000)
    (bomb / "train-labels-idx1-ubyte.gz").write_bytes(gzip.compress(labels))  # named as the images are
    (folder / "overflow").mkdir()
    (folder / "overflow" / "train-images-idx3-ubyte").write_bytes(bytes.fromhex("00000803" + "ffffffff" * 3) + bytes(9))
    (folder / "overflow" / "train-labels-idx1-ubyte").write_bytes(bytes.fromhex("00000801" + "00000002") + bytes(2))

    def npy(shape: tuple, data: bytes) -> bytes:  # a uint8 .npy whose header declares `shape`, whatever it holds
        buffer = io.BytesIO()
        np.lib.format.write_array_header_1_0(buffer, {"descr": "|u1", "fortran_order": False, "shape": shape})
        return buffer.getvalue() + data

    with zipfile.ZipFile(folder / "bomb.npz", "w") as archive:  # the header of 3 GiB of pixels, as a deflate bomb's
        archive.writestr("x.npy", npy((50_331_648, 8, 8), bytes(64)))
        archive.writestr("y.npy", npy((50_331_648,), bytes(64)))
    np.savez_compressed(folder / "classes.npz", x=np.zeros((100_001, 1, 1), np.uint8), y=np.arange(100_001))
    np.savez(folder / "scalar.npz", x=np.array(5.0), y=np.array(1))
    np.savez(folder / "huge.npz", x=np.full((20, 4, 4), 1e30), y=np.arange(20) % 2)
    (folder / "noise.npz").write_bytes(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    np.savez(folder / "objects.npz", x=np.array([object()] * 2), y=np.array([0, 1]))
    np.save(folder / "strings.npy", np.full((8, 8), "a"))
    np.save(folder / "complex.npy", np.zeros((8, 8), np.complex64))
    np.save(folder / "records.npy", np.zeros((8, 8), [("a", "<f4")]))
    np.save(folder / "nan.npy", np.full((8, 8), np.nan, np.float32))
    np.savez(folder / "white255.npz", x=np.full((2, 8, 8), 255.0), y=np.array([0, 1]))  # digits run: white 16
    np.save(folder / "white255.npy", np.full((8, 8), 255, np.uint8))
    np.savez(folder / "digits16.npz", x=np.full((4, 8, 8), 16.0), y=np.array([0, 1, 0, 1]))  # white 16 or 255?
    (folder / "long.csv").write_text("label,p0,p1,p2,p3\n1,0," + "9" * 200_000 + ",3,4\n")
    (folder / "binary.csv").write_bytes(b"1,2,3,4,5\n\xff\xfe\x00\x81\n")
    (folder / "cifar").mkdir()
    (folder / "cifar" / "data_batch_1.bin").write_bytes(bytes(3073))
    (folder / "cifar" / "batches.meta.txt").mkdir()
    for name in (f"{c}/{i}.png" for c in "ab" for i in range(10)):  # 20 grey 8x8 images; b/3.png cut short
        (folder / "broken" / name).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.random.default_rng(0).integers(0, 256, (8, 8), np.uint8)).save(folder / "broken" / name)
    (folder / "broken" / "b" / "3.png").write_bytes((folder / "broken" / "b" / "3.png").read_bytes()[:60])
    keras = io.BytesIO()  # a .keras archive whose central directory claims a 3 GiB weights member
    with zipfile.ZipFile(keras, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("config.json", "{}")
        archive.writestr("model.weights.h5", bytes(1000))
    data = bytearray(keras.getvalue())
    central = data.rindex(b"PK\x01\x02")
    data[central + 24:central + 28] = (3 * 1024**3).to_bytes(4, "little")  # the member's uncompressed size
    (folder / "bomb.keras").write_bytes(bytes(data))
    (folder / "userproj").mkdir()  # the user's own files that share a run's file names (helper runsafe)
    (folder / "userproj" / "config.json").write_text('{"my": "settings"}')
    (folder / "userproj" / "metrics.jsonl").write_text('{"x": 1}\n')
    (folder / "userseeds" / "seed-0").mkdir(parents=True)
    (folder / "userseeds" / "seed-0" / "config.json").write_text('{"epochs": 3}')


def make_checkpoints(folder: Path, run: Path) -> None:
    """Hostile checkpoints and runs derived from a real trained run: one line (or a few) each."""
    import torch
    from safetensors.torch import save_file

    from cnnkit.store.checkpoint import load_checkpoint

    tensors, meta = load_checkpoint(run / "best")

    def checkpoint(name: str, metadata: dict, copy: str | None = None) -> None:
        save_file(tensors, folder / f"{name}.safetensors", metadata={"cnnkit": json.dumps(metadata)})
        if copy is not None:
            (folder / f"{name}.json").write_text(copy)

    checkpoint("wide", {**meta, "model": {**meta["model"], "options": {"width": 400, "dropout": 0.2}}})
    checkpoint("mismatch", meta, json.dumps({**meta, "epoch": 0}))
    checkpoint("nested", meta, "[" * 100_000 + "]" * 100_000)
    checkpoint("short", {**meta, "class_names": ["a", "b", "c"]})
    checkpoint("typed", {**meta, "model": {**meta["model"], "in_channels": "1"}})
    checkpoint("imported", {**meta, "config": None})
    checkpoint("digits5000", meta, json.dumps(meta).replace('"epoch": ', '"epoch": ' + "9" * 5000, 1))
    def tensor_edit(name: str, key: str, value: torch.Tensor) -> None:
        save_file({**tensors, key: value}, folder / f"{name}.safetensors", metadata={"cnnkit": json.dumps(meta)})

    weight = tensors["model.features.0.weight"]
    tensor_edit("nanweight", "model.features.0.weight", weight.clone().index_fill_(0, torch.tensor([0]), math.nan))
    tensor_edit("infweight", "model.features.0.weight", weight.clone().index_fill_(0, torch.tensor([1]), math.inf))
    tensor_edit("nanscale", "preprocess.scale", torch.full((1, 1, 1), math.nan))
    tensor_edit("wrongshape", "preprocess.scale", torch.ones(1, 4, 4))
    tensor_edit("int32", "model.features.0.weight", weight.view(torch.int32))  # same bytes, the header says int32
    checkpoint("bogus", {**meta, "preprocessing": "bogus"})
    checkpoint("whitetext", {**meta, "data": {**meta["data"], "pixel_max": "255"}})
    checkpoint("lrtext", {**meta, "config": {**meta["config"], "lr": "fast"}})
    checkpoint("moved", {**meta, "config": {**meta["config"], "data": "/etc/passwd"}})
    (folder / "renamed.safetensors").write_bytes((folder / "weights.pt").read_bytes())
    (folder / "victim.json").write_text(json.dumps(meta))  # a checkpoint's JSON that export must not replace
    for picture in ("vis/filters.png", "why/digit_saliency.png", "report.html"):  # earlier outputs to keep
        (folder / picture).parent.mkdir(exist_ok=True)
        (folder / picture).write_text("an earlier result")
    for run_name, config in (("badrun", "{not json"), ("typedrun", json.dumps({"lr": "fast"}))):
        (folder / run_name).mkdir()
        (folder / run_name / "config.json").write_text(config)
    for name in ("cat/0.png", "dog/0.png"):
        (folder / "catdog" / name).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.zeros((8, 8), dtype=np.uint8)).save(folder / "catdog" / name)
    make_runs(folder, run)


def make_runs(folder: Path, run: Path) -> None:
    """Copies of the trained run that a resume must refuse: one line (or a few) each."""
    import shutil

    import torch
    from safetensors import safe_open
    from safetensors.torch import load_file, save_file

    def copy(name: str, header_edit: dict | None = None, tensor_edit: str | None = None) -> None:
        shutil.copytree(run, folder / name, ignore=shutil.ignore_patterns(".cnnkit.lock"))
        last = folder / name / "last.safetensors"
        with safe_open(str(last), framework="pt") as file:
            meta = json.loads(file.metadata()["cnnkit"])
        tensors = load_file(last)
        if tensor_edit:
            tensors[tensor_edit] = tensors[tensor_edit].clone().index_fill_(0, torch.tensor([0]), math.nan)
        save_file(tensors, last, metadata={"cnnkit": json.dumps({**meta, **(header_edit or {})})})
        (folder / name / "last.json").unlink()  # the tensors file alone: its metadata is the checkpoint's

    copy("nanrun", tensor_edit="model.features.0.weight")
    copy("tworun", {"processes": 2, "global_batch": 256})
    (folder / "duprun").mkdir()
    (folder / "duprun" / "config.json").write_text('{"epochs": 3, "lr": 0.5, "lr": 0.01}')


def snapshot(folder: Path) -> dict[str, str]:
    """Content hash of every file under `folder` (but a run's lock file, which names its latest writer's pid)."""
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file() and p.name != ".cnnkit.lock"}


@pytest.fixture(scope="module")
def outcomes(tmp_path_factory) -> dict[str, dict]:
    root = tmp_path_factory.mktemp("hostile")
    files, run, tmp = root / "files", root / "run", root / "tmp"
    make_files(files)
    tmp.mkdir()
    from cnnkit.train import TrainConfig, fit

    fit(TrainConfig(epochs=1), out=run, progress=False)
    make_checkpoints(files, run)
    before = {"files": snapshot(files), "run": snapshot(run)}
    places = {"files": str(files), "run": str(run), "tmp": str(tmp)}
    commands = {name: shlex.split(command.format(**places)) for name, command, _ in CASES}
    env = {**os.environ, "OMP_NUM_THREADS": "1", "CNNKIT_HOSTILE_MEMORY": str(MEMORY_LIMIT)}
    done = subprocess.run([sys.executable, str(RUNNER)], input=json.dumps(commands), capture_output=True, text=True,
                          timeout=600, env=env, cwd=tmp)
    assert done.returncode == 0, done.stderr[-3000:]
    results = json.loads(done.stdout.splitlines()[-1])
    results["__after__"] = {"files": snapshot(files), "run": snapshot(run)}
    results["__before__"] = before
    results["__places__"] = places
    return results


@pytest.mark.parametrize("name,command,expected", CASES, ids=[case[0] for case in CASES])
def test_case_exits_2_with_one_line(outcomes, name, command, expected):
    result = outcomes[name]
    expected = expected.format(**outcomes["__places__"])
    lines = result["stderr"].strip().splitlines()
    assert result["code"] == 2, (result["code"], result["stderr"][-2000:])
    assert len(lines) == 1 and "Traceback" not in result["stderr"], result["stderr"][-2000:]
    message = lines[0].split(": error: ", 1)[-1]
    assert message.startswith(expected), message
    if command.split()[0] == "train":  # a refused run prints nothing else (the disk-full case trains first)
        assert result["stdout"] == "", result["stdout"][-1000:]


def test_no_case_changed_existing_files(outcomes):
    assert outcomes["__after__"] == outcomes["__before__"]
