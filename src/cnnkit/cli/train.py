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
from dataclasses import fields, replace
from pathlib import Path

from cnnkit.core.errors import CnnkitError
from cnnkit.train.config import CHOICES, RESUMABLE, TrainConfig, seed_recipe

HELP = {
    "model": "registered model name (see `cnnkit models`); default digits_cnn. Every other setting defaults to "
             "that model's own recipe (see README: Models), and any flag given overrides it",
    "data": "'digits' (built in), an image folder (ROOT/CLASS/IMAGES), MNIST IDX files, CIFAR-10 .bin, .npz or .csv",
    "image_size": "resize images to SIZE x SIZE (needed when a folder mixes sizes)",
    "val_fraction": "fraction held out for validation (model selection, early stopping); default 0.1",
    "test_fraction": "fraction held out for the final test accuracy; default 0.2",
    "preprocessing": "fitted on the training split: standardize (per channel) or minmax (per pixel, the article's)",
    "shift": "random-shift augmentation in pixels (0 = off); default 1",
    "flip": "random horizontal flips (not for digits)",
    "optimizer": "adam, adamw or sgd (momentum); default adamw",
    "lr": "peak learning rate; default 1e-2",
    "momentum": "SGD momentum; default 0.9",
    "nesterov": "Nesterov momentum for SGD",
    "weight_decay": "weight decay on weights (not biases / BN); default 5e-4",
    "schedule": "learning-rate schedule: constant, step, cosine or onecycle; default onecycle",
    "warmup_epochs": "linear warm-up length in epochs",
    "step_size": "epochs between decays for --schedule step",
    "gamma": "decay factor for --schedule step",
    "label_smoothing": "cross-entropy label smoothing; default 0.1",
    "loss": "cross_entropy, or article (the article's clipped one-hot loss)",
    "batch_size": "images per optimiser step (per process); default 128",
    "epochs": "passes over the training split; default 40",
    "patience": "stop after this many epochs without a better validation accuracy (0 = never)",
    "grad_clip": "clip the gradient norm to this value (0 = off)",
    "seed": "seed for the split, initialisation, order and augmentation; default 0",
    "device": "auto (CUDA if present), cpu or cuda",
    "precision": "fp32, bf16 (autocast) or fp16 (CUDA AMP with loss scaling)",
    "bn_stats": "running (averages during training) or recompute (the article's average of batch moments)",
    "eval_every": "evaluate, log and checkpoint every N epochs",
    "eval_mode": "population (BN population statistics) or batch (the article's batch statistics)",
    "sync_bn": "synchronise batch-norm statistics across processes under torchrun",
    "compile": "torch.compile the training step: auto, on or off",
    "channels_last": "NHWC memory format for model and batches: auto (CPU always, GPU from 32x32), on or off",
    "stream": "image folders too large for memory: decode training batches from disk (a DataLoader)",
    "workers": "DataLoader worker processes with --stream; default 2",
    "tensorboard": "also log scalars for TensorBoard under RUN_DIR/tensorboard (extra [tensorboard])",
    "init_from": "start from this checkpoint's weights (a run directory or checkpoint: trained, or imported from "
                 "Keras / torchvision); the model is the checkpoint's, a new classifier layer is made when the classes "
                 "differ, and its input scaling is kept",
    "freeze": "with --init-from: 'features' keeps the feature extractor's weights and batch-norm statistics fixed "
              "(only the head trains); default none",
    "threads": "intra-op CPU threads per process; default: 1 for small steps (digits-size nets), else the cores "
               "divided among torchrun's processes",
}


TEXT_FIELDS = ("model", "data", "init_from")
PATH_FIELDS = ("data", "init_from")


def add_train_parser(commands: argparse._SubParsersAction) -> None:
    """Register `cnnkit train`."""
    parser = commands.add_parser(
        "train", help="train a model and print its held-out test accuracy",
        description="Train a CNN. With no arguments: the default digits model on scikit-learn's digits, printing "
                    "held-out test accuracy. Each model trains with its own recipe from the registry (the defaults "
                    "quoted below are digits_cnn's); any flag given overrides the recipe. Runs unchanged under "
                    "torchrun for several processes.",
    )
    parser.add_argument("--recipe", choices=("default", "seed"), default=None,
                        help="default: the model's own recipe from the registry; seed: the article's exact program "
                             "(digitsnet, N(0,1) init, batch 8 in file order, Adam 1e-3, its loss, 1000 epochs), plus "
                             "the held-out accuracy it never measured")
    parser.add_argument("--model-option", action="append", default=[], metavar="KEY=VALUE",
                        help="model option, e.g. width=32 or seed_faithful=true (repeatable)")
    for spec in fields(TrainConfig):
        if spec.name not in HELP:
            continue
        flag = "--" + spec.name.replace("_", "-")
        if spec.type == "bool" or isinstance(spec.default, bool):
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, default=None, help=HELP[spec.name])
        elif spec.name in CHOICES:
            parser.add_argument(flag, choices=CHOICES[spec.name], default=None, help=HELP[spec.name])
        else:
            kind = str if spec.name in TEXT_FIELDS else float if isinstance(spec.default, float) else int
            parser.add_argument(flag, type=kind, default=None, metavar=spec.name.upper(), help=HELP[spec.name])
    parser.add_argument("--out", type=Path, default=None, help="run directory; default runs/MODEL-TIMESTAMP")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing run in --out")
    parser.add_argument("--resume", type=Path, default=None, metavar="RUN_DIR",
                        help="continue the run in RUN_DIR from its last checkpoint with its recorded settings "
                             "(--epochs may extend it; other settings must match)")
    parser.add_argument("--seeds", type=int, default=None, metavar="N",
                        help="train seeds SEED..SEED+N-1 of the recipe together in one process; each lands in "
                             "OUT/seed-K as a normal run, the mean and spread in OUT/seeds.json. On the CPU, nets of "
                             "10 M+ multiply-adds a step train side by side, bit-identical to --seed K alone; smaller "
                             "ones (and every net on a GPU) as one vmap, within float rounding of it")
    parser.add_argument("--json", action="store_true", help="print a JSON summary on stdout (logs go to stderr)")
    parser.add_argument("--no-progress", action="store_true", help="plain lines instead of a progress bar")
    parser.set_defaults(run=run_train)


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
    given = {f.name: getattr(args, f.name) for f in fields(TrainConfig) if getattr(args, f.name, None) is not None}
    seed = args.recipe == "seed"
    config = seed_recipe(**given) if seed else TrainConfig.for_model(given.pop("model", None), **given)
    if args.model_option:
        config.model_options = {**config.model_options, **dict(map(parse_option, args.model_option))}
    for name in PATH_FIELDS:  # absolute, so the run resumes and evaluates from any working directory
        value = getattr(config, name)
        if value and value != "digits" and Path(value).exists():
            setattr(config, name, str(Path(value).resolve()))
    return config.validate()


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
    recorded = TrainConfig.from_run_dir(args.resume)
    changed = [f"--{name.replace('_', '-')} {value}" for name, value in vars(args).items()
               if name in {f.name for f in fields(TrainConfig)} - RESUMABLE - {"recipe"} and value is not None
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
    return replace(recorded, **{name: getattr(args, name) for name in RESUMABLE if getattr(args, name) is not None}
                   ).validate()


def run_train(args: argparse.Namespace) -> int:
    """Train and print the held-out accuracy (and a JSON summary with --json)."""
    from cnnkit.train.loop import fit

    if args.resume is not None:
        config, out, resume = resumed_config(args), args.resume, True
    else:
        config = config_from_args(args)
        out = args.out or Path("runs") / f"{config.model}-{time.strftime('%Y%m%d-%H%M%S')}"
        resume = False
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
             if _resumable(out / f"seed-{config.seed + k}", replace(config, seed=config.seed + k))]
    if not ready:
        return None
    which = "each seed" if len(ready) == seeds else "seeds " + ", ".join(map(str, ready))
    run = out / (f"seed-{ready[0]}" if len(ready) == 1 else "seed-K")
    return (f"{which if len(ready) > 1 else run.name} can continue from its last checkpoint: cnnkit train --resume "
            f"{shlex.quote(str(run))}{epochs} ({out / 'seeds.json'} fills in as they finish)")


def _resumable(run: Path, config: TrainConfig) -> bool:
    from cnnkit.train.run_dir import RunDirectory

    try:
        RunDirectory(run).check_resumable(config)
    except (CnnkitError, OSError):
        return False
    return True
