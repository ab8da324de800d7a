"""The hyperparameter playground: one window (conv, max or average pool) on a small example input, with the
output size and pads from `cnnkit explain`'s arithmetic and the output values from `cnnkit.tf`."""

from __future__ import annotations

import torch

from cnnkit import tf
from cnnkit.analysis.explain import explain_window
from cnnkit.core.errors import CnnkitError

MAX_INPUT = 32  # cells per side: every cell is drawn with its number


def example_input(h: int, w: int) -> torch.Tensor:
    """Small whole numbers 0..9 in a pattern a learner can follow by eye."""
    rows, cols = torch.arange(h)[:, None], torch.arange(w)[None, :]
    return ((3 * rows + 5 * cols) % 10).double()


def example_kernel(k: int) -> torch.Tensor:
    """Whole numbers -1, 0, 1: an edge-like filter whose products are easy to add up."""
    rows, cols = torch.arange(k)[:, None], torch.arange(k)[None, :]
    return ((rows + 2 * cols) % 3 - 1).double()


def tf_padding(padding: str | int) -> str | list[list[int]]:
    """`cnnkit.tf`'s padding argument: 'SAME', 'VALID' or the explicit NHWC list of pairs."""
    if isinstance(padding, str):
        return padding.upper()
    return [[0, 0], [padding, padding], [padding, padding], [0, 0]]


def window_example(kind: str, size: tuple[int, int], kernel: int, stride: int, padding: str | int,
                   dilation: int) -> dict:
    """`explain_window`'s numbers for a conv or a max / average pool, plus an example input, kernel and the output
    `cnnkit.tf` computes from them (NHWC, one channel)."""
    if kind not in ("conv", "max", "avg"):
        raise CnnkitError(f"kind must be 'conv', 'max' or 'avg'; received {kind!r}")
    if max(size) > MAX_INPUT:
        raise CnnkitError(f"the playground draws every cell: input sides up to {MAX_INPUT}; received "
                          f"{size[0]}x{size[1]}")
    if kind != "conv" and dilation != 1:
        raise CnnkitError(f"tf.nn pooling has no dilation; received dilation={dilation} for a {kind} pool")
    info = explain_window("conv" if kind == "conv" else "pool", size, kernel, stride, padding, dilation)
    x = example_input(*size)
    nhwc = x[None, :, :, None]
    if kind == "conv":
        weights = example_kernel(kernel)
        y = tf.conv2d(nhwc, weights[:, :, None, None], stride, tf_padding(padding), dilations=dilation)
    else:
        weights = None
        pool = tf.max_pool if kind == "max" else tf.avg_pool
        y = pool(nhwc, kernel, stride, tf_padding(padding))
    return {**info, "op": kind, "input_values": x.tolist(), "kernel_values": None if weights is None else
            weights.tolist(), "output_values": y[0, :, :, 0].tolist()}
