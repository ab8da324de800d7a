"""The `cnnkit` command line: argument parsing only; the work is done by the library."""

from __future__ import annotations

import argparse
import os
import sys

from cnnkit.cli.common import OneLineParser
from cnnkit.cli.explore import add_explore_parsers
from cnnkit.cli.inspect import add_inspect_parsers
from cnnkit.cli.io import add_io_parsers
from cnnkit.cli.train import add_train_parser
from cnnkit.core.errors import CnnkitError
from cnnkit.core.version import __version__


def build_parser() -> argparse.ArgumentParser:
    """The top-level parser with one sub-parser per command."""
    parser = OneLineParser(
        prog="cnnkit", description="Convolutional neural networks: train, evaluate, inspect and export.",
    )
    parser.add_argument("--version", action="version", version=f"cnnkit {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    parser.set_defaults(commands=commands.choices)
    add_train_parser(commands)
    add_inspect_parsers(commands)
    add_explore_parsers(commands)
    add_io_parsers(commands)
    return parser


def take_trailing_inputs(args: argparse.Namespace, extras: list[str]) -> None:
    """Files after an option (`predict RUN --top-k 5 a.png`) join the command's list of inputs; anything else is
    refused by the command's own parser, which names the command."""
    inputs = getattr(args, "inputs", None)
    if isinstance(inputs, list) and not any(text.startswith("-") for text in extras):
        inputs.extend(extras)
        return
    owner = args.commands.get(args.command) if args.command else None
    (owner or build_parser()).error(f"unrecognized arguments: {' '.join(extras)}")


def unprefixed(message: str, command: str) -> str:
    """A library message without its own leading `COMMAND: ` (the line names the command already: no
    'cnnkit explain: error: explain: ...')."""
    return message.removeprefix(f"{command}: ")


def main(argv: list[str] | None = None) -> int:
    """Run the command line; bad input gives a one-line error and exit code 2."""
    # OpenMP threads that find no work sleep instead of spinning: spinning threads of one process starve every
    # other busy process on a small machine (set before torch is imported by a command; a user's value wins).
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    parser = build_parser()
    args, extras = parser.parse_known_args(argv)
    if extras:
        take_trailing_inputs(args, extras)
    if args.command is None:
        parser.print_help()
        return 0
    try:
        return args.run(args)
    except CnnkitError as error:
        print(f"cnnkit {args.command}: error: {unprefixed(str(error), args.command)}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # output piped into `head` and closed early: not an error
        sys.stdout = open(os.devnull, "w")  # noqa: SIM115
        return 0
    except OSError as error:  # an output path that is read-only, a file, under a file, or a full disk
        where = f"{error.filename}: " if error.filename else ""
        print(f"cnnkit {args.command}: error: {where}{error.strerror or error}", file=sys.stderr)
        return 2
    except MemoryError:
        print(f"cnnkit {args.command}: error: out of memory; use smaller inputs, batches or models", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"cnnkit {args.command}: interrupted", file=sys.stderr)
        return 130
