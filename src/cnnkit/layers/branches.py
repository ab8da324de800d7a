"""Split and fusion layers: cut feature maps into regions, run branches, merge branch outputs."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from cnnkit.core.arithmetic import pair
from cnnkit.core.errors import CnnkitError


def split_sizes(length: int, parts: int) -> list[int]:
    """Region lengths along one axis: as even as possible, the first `length % parts` regions one longer."""
    if parts > length:
        raise CnnkitError(f"cannot split a length of {length} into {parts} non-empty regions")
    base, extra = divmod(length, parts)
    return [base + 1 if i < extra else base for i in range(parts)]


class Split(nn.Module):
    """Cut (N, C, H, W) into a rows x cols grid of regions, returned row by row as a list.

    Uneven sizes follow `split_sizes`: a 7-row map in 2 rows gives regions of 4 and 3 rows.
    """

    def __init__(self, grid: int | tuple[int, int] = (2, 2)) -> None:
        super().__init__()
        self.grid = pair(grid, "grid")

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Return the regions, top-left first."""
        rows = torch.split(x, split_sizes(x.shape[-2], self.grid[0]), dim=-2)
        return [region for row in rows for region in torch.split(row, split_sizes(x.shape[-1], self.grid[1]), dim=-1)]

    def extra_repr(self) -> str:
        return f"grid={self.grid}"


class Branches(nn.Module):
    """Run branch i on input i (after a Split), or every branch on one shared input (an Inception module)."""

    def __init__(self, branches: Sequence[nn.Module]) -> None:
        super().__init__()
        self.branches = nn.ModuleList(branches)

    def forward(self, x: torch.Tensor | Sequence[torch.Tensor]) -> list[torch.Tensor]:
        """Apply the branches; a list input must have one tensor per branch."""
        if isinstance(x, torch.Tensor):
            return [branch(x) for branch in self.branches]
        if len(x) != len(self.branches):
            raise CnnkitError(f"Branches has {len(self.branches)} branches but received {len(x)} inputs")
        return [branch(part) for branch, part in zip(self.branches, x, strict=True)]


class Fuse(nn.Module):
    """Merge branch outputs: 'concat' in depth, element-wise 'add'/'sub'/'mul'/'max', or 'conv' (concat + 1x1 conv).

    'sub' computes the first branch minus the others. 'conv' needs `in_channels` (the concatenated depth) and
    `out_channels`.
    """

    modes = ("concat", "add", "sub", "mul", "max", "conv")

    def __init__(self, mode: str = "concat", in_channels: int | None = None, out_channels: int | None = None) -> None:
        super().__init__()
        if mode not in self.modes:
            raise CnnkitError(f"Fuse mode must be one of {', '.join(self.modes)}; received mode={mode!r}")
        self.mode = mode
        self.conv = None
        if mode == "conv":
            if in_channels is None or out_channels is None:
                raise CnnkitError("Fuse(mode='conv') needs in_channels and out_channels for its 1x1 convolution")
            self.conv = nn.Conv2d(in_channels, out_channels, kernel_size=1)

    def forward(self, xs: Sequence[torch.Tensor]) -> torch.Tensor:
        """Merge a list of (N, C_i, H, W) tensors."""
        if len(xs) == 0:
            raise CnnkitError("Fuse received no branch outputs")
        if self.mode in ("concat", "conv"):
            for i, x in enumerate(xs[1:], start=1):
                if x.shape[0] != xs[0].shape[0] or x.shape[2:] != xs[0].shape[2:]:
                    raise CnnkitError(f"Fuse({self.mode!r}): branch {i} has shape {tuple(x.shape)} but branch 0 has "
                                      f"{tuple(xs[0].shape)}; concatenation needs equal N, H and W")
            merged = torch.cat(list(xs), dim=1)
            return self.conv(merged) if self.conv is not None else merged
        for i, x in enumerate(xs[1:], start=1):
            if x.shape != xs[0].shape:
                raise CnnkitError(f"Fuse({self.mode!r}): branch {i} has shape {tuple(x.shape)} but branch 0 has "
                                  f"{tuple(xs[0].shape)}; element-wise fusion needs equal shapes")
        out = xs[0]
        for x in xs[1:]:
            if self.mode == "add":
                out = out + x
            elif self.mode == "sub":
                out = out - x
            elif self.mode == "mul":
                out = out * x
            else:
                out = torch.maximum(out, x)
        return out

    def extra_repr(self) -> str:
        return f"mode={self.mode!r}"
