"""TrainConfig is one pydantic model: it makes `cnnkit train`'s flags, checks them, and reads config.json."""

import argparse
import json
from typing import Literal, get_args, get_origin

import pytest

from cnnkit.cli import build_parser, main
from cnnkit.core.errors import CnnkitError
from cnnkit.train.config import TrainConfig, seed_recipe
from cnnkit.train.threads import available_cores, choose_threads


def _train_flags() -> dict[str, argparse.Action]:
    commands = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction)).choices
    return {a.dest: a for a in commands["train"]._actions}


def test_every_field_is_a_flag_with_its_choices_and_description():
    flags = _train_flags()
    for name, info in TrainConfig.model_fields.items():
        if name == "model_options":  # a dict: the repeatable --model-option KEY=VALUE
            assert "model_option" in flags
            continue
        action = flags[name]
        assert action.option_strings[0] == "--" + name.replace("_", "-") and action.default is None
        assert action.help.startswith(info.description)
        if get_origin(info.annotation) is Literal:
            assert tuple(action.choices) == get_args(info.annotation)
    assert tuple(flags["optimizer"].choices) == ("adam", "adamw", "sgd")
    assert flags["lr"].type is float and flags["epochs"].type is int and flags["data"].type is str


@pytest.mark.parametrize("argv,message", [
    (["--lr", "-1"], "--lr must be a finite number above 0 and at most 1e6; received -1.0"),
    (["--epochs", "0"], "--epochs must be a whole number between 1 and 1,000,000; received 0"),
    (["--threads", "0"], "--threads must be a whole number of threads between 1 and 1024 (leave it out to choose "
                         "from the work); received 0"),
    (["--freeze", "features"], "--freeze features keeps a checkpoint's features: it needs --init-from"),
    (["--stream", "--eval-mode", "batch"], "--stream cannot evaluate the training set as one batch (--eval-mode "
                                           "batch)"),
    (["--recipe", "seed", "--model", "lenet5"], "--recipe seed is the article's own program for its network, "
                                                "digitsnet; received --model lenet5"),
    (["--optimizer", "rmsprop"], "argument --optimizer: invalid choice: 'rmsprop'"),
])
def test_bad_flags_are_one_line_exit_2_and_write_nothing(tmp_path, capsys, argv, message):
    out = tmp_path / "run"
    assert _exit_code(["train", "--out", str(out), *argv]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1, err
    assert not out.exists()


def _exit_code(argv: list[str]) -> int:
    """main's return code, or argparse's exit code for what the parser refuses itself."""
    try:
        return main(argv)
    except SystemExit as done:
        return done.code


def test_cuda_without_a_gpu_is_refused_before_any_file(tmp_path, capsys, monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    out = tmp_path / "run"
    assert main(["train", "--device", "cuda", "--epochs", "1", "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert err == ("cnnkit train: error: --device cuda: no CUDA GPU is available to this process; received --device "
                   "cuda (use --device cpu, or auto)")
    assert not out.exists()


def test_python_values_are_checked_strictly_on_construction_and_assignment():
    config = TrainConfig()
    # Python callers are told the field they passed; `cnnkit train` the flag (test_bad_flags_are_one_line...).
    with pytest.raises(CnnkitError, match=r"^epochs must be a whole number between 1 and 1,000,000; received 2.5$"):
        TrainConfig(epochs=2.5)
    with pytest.raises(CnnkitError, match=r"^flip must be true or false; received 1$"):
        TrainConfig(flip=1)
    with pytest.raises(CnnkitError, match="^momentum must be between 0 and 0.999; received 1.5"):
        config.momentum = 1.5
    with pytest.raises(CnnkitError, match="^seed must be a whole number between 0 and 2\\^32-1"):
        config.replace(seed=-1)
    with pytest.raises(CnnkitError, match="^freeze='features' keeps a checkpoint's features: it needs init_from "):
        TrainConfig(freeze="features")
    with pytest.raises(CnnkitError, match=r"^stream=True cannot evaluate the training set as one batch \(eval_mode="):
        TrainConfig(stream=True, eval_mode="batch")
    assert config.momentum == 0.9 and config.replace(seed=4).seed == 4 and config.seed == 0
    assert TrainConfig(lr=1).lr == 1.0  # a whole number is a fine learning rate
    assert seed_recipe(epochs=3).to_dict() == {**TrainConfig(**seed_recipe().to_dict()).to_dict(), "epochs": 3}


def test_config_json_is_validated_by_the_same_model():
    for values, message in (({"lr": "fast"}, "x.json: bad config at lr: must be a finite number above 0 and at "
                                             "most 1e6; received 'fast'"),
                            ({"epochs": "3"}, "x.json: bad config at epochs: must be a whole number"),
                            ({"optimiser": "sgd"}, "x.json: bad config at optimiser: no such setting"),
                            ({"schedule": "linear"}, "x.json: bad config at schedule: must be one of constant, step, "
                                                     "cosine, onecycle; received 'linear'"),
                            ([1, 2], "x.json: expected a JSON object of training settings")):
        with pytest.raises(CnnkitError) as error:
            TrainConfig.from_dict(values, "x.json")
        assert message in str(error.value), error.value
    config = TrainConfig(epochs=3, model_options={"width": 4})
    assert TrainConfig.from_dict(json.loads(json.dumps(config.to_dict()))) == config


def test_a_config_json_of_an_earlier_version_loads_and_resumes(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)  # a user's setting would pick the threads instead
    run = tmp_path / "run"
    assert main(["train", "--epochs", "1", "--out", str(run), "--no-progress"]) == 0
    cores = available_cores()  # digits steps run on one thread: the log says how to use the rest
    assert (f"--threads {cores} overrides" in capsys.readouterr().out) == (cores > 1)
    config = json.loads((run / "config.json").read_text())
    assert config["threads"] is None
    for newer in ("freeze", "init_from", "channels_last", "stream", "workers", "compile", "recipe", "white"):
        del config[newer]  # settings added since: their defaults (the earlier behaviour)
    config["threads"] = 0  # earlier versions wrote 0 for 'choose from the work'
    (run / "config.json").write_text(json.dumps(config))
    loaded = TrainConfig.from_run_dir(run)
    assert loaded.threads is None and loaded.freeze == "none" and loaded.recipe == "default"
    assert main(["train", "--resume", str(run), "--epochs", "2", "--no-progress"]) == 0
    assert json.loads((run / "config.json").read_text())["epochs"] == 2


def _digits():
    from cnnkit.models import get_model

    return get_model("digits_cnn")


def _cpu():
    import torch

    return torch.device("cpu")


def test_fewer_threads_than_cores_says_how_to_override(monkeypatch):
    from cnnkit.train import threads

    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setattr(threads, "available_cores", lambda: 8)
    chosen, why = choose_threads(None, _digits(), 128, _cpu())
    assert chosen == 1 and why.endswith("; 8 cores here: --threads 8 overrides")
    assert choose_threads(3, _digits(), 128, _cpu()) == (3, "--threads")  # the user's own choice: no hint
    monkeypatch.setattr(threads, "available_cores", lambda: 1)
    assert "overrides" not in choose_threads(None, _digits(), 128, _cpu())[1]  # all the cores: nothing to say


def test_a_config_json_naming_a_key_twice_is_refused(tmp_path, capsys):
    run = tmp_path / "run"
    run.mkdir()
    # json.loads would keep the second lr silently; the run must not train with one value and show the other.
    (run / "config.json").write_text('{"epochs": 2, "model_options": {"width": 8}, "lr": 0.5, "lr": 0.01}')
    with pytest.raises(CnnkitError, match=r"config.json: the key 'lr' appears twice in one object; keep one$"):
        TrainConfig.from_run_dir(run)
    (run / "config.json").write_text('{"epochs": 2, "model_options": {"width": 8, "width": 16}}')  # nested too
    assert main(["train", "--resume", str(run)]) == 2
    err = capsys.readouterr().err.strip()
    assert err == f"cnnkit train: error: {run / 'config.json'}: the key 'width' appears twice in one object; keep one"
