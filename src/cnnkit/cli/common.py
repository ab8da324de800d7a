"""Argument types shared by several commands."""

from __future__ import annotations

import argparse
import math
import re
from pathlib import Path
from typing import NoReturn

from cnnkit.core.errors import CnnkitError


def dims(text: str, count: int, flag: str = "") -> tuple[int, ...]:
    """'1x8x8' -> (1, 8, 8); a single number repeats ('8' -> (8, 8) for count 2). Only digits and x: '3 x32x32',
    '3x32x32x', '+3x8x8' and '3x8.0x8' are refused, naming `flag` and the value."""
    example = "1x8x8" if count == 3 else "x".join(["8"] * count)
    given = f"{flag} {text!r}" if flag else repr(text)
    if not DIMS.fullmatch(text):
        raise CnnkitError(f"{given}: expected {count} sizes as digits joined by x, like {example} (no spaces or "
                          "signs)")
    values = tuple(int(v) for v in text.lower().split("x"))
    if len(values) == 1 and count == 2:
        values = values * 2
    if len(values) != count or min(values) < 1:
        raise CnnkitError(f"{given}: expected {count} positive sizes like {example}")
    return values


DIMS = re.compile(r"[0-9]+([xX][0-9]+)*", re.ASCII)  # ASCII: int() would take Arabic-Indic and other digits too


def percent(value: float) -> str:
    """0.9917 -> '99.17%'."""
    return f"{100 * value:.2f}%"


class OneLineParser(argparse.ArgumentParser):
    """An argument parser whose refusals are one line (no usage block) and exit with code 2, like cnnkit's own."""

    def error(self, message: str) -> NoReturn:
        """Print `PROG: error: MESSAGE (see PROG --help)` to stderr and exit 2."""
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def folder_path(text: str) -> Path:
    """An argparse type: a folder's path; '' is refused (Path('') is the current folder, so a run would scatter its
    files among whatever is there)."""
    if not text:
        raise argparse.ArgumentTypeError("expected a folder path; received '' (pass . to mean this folder)")
    return Path(text)


def positive_int(text: str) -> int:
    """An argparse type: a whole number of 1 or more."""
    return _bounded_int(text, 1, "a whole number of 1 or more")


def nonnegative_int(text: str) -> int:
    """An argparse type: a whole number of 0 or more."""
    return _bounded_int(text, 0, "a whole number of 0 or more")


def positive_float(text: str) -> float:
    """An argparse type: a finite number above 0."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number above 0; received {text!r}") from None
    if not math.isfinite(value) or value <= 0:
        raise argparse.ArgumentTypeError(f"expected a number above 0; received {text!r}")
    return value


def _bounded_int(text: str, low: int, expected: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected {expected}; received {text!r}") from None
    if value < low:
        raise argparse.ArgumentTypeError(f"expected {expected}; received {text!r}")
    return value
