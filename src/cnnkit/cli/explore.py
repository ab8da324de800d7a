"""`cnnkit explore` and `cnnkit explain-decision`: parse, call the library, print."""

from __future__ import annotations

import argparse
import contextlib
import os
import shlex
import signal
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from cnnkit.cli.common import dims, percent, positive_float

if TYPE_CHECKING:
    from cnnkit.explore.learn import Training
    from cnnkit.explore.session import Explorer


def add_explore_parsers(commands: argparse._SubParsersAction) -> None:
    """Register the commands that show why a network decides."""
    p = commands.add_parser(
        "explore", help="a live page: draw an image, see the prediction, every layer's maps and why",
        description="Serve a local page (127.0.0.1, a free port) to explore a trained run, a checkpoint, or a "
                    "registered model with fresh weights: draw or upload an image, watch the top classes, every "
                    "layer's maps, the arithmetic of any conv/pool cell, saliency and Grad-CAM.")
    p.add_argument("source", help="run directory, checkpoint, or a registered model name (untrained weights)")
    p.add_argument("--host", default="127.0.0.1",
                   help="address to listen on; default 127.0.0.1 (only this machine). 0.0.0.0 exposes the model "
                        "to your network")
    p.add_argument("--port", type=int, default=0, help="port; default 0 (a free one)")
    p.add_argument("--no-browser", action="store_true", help="print the URL but do not open a browser")
    p.add_argument("--input-size", help="CxHxW for a registered model, e.g. 3x32x32 (default: the model's own)")
    p.add_argument("--num-classes", type=int, help="classes for a registered model")
    p.add_argument("--compare", action="append", default=[], metavar="PATH",
                   help="another checkpoint or run directory of the same network to compare side by side with the "
                        "run's best and last (repeatable)")
    p.add_argument("--train", action="store_true",
                   help="watch it learn: train SOURCE from the page (Start / Pause / Resume). A registered model "
                        "name starts a new run with `cnnkit train`'s recipe; a run directory continues it as "
                        "`cnnkit train --resume` does")
    p.add_argument("--epochs", type=int, help="with --train: the run's epochs (a resumed run: extend it to N)")
    p.add_argument("--out", help="with --train and a model name: the run directory; default "
                                            "runs/MODEL-TIMESTAMP")
    p.add_argument("--overwrite", action="store_true", help="with --train: replace a run already in --out")
    p.set_defaults(run=run_explore)

    p = commands.add_parser(
        "explain-decision", help="saliency and Grad-CAM pictures of why a model classified images as it did",
        description="For each image, write IMAGE_saliency.png (the gradient of the class score with respect to "
                    "the input) and IMAGE_gradcam.png (Grad-CAM on the last convolutional maps).")
    p.add_argument("checkpoint", help="run directory, checkpoint, or a registered model name (random weights)")
    p.add_argument("images", nargs="+", help="image files or .npy arrays")
    p.add_argument("--class", dest="class_name", help="explain this class (default: each image's predicted one)")
    p.add_argument("--layer", help="layer for Grad-CAM (default: the last map at the last convolution's size)")
    p.add_argument("--out", type=Path, default=Path("explain-decision"), help="output folder; default "
                                                                                "./explain-decision")
    p.add_argument("--overwrite", action="store_true", help="replace pictures already in --out")
    p.add_argument("--white", type=positive_float, help="white's value in .npy images (default: the model's "
                                                        "training scale); values are rescaled from it")
    p.set_defaults(run=run_explain_decision)


def run_explore(args: argparse.Namespace) -> int:
    """Open the model, bind the port, print the URL, open the browser, serve until Ctrl+C (or SIGTERM), which is
    the explorer's normal end: exit 0 once a run being trained has saved its epoch."""
    from cnnkit.explore.compare import Checkpoints
    from cnnkit.explore.server import ExploreServer, exposure_warning

    explorer = _open(args)
    Checkpoints.attach(explorer, args.source, args.compare)
    server = ExploreServer(explorer, args.host, args.port)
    warning = exposure_warning(args.host)
    if warning:
        print(f"cnnkit explore: warning: {warning}", file=sys.stderr, flush=True)
    print(f"exploring {explorer.title} at {server.url}  (Ctrl+C stops)", flush=True)
    if not args.no_browser:
        import webbrowser  # only here: it imports subprocess and friends

        webbrowser.open(server.url)
    try:
        with _sigterm_as_interrupt():
            server.run()
    except KeyboardInterrupt:  # Ctrl+C is how the explorer stops: uvicorn shut down, then raised it again
        pass
    return _stop_training(explorer.training) if explorer.training is not None else 0


@contextlib.contextmanager
def _sigterm_as_interrupt() -> Iterator[None]:
    """SIGTERM stops the explorer as Ctrl+C does (training ends at an epoch), not by killing it mid-epoch."""
    def interrupt(_signum: int, _frame: object) -> None:
        raise KeyboardInterrupt

    if threading.current_thread() is not threading.main_thread():  # signals reach the main thread only
        yield
        return
    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _stop_training(training: Training) -> int:
    """After the server stopped: let training end with the epoch being trained (saved, so resumable), say how to
    continue the run; exit 0. A second Ctrl+C quits at once (exit 130), losing only that epoch."""
    resume = f"cnnkit train --resume {shlex.quote(str(training.out))} --epochs {training.config.epochs}"
    target = None
    try:
        with _sigterm_as_interrupt():
            target = training.stop_soon()
            if target is not None:
                print(f"cnnkit explore: stopping: training ends once epoch {target} (being trained) is saved; Ctrl+C "
                      "again quits at once", file=sys.stderr, flush=True)
                training.wait()
    except KeyboardInterrupt:
        lost = f"epoch {target} is lost; " if target is not None else ""
        print(f"cnnkit explore: interrupted: {lost}the run in {training.out} keeps epoch {training.epoch}; continue "
              f"it with: {resume}", file=sys.stderr, flush=True)
        os._exit(130)  # the training thread is inside torch: no interpreter shutdown under its feet
    if training.state == "failed":
        print(f"cnnkit explore: training failed: {training.error}", file=sys.stderr)
    elif training.epoch and training.state == "paused":
        print(f"cnnkit explore: the run is in {training.out} (epoch {training.epoch} of {training.config.epochs} "
              f"saved); continue it with: {resume}", file=sys.stderr)
    return 0


def _open(args: argparse.Namespace) -> Explorer:
    """The explorer: with --train, one whose run trains from the page; the training flags refused without it."""
    from cnnkit.core.errors import CnnkitError
    from cnnkit.explore.session import Explorer

    if not args.train:
        given = [flag for flag, value in (("--epochs", args.epochs), ("--out", args.out),
                                          ("--overwrite", args.overwrite or None)) if value is not None]
        if given:
            raise CnnkitError(f"{given[0]} needs --train (it sets up the run trained from the page)")
        shape = dims(args.input_size, 3, "--input-size") if args.input_size is not None else None
        return Explorer.open(args.source, shape, args.num_classes)
    if args.input_size is not None or args.num_classes is not None:
        raise CnnkitError("--train takes the input size and classes from the run's data; drop --input-size and "
                          "--num-classes")
    from cnnkit.explore.learn import open_training

    return open_training(args.source, args.epochs, args.out, args.overwrite)


def run_explain_decision(args: argparse.Namespace) -> int:
    """Write the pictures and print what each shows."""
    from cnnkit.analysis.pictures import UNTRAINED, explain_decision

    for item in explain_decision(args.checkpoint, args.images, args.out, args.class_name, args.layer, args.overwrite,
                                 args.white):
        untrained = UNTRAINED if item["untrained"] else ""
        print(f"{item['input']}: {untrained}predicted {item['predicted']} ({percent(item['probability'])}), "
              f"explaining {item['explained']}: {item['saliency']} {item['grad_cam']}")
    return 0
