"""A run's state on disk survives kills and neighbours: atomic checkpoints, one writer, careful overwrite."""

import json
import os
import stat
import subprocess
import sys
import textwrap

import pytest
import torch
from safetensors.torch import load_file

from cnnkit import CnnkitError
from cnnkit.cli import main
from cnnkit.store.checkpoint import load_checkpoint, model_from_checkpoint, save_checkpoint
from cnnkit.train import TrainConfig, fit
from cnnkit.train.run_dir import RUN_FILES, RunDirectory

CONFIG = {"epochs": 4, "batch_size": 128, "shift": 1}

# Runs a 4-epoch training that dies (SIGKILL, no cleanup) the moment `last.safetensors` of epoch argv[2] has been
# renamed into place, before its JSON copy is written: the exact window a watcher hit 3 of 3 times. It uses the
# test process's thread count (argv[3]): results are bit-identical across processes only with the same count.
KILLER = textwrap.dedent("""
    import os, signal, sys
    import torch
    import cnnkit.store.checkpoint as checkpoint
    from cnnkit.train import TrainConfig, fit
    torch.set_num_threads(int(sys.argv[3]))
    write, kill_epoch, seen = checkpoint.atomic_write, int(sys.argv[2]), []
    def dying_write(path, data):
        write(path, data)
        if path.name == "last.safetensors":
            seen.append(path)
            if len(seen) == kill_epoch:
                os.kill(os.getpid(), signal.SIGKILL)
    checkpoint.atomic_write = dying_write
    fit(TrainConfig(**CONFIG), out=sys.argv[1], progress=False)
""").replace("CONFIG", repr(CONFIG))


@pytest.mark.slow  # a killed subprocess and two trainings
def test_kill_between_the_two_checkpoint_writes_then_resume_is_bit_identical(tmp_path):
    fit(TrainConfig(**CONFIG), out=tmp_path / "straight", progress=False)
    threads = str(torch.get_num_threads())
    done = subprocess.run([sys.executable, "-c", KILLER, str(tmp_path / "cut"), "2", threads], capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == -9, done.stderr[-2000:]
    cut = tmp_path / "cut"
    # The weights of epoch 2 are in place; the JSON copy still describes epoch 1: a mismatched pair.
    assert json.loads((cut / "last.json").read_text())["epoch"] == 1
    with pytest.raises(CnnkitError, match="does not match the metadata inside last.safetensors"):
        load_checkpoint(cut / "last")
    notes = []
    result = fit(TrainConfig.from_run_dir(cut), out=cut, resume=True, progress=False, stream=_Lines(notes))
    assert any("repaired last.json" in n for n in notes) and any("resuming from epoch 2" in n for n in notes)
    assert result.epochs_run == 4
    straight, resumed = load_file(tmp_path / "straight" / "last.safetensors"), load_file(cut / "last.safetensors")
    for key in straight:
        if key.startswith(("model.", "optim.")):
            assert torch.equal(straight[key], resumed[key]), key
    epochs = [json.loads(line).get("epoch") for line in (cut / "metrics.jsonl").read_text().splitlines()]
    assert epochs == [1, 2, 3, 4, None]  # each epoch once, then the final line


class _Lines:
    """A text stream collecting lines (the trainer's log)."""

    def __init__(self, lines: list[str]) -> None:
        self.lines = lines

    def write(self, text: str) -> None:
        self.lines.extend(line for line in text.splitlines() if line)

    def flush(self) -> None:
        pass


def test_second_writer_is_refused_while_the_first_holds_the_run(tmp_path, capsys):
    first = RunDirectory(tmp_path / "run")
    first.open()
    try:
        assert main(["train", "--out", str(tmp_path / "run"), "--epochs", "1", "--no-progress"]) == 2
        captured = capsys.readouterr()
        assert captured.err.strip() == (f"cnnkit train: error: {tmp_path / 'run'} is being written by another cnnkit "
                                        f"process (pid {os.getpid()}, in .cnnkit.lock); wait for it to finish or "
                                        "stop it, or train into another folder")
        assert captured.out == ""  # the refusal alone: no banner before it
        assert not (tmp_path / "run" / "config.json").exists()  # the refused writer wrote nothing
        # The pid in the file has exited, yet the lock is held: a process it started (a DataLoader worker) has it.
        gone = subprocess.Popen([sys.executable, "-c", "pass"])
        gone.wait()
        (tmp_path / "run" / ".cnnkit.lock").write_text(f"{gone.pid}\n")
        with pytest.raises(CnnkitError, match=rf"run is locked by a process that cnnkit pid {gone.pid} started \(pid "
                                              rf"{gone.pid} itself has exited\); `fuser -v .*\.cnnkit\.lock` names it"):
            RunDirectory(tmp_path / "run").open()
    finally:
        first.close()
    # A lock file left by a dead process (its pid inside, no lock held) does not block the next run.
    (tmp_path / "run" / ".cnnkit.lock").write_text("999999\n")
    assert main(["train", "--out", str(tmp_path / "run"), "--epochs", "1", "--no-progress"]) == 0


def test_overwrite_removes_only_what_cnnkit_wrote(tmp_path):
    run = tmp_path / "run"
    fit(TrainConfig(epochs=1, tensorboard=True), out=run, progress=False)
    (run / "tensorboard" / "my_notes.txt").write_text("mine")
    (run / "mine.csv").write_text("1,2")
    fit(TrainConfig(epochs=1, seed=3), out=run, progress=False, overwrite=True)
    assert (run / "tensorboard" / "my_notes.txt").read_text() == "mine" and (run / "mine.csv").exists()
    assert not list((run / "tensorboard").glob("events.out.tfevents.*"))  # the old run's events are gone
    assert json.loads((run / "config.json").read_text())["seed"] == 3


def test_files_get_the_users_mode_and_leftover_temp_files_are_removed(tmp_path):
    run = tmp_path / "run"
    fit(TrainConfig(epochs=1), out=run, progress=False, stop_after_epochs=1)
    expected = 0o666 & ~_umask()
    for name in ("last.safetensors", "last.json", "config.json"):
        assert stat.S_IMODE((run / name).stat().st_mode) == expected, name
    (run / ".last.safetensors.abc123.tmp").write_bytes(b"half a write")
    fit(TrainConfig.from_run_dir(run, epochs=2), out=run, resume=True, progress=False)
    assert not list(run.glob(".*.tmp"))


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def test_failed_train_creates_no_run_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for argv in (["--model", "nosuch"], ["--data", "/nonexistent"], ["--model", "lenet5"], ["--lr", "nan"]):
        assert main(["train", "--epochs", "1", "--no-progress", *argv]) == 2
    assert not (tmp_path / "runs").exists()


def test_torn_metrics_line_is_dropped_on_resume(tmp_path):
    run = tmp_path / "run"
    fit(TrainConfig(epochs=2), out=run, progress=False, stop_after_epochs=1)
    with open(run / "metrics.jsonl", "a") as file:
        file.write('{"epoch": 2, "train_lo')  # a write cut short
    notes = []
    fit(TrainConfig.from_run_dir(run), out=run, resume=True, progress=False, stream=_Lines(notes))
    assert any("dropped a torn last line" in n for n in notes)
    assert [json.loads(line).get("epoch") for line in (run / "metrics.jsonl").read_text().splitlines()] == [1, 2, None]


def test_edited_width_is_refused_before_allocating(tmp_path):
    run = tmp_path / "run"
    fit(TrainConfig(epochs=1, model="digitsnet"), out=run, progress=False)
    (run / "best.json").unlink()  # the tensors file alone is a checkpoint; edit the metadata inside it instead
    tensors, meta = load_checkpoint(run / "best")
    meta["model"] = {**meta["model"], "name": "digits_cnn", "options": {"width": 200, "dropout": 0.2}}
    from safetensors.torch import save_file

    save_file(tensors, run / "best.safetensors", metadata={"cnnkit": json.dumps(meta)})
    with pytest.raises(CnnkitError, match=r"describes digits_cnn with [\d,]+ values .* holds [\d,]+ bytes"):
        model_from_checkpoint(run / "best")


def test_a_resume_says_when_metrics_records_are_missing(tmp_path):
    import io

    run = tmp_path / "run"
    fit(TrainConfig(epochs=2, model_options={"width": 8}), out=run, progress=False, stream=io.StringIO())
    (run / "metrics.jsonl").unlink()
    log = io.StringIO()
    fit(TrainConfig.from_run_dir(run, 3), out=run, resume=True, progress=False, stream=log)
    assert "metrics.jsonl lacks the records of 2 evaluated epoch(s) (epochs 1-2)" in log.getvalue()


def _run_files(run) -> dict[str, bytes]:
    """The bytes of a run's own files (config, metrics, checkpoints), to compare before and after."""
    return {name: (run / name).read_bytes() for name in RUN_FILES if (run / name).exists()}


def _epochs_in_metrics(run) -> list:
    return [json.loads(line).get("epoch") for line in (run / "metrics.jsonl").read_text().splitlines()]


def test_a_resume_that_fails_in_training_leaves_every_file_as_it_was(tmp_path):
    import io

    run = tmp_path / "run"
    fit(TrainConfig(epochs=1, optimizer="sgd", lr=0.01, model_options={"width": 8}), out=run, progress=False,
        stream=io.StringIO())
    config = json.loads((run / "config.json").read_text())
    (run / "config.json").write_text(json.dumps({**config, "lr": 1e6}))  # the extension's epoch 2 explodes
    before = _run_files(run)
    assert set(before) == set(RUN_FILES) and _epochs_in_metrics(run) == [1, None]  # finished: a final line
    with pytest.raises(CnnkitError, match="loss became (nan|inf) at epoch 2"):
        fit(TrainConfig.from_run_dir(run, epochs=3), out=run, resume=True, progress=False, stream=io.StringIO())
    assert _run_files(run) == before  # config.json still says 1 epoch; metrics.jsonl keeps its final line


def test_resume_refuses_a_last_checkpoint_holding_nan_and_changes_nothing(tmp_path):
    import io

    from safetensors import safe_open
    from safetensors.torch import save_file

    run = tmp_path / "run"
    fit(TrainConfig(epochs=1, model_options={"width": 8}), out=run, progress=False, stream=io.StringIO())
    with safe_open(str(run / "last.safetensors"), framework="pt") as file:
        header = file.metadata()
    tensors = load_file(run / "last.safetensors")
    tensors["model.features.0.weight"][0, 0, 0, 0] = float("nan")
    save_file(tensors, run / "last.safetensors", metadata=header)  # the same metadata: last.json still matches
    (run / "last.json").write_text((run / "last.json").read_text())
    before = _run_files(run)
    log = io.StringIO()
    with pytest.raises(CnnkitError, match=r"run/last: tensor model\.features\.0\.weight holds NaN or infinite"):
        fit(TrainConfig.from_run_dir(run, epochs=2), out=run, resume=True, progress=False, stream=log)
    assert _run_files(run) == before and log.getvalue() == ""  # refused: nothing written, nothing said


@pytest.mark.slow  # seven short trainings
def test_a_kill_at_any_write_of_an_extension_leaves_a_run_that_resumes_to_the_same_end(tmp_path, monkeypatch):
    import io
    import shutil

    import cnnkit.store.checkpoint as checkpoint
    import cnnkit.train.run_dir as run_dir

    base, quiet = tmp_path / "base", {"progress": False, "stream": io.StringIO()}
    fit(TrainConfig(epochs=2, model_options={"width": 8}), out=base, **quiet)
    shutil.copytree(base, tmp_path / "straight")
    fit(TrainConfig.from_run_dir(base, epochs=3), out=tmp_path / "straight", resume=True, **quiet)
    reference = load_file(tmp_path / "straight" / "last.safetensors")
    real = {module: module.atomic_write for module in (checkpoint, run_dir)}

    class Killed(BaseException):
        """Stands for a kill: nothing after it runs."""

    for victim in ("config.json", "metrics.jsonl", "last.safetensors", "last.json"):
        run = tmp_path / f"killed-after-{victim}"
        shutil.copytree(base, run)

        def dying(path, data, write, victim=victim):
            write(path, data)
            if path.name == victim:
                raise Killed
        for module, write in real.items():
            monkeypatch.setattr(module, "atomic_write", lambda path, data, write=write, dying=dying:
                                dying(path, data, write))
        with pytest.raises(Killed):
            fit(TrainConfig.from_run_dir(base, epochs=3), out=run, resume=True, **quiet)
        for module, write in real.items():
            monkeypatch.setattr(module, "atomic_write", write)
        fit(TrainConfig.from_run_dir(run, epochs=3), out=run, resume=True, **quiet)
        assert _epochs_in_metrics(run) == [1, 2, 3, None], victim
        assert json.loads((run / "config.json").read_text())["epochs"] == 3
        resumed = load_file(run / "last.safetensors")
        for key in reference:
            if key.startswith(("model.", "optim.")):
                assert torch.equal(reference[key], resumed[key]), (victim, key)


def test_a_run_records_its_processes_and_refuses_a_resume_with_another_count(tmp_path, capsys):
    import io

    from safetensors import safe_open
    from safetensors.torch import save_file

    run = tmp_path / "run"
    fit(TrainConfig(epochs=1, batch_size=64, model_options={"width": 8}), out=run, progress=False,
        stream=io.StringIO())
    meta = load_checkpoint(run / "last")[1]
    assert (meta["processes"], meta["global_batch"]) == (1, 64)  # one process: the global batch is the batch
    # The same run as two torchrun processes would have written it (tests/test_distributed.py trains one).
    with safe_open(str(run / "last.safetensors"), framework="pt") as file:
        header = json.loads(file.metadata()["cnnkit"])
    header.update(processes=2, global_batch=128)
    save_file(load_file(run / "last.safetensors"), run / "last.safetensors",
              metadata={"cnnkit": json.dumps(header, indent=1)})
    (run / "last.json").write_text(json.dumps(header, indent=1))
    before = _run_files(run)
    assert main(["train", "--resume", str(run), "--epochs", "2", "--no-progress"]) == 2
    captured = capsys.readouterr()
    assert captured.err.strip() == (f"cnnkit train: error: {run} was trained with 2 processes (global batch 128); "
                                    "resuming it with 1 process would change its steps per epoch and its "
                                    "learning-rate schedule: resume it under torchrun with 2 processes")
    assert captured.out == "" and _run_files(run) == before


def _folder(folder) -> dict[str, bytes]:
    """Every entry of a folder (lock file included) with its bytes: 'touch nothing' means this stays equal."""
    return {p.name: p.read_bytes() if p.is_file() else b"" for p in sorted(folder.iterdir())}


def test_overwrite_refuses_the_users_files_that_only_share_a_run_files_name(tmp_path):
    import io

    from safetensors.torch import save_file

    proj = tmp_path / "proj"
    proj.mkdir()
    (proj / "config.json").write_text('{"my": "settings"}')
    (proj / "metrics.jsonl").write_text('{"x": 1}\n')
    before = _folder(proj)
    for overwrite in (False, True):
        with pytest.raises(CnnkitError) as refused:
            fit(TrainConfig(epochs=1), out=proj, overwrite=overwrite, progress=False, stream=io.StringIO())
        assert str(refused.value) == f"{proj} holds config.json, metrics.jsonl that are not a cnnkit run's; " \
            "choose another --out"
        assert _folder(proj) == before  # no lock file, nothing replaced
    # Settings a TrainConfig would accept, but not the whole file cnnkit writes; and tensors without cnnkit's
    # metadata: still the user's.
    (proj / "config.json").write_text('{"lr": 0.1}')
    save_file({"w": torch.ones(2)}, proj / "last.safetensors")
    (proj / "metrics.jsonl").unlink()
    before = _folder(proj)
    with pytest.raises(CnnkitError, match=r"proj holds config\.json, last\.safetensors that are not a cnnkit run's"):
        fit(TrainConfig(epochs=1), out=proj, overwrite=True, progress=False, stream=io.StringIO())
    assert _folder(proj) == before


def test_overwrite_of_a_real_run_names_the_users_file_beside_it_and_replaces_a_real_one(tmp_path):
    import io

    run = tmp_path / "run"
    fit(TrainConfig(epochs=1, model_options={"width": 8}), out=run, progress=False, stream=io.StringIO())
    theirs = (run / "metrics.jsonl").read_bytes()
    (run / "metrics.jsonl").write_text('{"loss": 0.5}\n')  # the user's metrics under cnnkit's name
    before = _run_files(run)
    with pytest.raises(CnnkitError, match=r"run holds metrics\.jsonl that is not a cnnkit run's; choose another"):
        fit(TrainConfig(epochs=1, seed=4), out=run, overwrite=True, progress=False, stream=io.StringIO())
    assert _run_files(run) == before
    (run / "metrics.jsonl").write_bytes(theirs)
    fit(TrainConfig(epochs=1, seed=4, model_options={"width": 8}), out=run, overwrite=True, progress=False,
        stream=io.StringIO())
    assert json.loads((run / "config.json").read_text())["seed"] == 4
    assert [json.loads(line).get("epoch") for line in (run / "metrics.jsonl").read_text().splitlines()] == [1, None]


def test_an_imported_checkpoint_under_a_runs_name_is_not_a_run(tmp_path):
    import io

    proj = tmp_path / "proj"
    proj.mkdir()
    model = torch.nn.Sequential(torch.nn.Linear(2, 2))
    spec = {"name": "x", "options": {}, "num_classes": 2, "in_channels": 1, "input_size": [1, 2]}
    # As import-weights writes one: cnnkit's metadata, but no training run's settings.
    save_checkpoint(proj / "best", model, {"model": spec, "config": None})
    before = _folder(proj)
    with pytest.raises(CnnkitError, match=r"proj holds best\.json, best\.safetensors that are not a cnnkit run's"):
        fit(TrainConfig(epochs=1), out=proj, overwrite=True, progress=False, stream=io.StringIO())
    assert _folder(proj) == before


def test_a_run_stopped_before_its_first_kept_epoch_is_overwritten(tmp_path):
    import io

    run = tmp_path / "run"
    with pytest.raises(CnnkitError, match="epoch 1 diverged"):
        fit(TrainConfig(epochs=2, lr=1e6), out=run, progress=False, stream=io.StringIO())
    assert sorted(p.name for p in run.iterdir() if p.name != ".cnnkit.lock") == ["config.json"]
    result = fit(TrainConfig(epochs=1), out=run, overwrite=True, progress=False, stream=io.StringIO())
    assert result.epochs_run == 1 and json.loads((run / "config.json").read_text())["lr"] != 1e6
