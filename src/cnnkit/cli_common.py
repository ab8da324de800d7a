"""Argument types shared by several commands."""

from __future__ import annotations

from cnnkit.errors import CnnkitError


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
