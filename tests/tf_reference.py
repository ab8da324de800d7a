"""Slow NumPy loop implementations of TensorFlow's documented semantics, written independently of cnnkit."""

import math

import numpy as np


def tf_pads(size: int, k: int, s: int, d: int, padding: str) -> tuple[int, int]:
    """TF's documented rule: SAME out = ceil(in/s), total pad split with the smaller half first."""
    if padding == "VALID":
        return 0, 0
    out = math.ceil(size / s)
    total = max((out - 1) * s + (k - 1) * d + 1 - size, 0)
    return total // 2, total - total // 2


def windows(x, k, s, padding, d=(1, 1)):
    """Yield (oi, oj, list of (i, j) real input cells) for every output position of an HxW input."""
    h, w = x.shape[:2]
    (pt, pb), (pl, pr) = tf_pads(h, k[0], s[0], d[0], padding), tf_pads(w, k[1], s[1], d[1], padding)
    out_h = (h + pt + pb - (k[0] - 1) * d[0] - 1) // s[0] + 1
    out_w = (w + pl + pr - (k[1] - 1) * d[1] - 1) // s[1] + 1
    for oi in range(out_h):
        for oj in range(out_w):
            cells = []
            for a in range(k[0]):
                for b in range(k[1]):
                    i, j = oi * s[0] - pt + a * d[0], oj * s[1] - pl + b * d[1]
                    cells.append((a, b, i, j, 0 <= i < h and 0 <= j < w))
            yield oi, oj, out_h, out_w, cells


def conv2d_nhwc(x, f, s, padding, d=(1, 1)):
    """x (N, H, W, C), f (kh, kw, C, O)."""
    n = x.shape[0]
    out = None
    for oi, oj, oh, ow, cells in windows(x[0], f.shape[:2], s, padding, d):
        if out is None:
            out = np.zeros((n, oh, ow, f.shape[3]))
        for a, b, i, j, real in cells:
            if real:
                out[:, oi, oj, :] += x[:, i, j, :] @ f[a, b]
    return out


def pool_nhwc(x, k, s, padding, kind):
    """Max or average pool over real cells only (TF semantics)."""
    out = None
    for oi, oj, oh, ow, cells in windows(x[0], k, s, padding):
        if out is None:
            out = np.zeros((x.shape[0], oh, ow, x.shape[3]))
        vals = np.stack([x[:, i, j, :] for _, _, i, j, real in cells if real])
        out[:, oi, oj, :] = vals.max(0) if kind == "max" else vals.mean(0)
    return out


def lrn_nchw(a, n, alpha, beta, k):
    """AlexNet's formula, alpha not divided by n, window clipped at the edges."""
    b = np.zeros_like(a)
    channels = a.shape[1]
    for i in range(channels):
        lo, hi = max(0, i - n // 2), min(channels - 1, i + n // 2)
        b[:, i] = a[:, i] / (k + alpha * (a[:, lo:hi + 1] ** 2).sum(1)) ** beta
    return b
