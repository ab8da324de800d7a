"""TF SAME/VALID padding planned once: a static pad when the input size allows, a dynamic one only when it must."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from cnnkit.core.arithmetic import Padding, check_window_fits, effective_kernel, padding_mode, pair, same_padding


class TFPadding:
    """Mixin for conv/pool layers: plans 'same'/'valid'/int padding and applies it in `pad_input`.

    SAME with stride 1 needs no input size (the pad is (k-1)*d split with the extra cell after); with a
    larger stride it depends on the input size, so a known `input_size` turns it into a static pad that
    exports cleanly, and without one the pad is computed from each input's shape.
    """

    def plan_padding(
        self, kernel: tuple[int, int], stride: tuple[int, int], dilation: tuple[int, int], padding: Padding,
        input_size: int | tuple[int, int] | None,
    ) -> tuple[int, int]:
        """Set up the layer's padding; return the symmetric (h, w) pad to hand to the torch op."""
        mode = padding_mode(padding)
        self.tf_padding = mode if isinstance(mode, str) else "explicit"
        self.pads: tuple[int, int, int, int] | None = None  # (left, right, top, bottom) applied by F.pad
        self.dynamic_same = False
        self.static_size: tuple[int, int] | None = None  # the input size a strided SAME pad was planned for
        self.extent = (effective_kernel(kernel[0], dilation[0]), effective_kernel(kernel[1], dilation[1]))
        self.tf_geometry = (kernel, stride, dilation)
        if isinstance(mode, tuple):
            return mode
        size = pair(input_size, "input_size") if input_size is not None else None
        if mode == "valid":
            if size is not None:
                self.check_valid_size(size)
            return (0, 0)
        if size is None and stride == (1, 1):
            size = (1, 1)  # stride 1: the SAME pad does not depend on the input size
        if size is None:
            self.dynamic_same = True
            return (0, 0)
        top, bottom = same_padding(size[0], kernel[0], stride[0], dilation[0])
        left, right = same_padding(size[1], kernel[1], stride[1], dilation[1])
        if stride != (1, 1):
            self.static_size = size  # another input size gets its own pad in pad_input, never on top of this one
        elif top == bottom and left == right:
            return (top, left)
        self.pads = (left, right, top, bottom)
        return (0, 0)

    def check_valid_size(self, size: tuple[int, int]) -> None:
        """Raise if a VALID window does not fit the input."""
        for axis in (0, 1):
            check_window_fits(size[axis], self.extent[axis], shape=size)

    def input_pads(self, x: torch.Tensor) -> tuple[int, int, int, int] | None:
        """The (left, right, top, bottom) pads `x` needs before the torch op, or None when the op's own symmetric
        padding is exact. A strided SAME layer planned for one input size computes another size's pad from it."""
        if self.dynamic_same or (self.static_size is not None and tuple(x.shape[-2:]) != self.static_size):
            (kh, kw), (sh, sw), (dh, dw) = self.tf_geometry
            h, w = x.shape[-2], x.shape[-1]
            if torch.jit.is_tracing():  # exports fix H and W: bake this size's pads in as constants
                h, w = int(h), int(w)
            top, bottom = same_padding(h, kh, sh, dh)
            left, right = same_padding(w, kw, sw, dw)
            return (left, right, top, bottom) if top + bottom + left + right else None
        if self.tf_padding == "valid" and not torch.jit.is_tracing():
            self.check_valid_size((x.shape[-2], x.shape[-1]))
        return self.pads

    def pad_input(self, x: torch.Tensor, value: float = 0.0) -> torch.Tensor:
        """Apply the planned asymmetric or dynamic SAME pad (symmetric pads are left to the torch op)."""
        pads = self.input_pads(x)
        return x if pads is None else F.pad(x, pads, value=value)

    def padding_repr(self) -> str:
        """How the padding reads in a module's repr."""
        return f"padding={self.tf_padding!r}" + (f", pads={self.pads}" if self.pads else "")
