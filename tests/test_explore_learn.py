"""`cnnkit explore --train`: a run trained from the page is `cnnkit train`'s run, checked against `fit` called
directly, `cnnkit train --resume` and the checkpoints on disk."""

import base64
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from starlette.testclient import TestClient

from cnnkit.analysis.inference import load_trained, logits_of
from cnnkit.cli import main
from cnnkit.core.errors import CnnkitError
from cnnkit.explore.app import create_app
from cnnkit.explore.learn import adopt, open_training, thin
from cnnkit.explore.session import Explorer
from cnnkit.train.config import TrainConfig
from cnnkit.train.loop import fit

EPOCHS = 3


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """`cnnkit train --model digits_cnn --epochs 3` as the library runs it: one uninterrupted fit."""
    out = tmp_path_factory.mktemp("reference") / "run"
    fit(TrainConfig.for_model("digits_cnn", epochs=EPOCHS), out, progress=False)
    return out


def records(run) -> list[dict]:
    """metrics.jsonl without the wall-clock seconds (the one value two identical runs do not share)."""
    lines = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return [{k: v for k, v in r.items() if k != "seconds"} for r in lines]


def assert_same_run(run, reference) -> None:
    """The same records, the same tensors in both checkpoints, the same settings."""
    assert records(run) == records(reference)
    for name in ("best", "last"):
        ours, theirs = load_file(run / f"{name}.safetensors"), load_file(reference / f"{name}.safetensors")
        assert ours.keys() == theirs.keys()
        for key in theirs:
            assert torch.equal(ours[key], theirs[key]), f"{name}.safetensors: {key}"
    ours, theirs = (json.loads((r / "config.json").read_text()) for r in (run, reference))
    assert ours.pop("compile") == "off" and theirs.pop("compile") == "auto"  # eager either way for these 30 steps
    assert ours == theirs


def post(client, path, body=None):
    response = client.post(path, json={} if body is None else body)
    assert response.status_code == 200, response.text
    return response.json()


def weights(path) -> dict[str, torch.Tensor]:
    """A checkpoint's model tensors under the model's own state-dict names."""
    return {k.removeprefix("model."): v for k, v in load_file(path).items() if k.startswith("model.")}


def floats(blob: str, shape) -> np.ndarray:
    return np.frombuffer(base64.b64decode(blob), dtype="<f4").reshape(shape)


def test_a_run_trained_from_the_page_is_cnnkit_trains_run(tmp_path, reference):
    out = tmp_path / "page"
    explorer = open_training("digits_cnn", EPOCHS, out)
    assert not out.exists()  # nothing is written before Start
    with TestClient(create_app(explorer)) as client:
        assert client.get("/api/model").json()["training"] is True
        assert client.get("/api/train/status").json()["state"] == "idle"
        post(client, "/api/train/start")
        post(client, "/api/train/pause")  # asked during the first epoch: it ends, is saved, and training stops
        explorer.training.wait(120)
        paused = client.get("/api/train/status").json()
        assert paused["state"] == "paused", paused
        saved = weights(out / "last.safetensors")
        assert 1 <= paused["epoch"] < EPOCHS
        assert json.loads((out / "last.json").read_text())["epoch"] == paused["epoch"]
        assert [r["epoch"] for r in records(out)] == list(range(1, paused["epoch"] + 1))

        post(client, "/api/train/start")  # resume
        explorer.training.wait(120)
        status = client.get("/api/train/status").json()
        assert status["state"] == "done" and status["epoch"] == EPOCHS, status
        assert status["run_dir"] == str(out)
        assert_same_run(out, reference)
        lines = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
        assert status["records"] == lines[:-1] and status["final"] == lines[-1]["final"]
        assert client.get("/api/train/status?since=2").json()["records"] == lines[2:-1]

        # The filters sent are the last checkpoint's first convolution; the views answer with its weights.
        filters = client.get("/api/train/filters").json()
        weight = weights(out / "last.safetensors")[filters["layer"] + ".weight"]
        assert weight.dim() == 4 and filters["shape"] == list(weight.shape) and filters["epoch"] == EPOCHS
        np.testing.assert_array_equal(floats(filters["data"], filters["shape"]), weight.numpy())
        last = load_trained(out / "last")
        image = client.get("/api/heldout").json()["images"][0]["index"]
        got = post(client, "/api/predict", {"image": {"heldout": image}})["logits"]
        pixels = explorer.heldout_data()[0][image:image + 1]
        np.testing.assert_allclose(got, logits_of(last, pixels)[0].numpy(), rtol=1e-6, atol=1e-6)
        assert client.get("/api/model").json()["trained"] is True

        snapshots = explorer.training.snapshots()
        assert {"epoch 1", f"epoch {EPOCHS}", "best", "latest"} <= set(snapshots)
        for key, tensor in last.model.state_dict().items():
            assert torch.equal(snapshots["latest"][key], tensor)
        assert snapshots["latest"].keys() == saved.keys()
        assert all(torch.equal(snapshots[f"epoch {paused['epoch']}"][k], saved[k]) for k in saved)
        best = weights(out / "best.safetensors")
        assert snapshots["best"].keys() == best.keys()
        assert all(torch.equal(snapshots["best"][k], best[k]) for k in best)
        assert client.post("/api/train/start", json={}).status_code == 409


def test_a_paused_run_continues_with_cnnkit_train_resume(tmp_path, reference):
    out = tmp_path / "page"
    explorer = open_training("digits_cnn", EPOCHS, out)
    with TestClient(create_app(explorer)) as client:
        post(client, "/api/train/start")
        post(client, "/api/train/pause")
        explorer.training.wait(120)
        assert client.get("/api/train/status").json()["state"] == "paused"
    assert main(["train", "--resume", str(out), "--no-progress"]) == 0
    assert_same_run(out, reference)


def test_a_run_directory_continues_and_a_nan_loss_fails_on_the_page(tmp_path):
    run = tmp_path / "run"
    fit(TrainConfig(epochs=3, optimizer="sgd", lr=0.01), out=run, progress=False, stop_after_epochs=1)
    good = (run / "last.safetensors").read_bytes()
    config = json.loads((run / "config.json").read_text())
    config["lr"] = 1e6  # the next epoch explodes (the highest lr a config accepts)
    (run / "config.json").write_text(json.dumps(config))
    explorer = open_training(str(run))
    with TestClient(create_app(explorer)) as client:
        assert client.get("/api/train/status").json()["epoch"] == 1  # the run's own epoch, its record shown
        post(client, "/api/train/start")
        explorer.training.wait(120)
        status = client.get("/api/train/status").json()
    assert status["state"] == "failed"
    assert status["error"].startswith("the training loss became") and "\n" not in status["error"]
    assert (run / "last.safetensors").read_bytes() == good


def test_refusals(tmp_path, reference, capsys):
    before = {p.name: p.read_bytes() for p in reference.iterdir() if p.is_file()}
    assert main(["explore", str(reference / "best.safetensors"), "--train", "--no-browser"]) == 2
    assert "is a checkpoint file; --train needs a run directory" in capsys.readouterr().err
    assert main(["explore", "digits_cnn", "--train", "--out", str(reference), "--no-browser"]) == 2
    err = capsys.readouterr().err
    assert "already holds a run" in err and err.count("\n") == 1
    assert main(["explore", str(reference), "--train", "--no-browser"]) == 2  # finished: --epochs must extend it
    assert "has finished its 3 epochs" in capsys.readouterr().err
    assert main(["explore", "digits_cnn", "--epochs", "2", "--no-browser"]) == 2
    assert "--epochs needs --train" in capsys.readouterr().err
    assert {p.name: p.read_bytes() for p in reference.iterdir() if p.is_file()} == before
    with TestClient(create_app(Explorer.open("digits_cnn"))) as client:  # without --train: no training endpoints
        assert client.get("/api/model").json()["training"] is False
        assert client.get("/api/train/status").status_code == 404
    copy = tmp_path / "copy"
    shutil.copytree(reference, copy)
    with TestClient(create_app(open_training(str(copy), EPOCHS + 1))) as client:
        assert client.post("/api/train/pause", json={}).status_code == 409  # nothing running
        assert client.post("/api/train/start", json={"epochs": 9}).status_code == 400  # bodies are strict
        assert client.get("/api/train/status?since=-1").status_code == 400


def test_thin_keeps_the_first_best_and_latest_within_the_budget():
    one = {"w": torch.zeros(256)}  # 1 KiB a snapshot
    snapshots = {epoch: dict(one) for epoch in range(1, 11)}
    thin(snapshots, {1, 4, 10}, 5 * 1024)
    assert len(snapshots) == 5 and {1, 4, 10} <= set(snapshots)
    thin(snapshots, {1, 4, 10}, 0)  # the kept three stay, whatever the budget
    assert set(snapshots) == {1, 4, 10}


def test_another_network_replaces_the_explorers_units(reference):
    explorer = Explorer.open("digits_cnn", None, 5)  # five classes: the run's ten-class head does not fit it
    before = explorer.units
    trained = load_trained(reference / "last")
    adopt(explorer, trained)
    assert explorer.units is not before and explorer.trained is trained
    assert explorer.describe()["classes"] == trained.class_names and len(trained.class_names) == 10
    pixels = explorer.heldout_data()[0][:1]
    got = explorer.predict(pixels, {})["logits"]
    np.testing.assert_allclose(got, logits_of(trained, pixels)[0].numpy(), rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("since", ["²", "٣", "1e3", " 1", "+1", "1.0", "99999999999999999999999", ""])
def test_since_takes_ascii_digits_only(tmp_path, since):
    """str.isdigit takes '²' and '٣' (int() refuses the first): a strict parse answers 400, never 500."""
    with TestClient(create_app(open_training("digits_cnn", 2, tmp_path / "run")),
                    raise_server_exceptions=False) as client:
        response = client.get("/api/train/status", params={"since": since})
        assert response.status_code == 400, response.text
        assert response.json()["error"].startswith("since (an epoch number) must be a whole number from 0 to")
        assert client.get("/api/train/status", params={"since": "0"}).status_code == 200


# The child of the second Ctrl+C test: `cnnkit explore --train` whose second write of `last` blocks (before it
# writes), so the first Ctrl+C finds an epoch being trained that cannot end, and the second one has to quit.
STUCK_TRAINER = """
import sys, time
from pathlib import Path
import cnnkit.train.run_dir as run_dir
from cnnkit.cli import main
from cnnkit.core.errors import CnnkitError
write, writes = run_dir.save_checkpoint, []
def save_or_hang(path, *args, **kwargs):
    if Path(path).name == "last":
        writes.append(path)
        if len(writes) == 2:
            time.sleep(300)  # the test's second SIGINT ends the process meanwhile
    write(path, *args, **kwargs)
run_dir.save_checkpoint = save_or_hang
raise SystemExit(main(sys.argv[1:]))
"""


def explore_training(tmp_path, child: list[str]):
    """`cnnkit explore digits_cnn --train --epochs 300` in a subprocess, started from its page and left to train
    until its first epoch is saved: (process, run folder)."""
    import subprocess
    import sys
    import time

    import httpx

    run = tmp_path / "a run"
    process = subprocess.Popen([sys.executable, *child, "explore", "digits_cnn", "--train", "--epochs", "300",
                                "--out", str(run), "--no-browser"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True)
    url = process.stdout.readline().split(" at ")[1].split()[0]
    assert httpx.post(f"{url}api/train/start", json={}).status_code == 200
    deadline = time.monotonic() + 120
    while httpx.get(f"{url}api/train/status").json()["epoch"] < 1 and time.monotonic() < deadline:
        time.sleep(0.1)
    return process, run


def resumes(run, hint: str, done: int) -> None:
    """The hint is `cnnkit train --resume RUN --epochs 300`, and that resume (one epoch further) works."""
    import shlex

    assert shlex.split(hint) == ["cnnkit", "train", "--resume", str(run), "--epochs", "300"]
    assert main(["train", "--resume", str(run), "--epochs", str(done + 1), "--no-progress"]) == 0
    assert json.loads((run / "last.json").read_text())["epoch"] == done + 1
    assert [r["epoch"] for r in records(run) if "epoch" in r] == list(range(1, done + 2))


@pytest.mark.slow
def test_ctrl_c_while_training_stops_after_the_epoch_and_exits_cleanly(tmp_path):
    import signal

    process, run = explore_training(tmp_path, ["-m", "cnnkit"])
    process.send_signal(signal.SIGINT)
    err = process.communicate(timeout=120)[1]
    assert process.returncode == 0, err
    assert "terminate called" not in err and "Traceback" not in err
    assert "cnnkit explore: stopping: training ends once epoch" in err
    saved = json.loads((run / "last.json").read_text())["epoch"]
    assert f"(epoch {saved} of 300 saved); continue it with: " in err
    assert [r["epoch"] for r in records(run)] == list(range(1, saved + 1))  # no epoch half recorded
    resumes(run, err.split("continue it with: ")[1].splitlines()[0], saved)


@pytest.mark.slow
def test_a_second_ctrl_c_quits_at_once_keeping_the_saved_epoch(tmp_path):
    import signal

    process, run = explore_training(tmp_path, ["-c", STUCK_TRAINER])
    process.send_signal(signal.SIGINT)
    assert process.stderr.readline().startswith("cnnkit explore: stopping: training ends once epoch 2")
    process.send_signal(signal.SIGINT)
    err = process.communicate(timeout=60)[1]
    assert process.returncode == 130, err
    assert "terminate called" not in err and "Traceback" not in err
    assert "cnnkit explore: interrupted: epoch 2 is lost; the run in" in err and "keeps epoch 1;" in err
    assert json.loads((run / "last.json").read_text())["epoch"] == 1
    resumes(run, err.split("continue it with: ")[1].splitlines()[0], 1)


def test_the_run_folder_is_checked_before_the_server_starts_and_nothing_is_left(tmp_path, capsys):
    with pytest.raises(CnnkitError, match=r"^--out /proc/cnnkit_run: cannot create it in /proc \("):
        open_training("digits_cnn", 2, "/proc/cnnkit_run")
    assert not Path("/proc/cnnkit_run").exists()  # /proc refuses new folders, whoever asks (root too)
    for empty in ("", " "):
        with pytest.raises(CnnkitError, match="names no folder"):
            open_training("digits_cnn", 2, empty)
    (tmp_path / "file").write_text("x")
    with pytest.raises(CnnkitError, match=f"^--out {tmp_path}/file/run: {tmp_path}/file is a file, not a folder"):
        open_training("digits_cnn", 2, tmp_path / "file" / "run")
    assert main(["explore", "digits_cnn", "--train", "--out", "", "--no-browser"]) == 2
    assert "cnnkit explore: error: --out '' names no folder" in capsys.readouterr().err
    explorer = open_training("digits_cnn", 2, tmp_path / "new" / "deeper")  # writable: accepted, nothing made
    assert explorer.training.out == tmp_path / "new" / "deeper"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file"]
