"""Shared test settings: deterministic torch, few threads so the suite fits on 2 cores, and one trained run."""

import io
import shutil
from pathlib import Path

import pytest
import torch

torch.set_num_threads(2)


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


@pytest.fixture(scope="session")
def trained(tmp_path_factory):
    """(RunResult, run folder) of one 5-epoch default digits run with TensorBoard logs, trained once per session.

    READ-ONLY: a test that writes into a run (resume, export next to it, overwrite) copies it first with
    `copy_run(trained[1], tmp_path)`."""
    from cnnkit.train import TrainConfig, fit

    out = tmp_path_factory.mktemp("trained") / "run"
    result = fit(TrainConfig(epochs=5, tensorboard=True), out=out, progress=False, stream=io.StringIO())
    before = _files(out)
    yield result, out
    assert _files(out) == before, "a test changed the shared trained run: copy it with copy_run first"


@pytest.fixture(scope="session")
def trained_run(trained) -> Path:
    """The folder of the shared trained run (read-only; see `trained`)."""
    return trained[1]


@pytest.fixture(scope="session")
def trained_digitsnet(tmp_path_factory) -> Path:
    """The article's digitsnet trained 3 epochs, evaluated the article's way too (batch statistics, so the
    article-style accuracy is recorded): the folder, read-only like `trained`."""
    from cnnkit.train import TrainConfig, fit

    out = tmp_path_factory.mktemp("digitsnet") / "run"
    fit(TrainConfig(model="digitsnet", epochs=3, eval_mode="batch"), out=out, progress=False, stream=io.StringIO())
    before = _files(out)
    yield out
    assert _files(out) == before, "a test changed the shared digitsnet run: copy it with copy_run first"


def _files(run: Path) -> dict[str, tuple[int, int]]:
    """Every file of a run with its size and modification time, to catch a test writing into a shared run."""
    return {str(p.relative_to(run)): (p.stat().st_size, p.stat().st_mtime_ns) for p in run.rglob("*") if p.is_file()}


def copy_run(run: Path, tmp_path: Path) -> Path:
    """A private copy of a shared run, for a test that changes it."""
    return Path(shutil.copytree(run, tmp_path / run.name))
