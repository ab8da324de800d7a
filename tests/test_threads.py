"""The training thread count follows the work, the machine share and the user, and the caller's setting returns."""

import io

import torch

from cnnkit.models import get_model
from cnnkit.train import TrainConfig, fit
from cnnkit.train.threads import available_cores, choose_threads

CPU = torch.device("cpu")


def test_small_steps_take_one_thread_big_ones_the_cores(monkeypatch):
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.delenv("LOCAL_WORLD_SIZE", raising=False)
    digits = get_model("digits_cnn")
    threads, why = choose_threads(0, digits, 128, CPU)
    # digits_cnn: about 0.85 M multiply-adds per 8x8 image (summary), 0.11 G per batch of 128: under the bar.
    assert threads == 1 and "0.11 G multiply-adds" in why
    resnet = get_model("resnet18", num_classes=10, input_size=32)
    assert choose_threads(0, resnet, 128, CPU)[0] == available_cores()  # 0.56 G per image, 71 G per batch
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "2")  # torchrun: the cores are shared between its processes
    assert choose_threads(0, resnet, 128, CPU)[0] == max(1, available_cores() // 2)


def test_the_user_decides_first(monkeypatch):
    digits = get_model("digits_cnn")
    assert choose_threads(available_cores(), digits, 128, CPU) == (available_cores(), "--threads")
    too_many = choose_threads(available_cores() + 1, digits, 128, CPU)
    assert too_many[0] == available_cores() + 1 and f"more than the {available_cores()} cores" in too_many[1]
    monkeypatch.setenv("OMP_NUM_THREADS", "2")
    assert choose_threads(0, digits, 128, CPU)[1] == "OMP_NUM_THREADS"


def test_fit_restores_the_callers_thread_count(monkeypatch):
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    before = torch.get_num_threads()
    seen = []
    fit(TrainConfig(epochs=1, threads=1 if before > 1 else 2), progress=False, stream=io.StringIO(),
        epoch_callback=lambda epoch, model: seen.append(torch.get_num_threads()))
    assert seen == [1 if before > 1 else 2] and torch.get_num_threads() == before
