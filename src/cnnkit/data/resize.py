"""Resizing images: an area (box) filter when shrinking, as TensorFlow's resize_area, bilinear when enlarging.

An area filter averages every input pixel an output pixel covers, weighted by the covered fraction, so a 64x64
drawing of a digit shrinks to the 8x8 picture a person would draw, where bilinear sampling would skip most pixels.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def resize(images: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """(N, C, H, W) float images to (N, C, *size): area-averaged along each shrinking side, then bilinear
    (half-pixel centres) along any side that grows."""
    h, w = size
    x = images
    if h < x.shape[2]:
        x = area_resize_axis(x, h, dim=2)
    if w < x.shape[3]:
        x = area_resize_axis(x, w, dim=3)
    if tuple(x.shape[2:]) != (h, w):
        x = F.interpolate(x, size=(h, w), mode="bilinear", align_corners=False)
    return x


def area_resize_axis(x: torch.Tensor, n_out: int, dim: int) -> torch.Tensor:
    """Resize `x` along `dim` by exact area averaging: output cell i spans input [i*s, (i+1)*s), s = n_in/n_out.

    The average is a difference of the running integral of the pixel values (piecewise constant), so memory
    stays proportional to the image whatever the ratio of the sizes.
    """
    n_in = x.shape[dim]
    values = x.movedim(dim, -1).double()  # float64: running sums of many pixels stay exact
    prefix = F.pad(values.cumsum(-1), (1, 0))  # integral up to each cell's left edge, (..., n_in + 1)
    scale = n_in / n_out
    edges = torch.arange(n_out + 1, dtype=torch.float64, device=x.device) * scale
    cell = edges.floor().long().clamp(max=n_in - 1)  # the cell each edge falls in
    integral = prefix[..., cell] + (edges - cell) * values[..., cell]  # integral up to each edge
    return ((integral[..., 1:] - integral[..., :-1]) / scale).to(x.dtype).movedim(-1, dim)
