"""Several seeds in one process: each seed trains as it would alone, and lands as a normal run."""

import io
import json
import statistics
import threading
import time

import pytest
import torch

from cnnkit import CnnkitError
from cnnkit.analysis.inference import evaluate_checkpoint
from cnnkit.cli import main
from cnnkit.train import TrainConfig, fit, seeds
from cnnkit.train.evaluation import final_test
from cnnkit.train.loop import RunResult
from cnnkit.train.run_dir import RunDirectory
from cnnkit.train.seeds import fit_seeds

# lenet5_modern on digits, batch 64: 21 steps an epoch, so 5 epochs are the first 105 steps (shifted batches too).
CONFIG = TrainConfig.for_model("lenet5_modern", epochs=5, compile="off", threads=1)


@pytest.mark.slow  # three 5-epoch lenet5_modern runs
def test_each_seed_follows_its_single_run_loss_curve(tmp_path):
    batched = fit_seeds(CONFIG, 2, out=tmp_path / "seeds", progress=False, stream=io.StringIO())
    for k, run in enumerate(batched.runs):
        alone = fit(TrainConfig.for_model("lenet5_modern", epochs=5, compile="off", threads=1, seed=k),
                    progress=False, stream=io.StringIO())
        ours = [r["train_loss"] for r in run.history if "train_loss" in r]
        theirs = [r["train_loss"] for r in alone.history if "train_loss" in r]
        assert len(ours) == len(theirs) == 5
        # vmap's batch norm rounds differently (1e-7 in a step) and training amplifies it, by how much depends on the
        # CPU's kernels and the seed: the fifth epoch within 1e-4 on a Xeon, seed 1's second epoch 3.2e-4 and its
        # fifth 7.5e-3 on an AMD EPYC. The first epoch agrees exactly on both; other data or dropout masks differ by
        # 6-8e-3 there (test_batched_seeds_draw_the_dropout_masks_of_their_single_runs).
        assert abs(ours[0] - theirs[0]) / theirs[0] < 1e-6, (ours, theirs)
        assert max(abs(a - b) / b for a, b in zip(ours, theirs, strict=True)) < 3e-2, (ours, theirs)
        assert abs(run.test_accuracy - alone.test_accuracy) <= 2 / 360  # at most two of the 360 test images
    summary = json.loads((tmp_path / "seeds" / "seeds.json").read_text())
    accuracies = [s["test_accuracy"] for s in summary["seeds"]]
    assert summary["test_accuracy_mean"] == pytest.approx(statistics.mean(accuracies))
    assert summary["test_accuracy_std"] == pytest.approx(statistics.stdev(accuracies))
    # Each seed's directory is a normal run: evaluate reproduces the accuracy its training reported.
    assert evaluate_checkpoint(str(tmp_path / "seeds" / "seed-1"))["accuracy"] == pytest.approx(accuracies[1])


def test_batched_seeds_draw_the_dropout_masks_of_their_single_runs():
    # digits_cnn at width 2 is small enough for the vmap path and has dropout and batch norm. With one random stream
    # for all seeds (vmap's own randomness) the first epoch's loss differs from the single run's by 6-8e-3; with
    # each single run's masks only float rounding is left (7e-8 measured; vmap's batch norm rounds differently).
    config = TrainConfig(epochs=1, compile="off", threads=1, model_options={"width": 2})
    log = io.StringIO()
    batched = fit_seeds(config, 2, progress=False, stream=log)
    assert "as one batched computation" in log.getvalue()
    for k, run in enumerate(batched.runs):
        alone = fit(config.replace(seed=k), progress=False, stream=io.StringIO())
        ours, theirs = run.history[0]["train_loss"], alone.history[0]["train_loss"]
        assert abs(ours - theirs) / theirs < 1e-5, (ours, theirs)


@pytest.mark.slow  # three 10-epoch runs
def test_side_by_side_seeds_equal_their_single_runs_bit_for_bit():
    """The default recipe (digits_cnn: batch norm and dropout) trains its seeds side by side: 10 epochs are the
    first 100 steps, and every loss and weight is its single run's exactly."""
    config = TrainConfig(epochs=10)
    log = io.StringIO()
    together = fit_seeds(config, 2, progress=False, stream=log)
    assert "side by side" in log.getvalue()
    for k, run in enumerate(together.runs):
        alone = fit(config.replace(seed=k), progress=False, stream=io.StringIO())
        ours = [r["train_loss"] for r in run.history if "train_loss" in r]
        assert ours == [r["train_loss"] for r in alone.history if "train_loss" in r]
        assert run.test_accuracy == alone.test_accuracy
        theirs = alone.model.state_dict()
        for name, value in run.model.state_dict().items():
            assert torch.equal(value, theirs[name]), name


def test_cli_seeds_prints_the_spread(tmp_path, capsys):
    assert main(["train", "--model", "digitsnet", "--seeds", "3", "--epochs", "1", "--out", str(tmp_path / "s"),
                 "--json", "--no-progress"]) == 0
    captured = capsys.readouterr()
    summary = json.loads(captured.out)
    assert [s["run_dir"] for s in summary["seeds"]] == [str(tmp_path / "s" / f"seed-{k}") for k in range(3)]
    assert "test accuracy over 3 seeds:" in captured.err and "(mean +- standard deviation)" in captured.err
    with pytest.raises(CnnkitError, match="does not combine with --stream"):
        fit_seeds(TrainConfig(stream=True), 2, progress=False)
    # What --seeds cannot do as each single run would is refused, not silently skipped.
    for refused, flag in ((TrainConfig(compile="on"), "--compile on"), (TrainConfig(patience=2), "--patience"),
                          (TrainConfig(tensorboard=True), "--tensorboard")):
        with pytest.raises(CnnkitError, match=f"does not combine with {flag}"):
            fit_seeds(refused, 2, progress=False)


def test_seeds_stop_when_a_loss_diverges(tmp_path):
    """As a single run: a diverged epoch stops the run and names the seeds (it would poison the mean). At lr 1e6
    the first epoch's training loss stays finite but its validation loss does not: nothing is kept."""
    with pytest.raises(CnnkitError, match=r"epoch 1 diverged \(seed 0: .+; seed 1: .+\); training stopped before"):
        fit_seeds(TrainConfig(lr=1e6, epochs=3), 2, out=tmp_path / "s", progress=False, stream=io.StringIO())
    summary = json.loads((tmp_path / "s" / "seeds.json").read_text())  # written at the start: no seed has finished
    assert summary["finished"] == 0 and summary["test_accuracy_mean"] is None
    assert [s["test_accuracy"] for s in summary["seeds"]] == [None, None]


def test_seeds_stopped_during_their_tests_are_summed_up_by_their_resumes(tmp_path, monkeypatch, capsys):
    """A Ctrl-C during the final tests used to leave no seeds.json (and then, a seed that had finished could never
    enter it: its resume is refused as finished). Each seed's entry is now written as it finishes."""
    folder = tmp_path / "s"
    tested = []

    def interrupted_second(*args):
        if tested:
            raise KeyboardInterrupt
        tested.append(final_test(*args))
        return tested[-1]

    with monkeypatch.context() as patch:
        patch.setattr(seeds, "final_test", interrupted_second)
        with pytest.raises(KeyboardInterrupt):
            fit_seeds(TrainConfig.for_model("digitsnet", epochs=1), 2, out=folder, progress=False,
                      stream=io.StringIO())
    summary = json.loads((folder / "seeds.json").read_text())
    assert summary["finished"] == 1 and summary["seeds"][1]["test_accuracy"] is None
    accuracies = [tested[0]["test_accuracy"]]
    assert summary["seeds"][0]["test_accuracy"] == summary["test_accuracy_mean"] == accuracies[0]
    assert main(["train", "--resume", str(folder / "seed-0"), "--no-progress"]) == 2  # finished, and summed up
    capsys.readouterr()
    assert main(["train", "--resume", str(folder / "seed-1"), "--json", "--no-progress"]) == 0
    captured = capsys.readouterr()
    accuracies.append(json.loads(captured.out.strip().splitlines()[-1])["test_accuracy"])
    assert f"test accuracy over 2 seeds now {100 * statistics.mean(accuracies):.2f}%" in captured.err
    summary = json.loads((folder / "seeds.json").read_text())
    assert summary["finished"] == 2 and [s["test_accuracy"] for s in summary["seeds"]] == accuracies


def test_seeds_touch_nothing_while_a_seed_is_held_or_the_summary_cannot_be_written(tmp_path, monkeypatch, capsys):
    folder = tmp_path / "s"
    assert main(["train", "--model", "digitsnet", "--seeds", "2", "--epochs", "1", "--out", str(folder),
                 "--no-progress"]) == 0
    files = {p: p.read_bytes() for p in folder.rglob("*") if p.is_file() and p.name != ".cnnkit.lock"}
    held = RunDirectory(folder / "seed-1")
    held.lock()  # seed 1 being resumed by another process: --overwrite must not empty seed 0 first
    try:
        with pytest.raises(CnnkitError, match="seed-1 is being written by another cnnkit process"):
            fit_seeds(TrainConfig.for_model("digitsnet", epochs=1), 2, out=folder, overwrite=True, progress=False,
                      stream=io.StringIO())
    finally:
        held.close()
    assert {p: p.read_bytes() for p in files} == files
    (tmp_path / "d" / "seeds.json").mkdir(parents=True)
    with pytest.raises(CnnkitError, match="seeds.json: exists and is not a file"):
        fit_seeds(TrainConfig.for_model("digitsnet", epochs=1), 2, out=tmp_path / "d", progress=False)
    assert [p.name for p in (tmp_path / "d").iterdir()] == ["seeds.json"]

    def unwritable(path, _data):
        raise CnnkitError(f"{path}: cannot be written (Read-only file system)")

    monkeypatch.setattr(seeds, "atomic_write", unwritable)  # a resumed seed's own run is saved: exit 0, said
    capsys.readouterr()
    assert main(["train", "--resume", str(folder / "seed-1"), "--epochs", "2", "--no-progress"]) == 0
    assert "seeds.json not updated: " in capsys.readouterr().out


def test_sibling_resumes_at_once_keep_both_updates(tmp_path, monkeypatch):
    """Two seeds resumed at the same moment each read seeds.json, then write it: the folder lock makes the second
    read wait for the first write (without it, one update was lost)."""
    folder = tmp_path / "s"
    assert main(["train", "--model", "digitsnet", "--seeds", "2", "--epochs", "1", "--out", str(folder),
                 "--no-progress"]) == 0
    slow_write = seeds.atomic_write

    def slowly(path, data):
        time.sleep(0.3)  # both threads have read the file by now, unless the lock holds one back
        slow_write(path, data)

    monkeypatch.setattr(seeds, "atomic_write", slowly)
    finished = [RunResult(folder / f"seed-{k}", 0.5 + k / 10, 1.0, 0.5, 2, 1.0) for k in (0, 1)]
    both = [threading.Thread(target=seeds.refresh_seeds_summary, args=(run, print)) for run in finished]
    for thread in both:
        thread.start()
    for thread in both:
        thread.join()
    entries = json.loads((folder / "seeds.json").read_text())["seeds"]
    assert [e["test_accuracy"] for e in entries] == [0.5, 0.6] and [e["epochs_run"] for e in entries] == [2, 2]


def test_resuming_one_seed_updates_the_folders_summary(tmp_path, capsys):
    folder = tmp_path / "s"
    assert main(["train", "--model", "digitsnet", "--seeds", "2", "--epochs", "1", "--out", str(folder),
                 "--no-progress"]) == 0
    assert main(["train", "--resume", str(folder / "seed-1"), "--epochs", "3", "--json", "--no-progress"]) == 0
    captured = capsys.readouterr()
    resumed = json.loads(captured.out.strip().splitlines()[-1])
    summary = json.loads((folder / "seeds.json").read_text())
    assert summary["seeds"][1]["epochs_run"] == 3 and summary["seeds"][0]["epochs_run"] == 1
    assert summary["seeds"][1]["test_accuracy"] == resumed["test_accuracy"]
    accuracies = [s["test_accuracy"] for s in summary["seeds"]]
    assert summary["test_accuracy_mean"] == pytest.approx(statistics.mean(accuracies))
    assert summary["test_accuracy_std"] == pytest.approx(statistics.stdev(accuracies))
    assert "seeds.json: updated with this run" in captured.err
    (folder / "seeds.json").write_text('{"seeds": 7}')  # not ours to fix: left alone, and said
    assert main(["train", "--resume", str(folder / "seed-0"), "--epochs", "2", "--no-progress"]) == 0
    assert "seeds.json: not updated" in capsys.readouterr().out
    assert (folder / "seeds.json").read_text() == '{"seeds": 7}'


@pytest.mark.slow  # two batched fits and two single ones
def test_batched_seeds_clip_gradients_as_their_single_runs():
    config = TrainConfig.for_model("digitsnet", epochs=1, grad_clip=1e-4)  # tiny: the vmap path
    clipped = fit_seeds(config, 2, progress=False, stream=io.StringIO())
    unclipped = fit_seeds(config.replace(grad_clip=0.0), 2, progress=False, stream=io.StringIO())
    for k in range(2):
        alone = fit(config.replace(seed=k), progress=False, stream=io.StringIO()).history[0]["train_loss"]
        assert abs(clipped.runs[k].history[0]["train_loss"] - alone) / alone < 1e-5  # measured 2e-7
        assert abs(unclipped.runs[k].history[0]["train_loss"] - alone) / alone > 1e-2  # the clip matters here


def test_seeds_keep_away_from_a_single_runs_folder(tmp_path):
    assert main(["train", "--epochs", "1", "--model-option", "width=4", "--out", str(tmp_path / "r"),
                 "--no-progress"]) == 0
    before = sorted(p.name for p in (tmp_path / "r").iterdir())
    with pytest.raises(CnnkitError, match="holds a single run .*choose another --out"):
        fit_seeds(TrainConfig(epochs=1), 2, out=tmp_path / "r", overwrite=True, progress=False)
    assert sorted(p.name for p in (tmp_path / "r").iterdir()) == before


def test_seeds_summary_follows_a_resume_from_elsewhere_and_refuses_bad_numbers(tmp_path, monkeypatch, capsys):
    folder = tmp_path / "s"
    monkeypatch.chdir(tmp_path)
    assert main(["train", "--model", "digitsnet", "--seeds", "2", "--epochs", "1", "--out", "s",
                 "--no-progress"]) == 0  # recorded as the relative s/seed-K
    monkeypatch.chdir(folder / "seed-1")
    assert main(["train", "--resume", ".", "--epochs", "2", "--no-progress"]) == 0
    assert json.loads((folder / "seeds.json").read_text())["seeds"][1]["epochs_run"] == 2
    summary = json.loads((folder / "seeds.json").read_text())
    summary["seeds"][0]["test_accuracy"] = float("nan")  # json writes NaN; a mean of it would be nonsense
    (folder / "seeds.json").write_text(json.dumps(summary))
    planted = (folder / "seeds.json").read_text()
    capsys.readouterr()
    assert main(["train", "--resume", ".", "--epochs", "3", "--no-progress"]) == 0
    assert "seeds.json: not updated" in capsys.readouterr().out
    assert (folder / "seeds.json").read_text() == planted


def test_seeds_decode_the_source_once(tmp_path, monkeypatch):
    """N seeds split one decode of the images (N decodes cost N times the time and the memory of a big folder)."""
    decoded = []
    load_source = seeds.load_source
    monkeypatch.setattr(seeds, "load_source", lambda *args, **kw: decoded.append(args) or load_source(*args, **kw))
    monkeypatch.setattr("cnnkit.train.data.load_source", lambda *_args, **_kw: pytest.fail("decoded per seed"))
    result = fit_seeds(TrainConfig.for_model("digitsnet", epochs=1), 3, progress=False, stream=io.StringIO())
    assert len(decoded) == 1 and len(result.runs) == 3  # each seed's own split: the bit-for-bit test above
