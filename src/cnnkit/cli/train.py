"""`cnnkit train`: flags -> TrainConfig -> fit -> print."""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Literal, get_args, get_origin

from cnnkit.cli.common import folder_path
from cnnkit.core.errors import CnnkitError

if TYPE_CHECKING:
    from cnnkit.train.config import TrainConfig

PATH_FIELDS = ("data", "init_from")
OWN_FLAGS = {"model_options": "--model-option"}  # a dict: given as repeatable KEY=VALUE flags instead


def add_train_parser(commands: argparse._SubParsersAction) -> None:
    """Register `cnnkit train`; its flags are added when it is parsed or its help is shown (they come from
    TrainConfig, whose pydantic import would otherwise slow every other command and `cnnkit --help`)."""
    parser = commands.add_parser(
        "train", help="train a model and print its held-out test accuracy",
        description="Train a CNN. With no arguments: the default digits model on scikit-learn's digits, printing "
                    "held-out test accuracy. Each model trains with its own recipe from the registry (the defaults "
                    "quoted below are digits_cnn's); any flag given overrides the recipe. Runs unchanged under "
                    "torchrun for several processes.",
    )
    parser.set_defaults(run=run_train)
    parser.__class__ = type("TrainParser", (_FlagsOnFirstUse, type(parser)), {})
    parser.__dict__["_add_flags"] = add_train_flags


class _FlagsOnFirstUse:
    """A parser whose flags are added by `_add_flags` the first time anything reads its actions."""

    @property
    def _actions(self) -> list:
        add_flags = self.__dict__.pop("_add_flags", None)
        if add_flags is not None:
            add_flags(self)
        return self.__dict__["_actions"]

    @_actions.setter
    def _actions(self, value: list) -> None:
        self.__dict__["_actions"] = value


def add_train_flags(parser: argparse.ArgumentParser) -> None:
    """One flag per TrainConfig field: its type, choices and help from the field, None when not given (so the
    model's recipe decides)."""
    from cnnkit.train.config import TrainConfig

    parser.add_argument("--model-option", action="append", default=[], metavar="KEY=VALUE",
                        help="model option, e.g. width=32 or seed_faithful=true (repeatable)")
    for name, info in TrainConfig.model_fields.items():
        if name not in OWN_FLAGS:
            parser.add_argument("--" + name.replace("_", "-"), default=None, help=_help(name, info),
                                **_kind(name, info.annotation))
    parser.add_argument("--out", type=folder_path, default=None, help="run directory; default runs/MODEL-TIMESTAMP")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing run in --out")
    parser.add_argument("--resume", type=folder_path, default=None, metavar="RUN_DIR",
                        help="continue the run in RUN_DIR from its last checkpoint with its recorded settings "
                             "(--epochs may extend it; other settings must match)")
    parser.add_argument("--seeds", type=int, default=None, metavar="N",
                        help="train seeds SEED..SEED+N-1 of the recipe together in one process; each lands in "
                             "OUT/seed-K as a normal run, the mean and spread in OUT/seeds.json. On the CPU, nets of "
                             "10 M+ multiply-adds a step train side by side, bit-identical to --seed K alone; smaller "
                             "ones (and every net on a GPU) as one vmap, within float rounding of it")
    parser.add_argument("--json", action="store_true", help="print a JSON summary on stdout (logs go to stderr)")
    parser.add_argument("--no-progress", action="store_true", help="plain lines instead of a progress bar")


def _kind(name: str, annotation: object) -> dict:
    """argparse's action / choices / type for a field's annotation (bool, Literal, int, float, str; or None)."""
    args = [a for a in get_args(annotation) if a is not type(None)] or [annotation]
    if args[0] is bool:
        return {"action": argparse.BooleanOptionalAction}
    if get_origin(annotation) is Literal:
        return {"choices": get_args(annotation)}
    return {"type": args[0], "metavar": name.upper()}


def _help(name: str, info: object) -> str:
    """The field's description, with digits_cnn's default where the description does not say it."""
    from cnnkit.train.config import TrainConfig

    default = TrainConfig.default(name)
    text = info.description
    if "default" in text or default is None or isinstance(default, bool) and not default:
        return text
    return f"{text}; default {'on' if default is True else default}"


def parse_option(text: str) -> tuple[str, object]:
    """KEY=VALUE with VALUE read as JSON where it parses (numbers, true/false), else as a string."""
    if "=" not in text:
        raise CnnkitError(f"--model-option must be KEY=VALUE; received {text!r}")
    key, value = text.split("=", 1)
    try:
        return key, json.loads(value)
    except json.JSONDecodeError:
        return key, value


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    """The recipe (the article's with --recipe seed, else the model's own from the registry), then explicit flags."""
    from cnnkit.train.config import TrainConfig, seed_recipe

    given = {name: getattr(args, name) for name in TrainConfig.model_fields if getattr(args, name, None) is not None}
    for name in PATH_FIELDS:  # absolute, so the run resumes and evaluates from any working directory
        value = given.get(name)
        if value and value != "digits" and Path(value).exists():
            given[name] = str(Path(value).resolve())
    config = seed_recipe(**given) if args.recipe == "seed" else TrainConfig.for_model(given.pop("model", None), **given)
    if args.model_option:
        config.model_options = {**config.model_options, **dict(map(parse_option, args.model_option))}
    return config


def same_setting(name: str, given: object, recorded: object) -> bool:
    """Whether a flag given to --resume says what the run recorded (paths compared as the files they name)."""
    if name in PATH_FIELDS and isinstance(given, str) and isinstance(recorded, str) and Path(given).exists():
        return Path(given).resolve() == Path(recorded).resolve()
    return given == recorded


def option_recorded(option: tuple[str, object], recorded: dict) -> bool:
    """Whether a --model-option KEY=VALUE is what the run recorded for KEY."""
    key, value = option
    return key in recorded and recorded[key] == value


def resumed_config(args: argparse.Namespace) -> TrainConfig:
    """The run's recorded config, with a new epoch count or thread count; any other setting given must match it."""
    from cnnkit.train.config import RESUMABLE, TrainConfig

    recorded = TrainConfig.from_run_dir(args.resume)
    changed = [f"--{name.replace('_', '-')} {value}" for name, value in vars(args).items()
               if name in set(TrainConfig.model_fields) - RESUMABLE - {"recipe"} and value is not None
               and not same_setting(name, value, getattr(recorded, name))]
    changed += [f"--model-option {text}" for text in args.model_option
                if not option_recorded(parse_option(text), recorded.model_options)]
    changed += [f"--out {args.out}"] if args.out is not None and args.out.resolve() != args.resume.resolve() else []
    changed += ["--overwrite"] if args.overwrite else []
    changed += [f"--recipe {args.recipe}"] if args.recipe not in (None, recorded.recipe) else []
    if changed:
        raise CnnkitError(f"--resume continues {args.resume} with the settings in its config.json (only --epochs and "
                          f"--threads may change); received {', '.join(changed)}: start a new run with --out, or "
                          f"fine-tune with --init-from {args.resume}")
    return recorded.replace(**{name: getattr(args, name) for name in RESUMABLE if getattr(args, name) is not None})


def run_train(args: argparse.Namespace) -> int:
    """Train and print the held-out accuracy (and a JSON summary with --json); a refused setting is named by its
    flag (the trainer names fields, as the Python API takes them)."""
    from cnnkit.train.config import SettingError

    try:
        return _train(args)
    except SettingError as error:
        raise CnnkitError(error.flags) from None


def _train(args: argparse.Namespace) -> int:
    """run_train's work."""
    from cnnkit.train.loop import fit

    if args.resume is not None:
        config, out, resume = resumed_config(args), args.resume, True
    else:
        config = config_from_args(args)
        out = args.out or Path("runs") / f"{config.model}-{time.strftime('%Y%m%d-%H%M%S')}"
        resume = False
    config.check_device()
    progress, stream = False if args.no_progress else None, sys.stderr if args.json else sys.stdout
    if args.seeds is not None:
        from cnnkit.train.seeds import fit_seeds

        if resume:
            raise CnnkitError("--seeds starts new runs; resume a seed's run directory (OUT/seed-K) on its own")
        with _resume_hint(out, config, args.seeds):
            summary = fit_seeds(config, args.seeds, out, args.overwrite, progress, stream).summary()
    else:
        with _resume_hint(out, config):
            result = fit(config, out=out, overwrite=args.overwrite, resume=resume, progress=progress, stream=stream)
        summary = result.summary() if result.is_main else None
        if resume and result.is_main:
            from cnnkit.train.seeds import refresh_seeds_summary

            refresh_seeds_summary(result, lambda line: print(line, file=stream))
    if args.json and summary is not None:
        print(json.dumps(summary))
    return 0


@contextmanager
def _resume_hint(out: Path, config: TrainConfig, seeds: int | None = None) -> Iterator[None]:
    """On Ctrl-C, the command that continues the run, when `--resume` would accept it (torchrun: said once)."""
    try:
        yield
    except KeyboardInterrupt:
        line = _how_to_continue(out, config, seeds) if os.environ.get("RANK", "0") == "0" else None
        if line:
            print(f"cnnkit train: {line}", file=sys.stderr)
        raise


def _how_to_continue(out: Path, config: TrainConfig, seeds: int | None) -> str | None:
    """Where the last checkpoint is and the resume command (with the epochs this run was after: a stopped
    extension's config.json may still hold the old count), quoted for a shell; None if nothing can continue."""
    epochs = f" --epochs {config.epochs}"
    if seeds is None:
        if not _resumable(out, config):
            return None
        return f"the last checkpoint is in {out}; continue with: cnnkit train --resume {shlex.quote(str(out))}{epochs}"
    ready = [config.seed + k for k in range(seeds)
             if _resumable(out / f"seed-{config.seed + k}", config.replace(seed=config.seed + k))]
    if not ready:
        return None
    which = "each seed" if len(ready) == seeds else "seeds " + ", ".join(map(str, ready))
    run = out / (f"seed-{ready[0]}" if len(ready) == 1 else "seed-K")
    return (f"{which if len(ready) > 1 else run.name} can continue from its last checkpoint: cnnkit train --resume "
            f"{shlex.quote(str(run))}{epochs} ({out / 'seeds.json'} fills in as they finish)")


def _resumable(run: Path, config: TrainConfig) -> bool:
    from cnnkit.train.run_dir import RunDirectory

    try:
        RunDirectory(run).check_resumable(config, int(os.environ.get("WORLD_SIZE", "1")))
    except (CnnkitError, OSError):
        return False
    return True
