"""Argument types shared by several commands."""

from __future__ import annotations

import argparse
import math
from typing import NoReturn

from cnnkit.core.errors import CnnkitError


def dims(text: str, count: int) -> tuple[int, ...]:
    """'1x8x8' -> (1, 8, 8); a single number repeats ('8' -> (8, 8) for count 2)."""
    try:
        values = tuple(int(v) for v in text.lower().split("x"))
    except ValueError:
        raise CnnkitError(f"expected sizes like {'x'.join(['8'] * count)}; received {text!r}") from None
    if len(values) == 1 and count == 2:
        values = values * 2
    if len(values) != count or min(values) < 1:
        raise CnnkitError(f"expected {count} positive sizes like {'x'.join(['8'] * count)}; received {text!r}")
    return values


def percent(value: float) -> str:
    """0.9917 -> '99.17%'."""
    return f"{100 * value:.2f}%"


class OneLineParser(argparse.ArgumentParser):
    """An argument parser whose refusals are one line (no usage block) and exit with code 2, like cnnkit's own."""

    def error(self, message: str) -> NoReturn:
        """Print `PROG: error: MESSAGE (see PROG --help)` to stderr and exit 2."""
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


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
