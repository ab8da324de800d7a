"""`cnnkit explain`: how a conv or pool window pads and scans an input, in numbers and pictures."""

from __future__ import annotations

import io
from pathlib import Path
from typing import TYPE_CHECKING

from cnnkit.core.arithmetic import effective_kernel, output_size, padding_mode, same_padding
from cnnkit.core.errors import CnnkitError
from cnnkit.core.outputs import ensure_parent

if TYPE_CHECKING:
    from matplotlib.figure import Figure

MAX_SIDE = 100_000  # input sides, kernel, stride, dilation and padding for the arithmetic
MAX_DRAWN_SIDE = 64  # padded cells per side of a picture
MAX_GIF_FRAMES = 400  # output cells of an animated scan


def explain_window(kind: str, size: tuple[int, int], kernel: int, stride: int = 1, padding: str | int = "valid",
                   dilation: int = 1) -> dict:
    """Pads on each side, output size and the formula behind it, for a conv or pool window on an H x W input."""
    if kind not in ("conv", "pool"):
        raise CnnkitError(f"explain takes 'conv' or 'pool'; received {kind!r}")
    for name, value in (("input height", size[0]), ("input width", size[1]), ("kernel", kernel), ("stride", stride),
                        ("dilation", dilation)):
        if not 1 <= value <= MAX_SIDE:
            raise CnnkitError(f"explain: {name} must be between 1 and {MAX_SIDE}; received {value}")
    if kind == "pool" and dilation != 1:  # tf.nn's pooling windows have no dilation
        raise CnnkitError(f"explain: dilation is for convolutions only (tf.nn pooling has none); received {dilation}")
    mode = padding_mode(padding)
    if isinstance(mode, tuple) and max(mode) > MAX_SIDE:
        raise CnnkitError(f"explain: padding must be at most {MAX_SIDE} cells; received {padding}")
    if kind == "pool" and isinstance(mode, tuple) and max(mode) > kernel // 2:
        # Past half the window a window can lie wholly in padding: max gives -inf, average 0/0 (PyTorch's rule too).
        raise CnnkitError(f"explain: a pool's padding must be at most half its {kernel}x{kernel} window "
                          f"({kernel // 2}); received {padding}")
    extent = effective_kernel(kernel, dilation)
    pads, outs, formulas = [], [], []
    for axis, n in zip(("height", "width"), size, strict=True):
        out = output_size(n, kernel, stride, padding, dilation)
        if mode == "same":
            before, after = same_padding(n, kernel, stride, dilation)
            formulas.append(f"{axis}: SAME out = ceil({n} / {stride}) = {out}; total pad = max(({out} - 1) * {stride} "
                            f"+ {extent} - {n}, 0) = {before + after}, split {before} before / {after} after")
        elif mode == "valid":
            before = after = 0
            formulas.append(f"{axis}: VALID out = ceil(({n} - {extent} + 1) / {stride}) = {out}")
        else:
            before = after = mode[0] if axis == "height" else mode[1]
            formulas.append(f"{axis}: out = floor(({n} + 2*{before} - {extent}) / {stride}) + 1 = {out}")
        pads.append((before, after))
        outs.append(out)
    return {"kind": kind, "input": list(size), "kernel": kernel, "stride": stride, "dilation": dilation,
            "padding": mode if isinstance(mode, str) else list(mode), "pad_top": pads[0][0], "pad_bottom": pads[0][1],
            "pad_left": pads[1][0], "pad_right": pads[1][1], "output": outs, "formulas": formulas}


def _frame(info: dict, position: tuple[int, int] | None) -> Figure:
    """The padded input grid; with `position`, the receptive field of that output cell."""
    # A bare Figure (no pyplot): the numbers alone (--json) never import matplotlib, and no GUI backend is touched.
    from matplotlib.figure import Figure
    from matplotlib.patches import Rectangle

    (h, w), k, s, d = info["input"], info["kernel"], info["stride"], info["dilation"]
    top, left = info["pad_top"], info["pad_left"]
    total_h, total_w = h + top + info["pad_bottom"], w + left + info["pad_right"]
    fig = Figure(figsize=(max(3.0, 0.45 * total_w + 1.5), max(3.0, 0.45 * total_h + 1.2)))
    ax = fig.add_subplot()
    for r in range(total_h):
        for c in range(total_w):
            real = top <= r < top + h and left <= c < left + w
            ax.add_patch(Rectangle((c, r), 1, 1, facecolor="white" if real else "#d9d9d9", edgecolor="#999999",
                                   hatch=None if real else "//", linewidth=0.6))
    positions = [position] if position else [(i, j) for i in range(info["output"][0]) for j in range(info["output"][1])]
    for i, j in positions:
        r0, c0 = i * s, j * s
        cells = [(r0 + a * d, c0 + b * d) for a in range(k) for b in range(k)]
        for r, c in cells:
            ax.add_patch(Rectangle((c, r), 1, 1, facecolor="tab:orange", alpha=0.55 if position else 0.08))
        if position:
            ax.add_patch(Rectangle((c0, r0), (k - 1) * d + 1, (k - 1) * d + 1, fill=False, edgecolor="tab:red", lw=2))
    ax.set_xlim(0, total_w)
    ax.set_ylim(total_h, 0)
    ax.set_aspect("equal")
    ax.set_xticks([])
    ax.set_yticks([])
    where = f"output cell ({position[0]}, {position[1]})" if position else "all windows"
    ax.set_title(f"{info['kind']} {k}x{k}/{s} {info['padding']} on {h}x{w} -> {info['output'][0]}x"
                 f"{info['output'][1]}: {where}\n(grey hatched = padding)", fontsize=9)
    return fig


def check_drawable(info: dict, gif: bool) -> None:
    """Refuse pictures too large to draw legibly (every padded cell is a square; a GIF has a frame per output)."""
    height = info["input"][0] + info["pad_top"] + info["pad_bottom"]
    width = info["input"][1] + info["pad_left"] + info["pad_right"]
    if max(height, width) > MAX_DRAWN_SIDE:
        raise CnnkitError(f"explain: the padded input is {height}x{width} cells; pictures are drawn up to "
                          f"{MAX_DRAWN_SIDE}x{MAX_DRAWN_SIDE} (use --json for the numbers alone)")
    frames = info["output"][0] * info["output"][1]
    if gif and frames > MAX_GIF_FRAMES:
        raise CnnkitError(f"explain: a GIF needs one frame per output cell, {frames} here; at most {MAX_GIF_FRAMES}")


def draw_window(info: dict, path: Path, gif: bool = False) -> Path:
    """A PNG of the first output cell's receptive field over the padded input, or an animated GIF of the scan."""
    check_drawable(info, gif)
    ensure_parent(path)
    if not gif:
        fig = _frame(info, (0, 0))
        fig.savefig(path, dpi=100, bbox_inches="tight")
        return path
    from PIL import Image

    frames = []
    for i in range(info["output"][0]):
        for j in range(info["output"][1]):
            fig = _frame(info, (i, j))
            buffer = io.BytesIO()
            fig.savefig(buffer, dpi=80, format="png")
            frames.append(Image.open(io.BytesIO(buffer.getvalue())).convert("P", palette=Image.Palette.ADAPTIVE))
    frames[0].save(path, save_all=True, append_images=frames[1:], duration=500, loop=0)
    return path


PICTURE_SUFFIXES = (".png", ".jpg", ".jpeg", ".svg", ".pdf", ".webp", ".tif", ".tiff")  # matplotlib writes these


def check_picture_name(out: Path, gif: bool) -> None:
    """Refuse an --out whose suffix names another format than the one written (a GIF needs .gif, a still picture
    one of PICTURE_SUFFIXES), before anything is drawn."""
    suffix = out.suffix.lower()
    if gif and suffix != ".gif":
        raise CnnkitError(f"{out}: --gif writes an animated GIF; name it .gif")
    if not gif and suffix not in PICTURE_SUFFIXES:
        hint = " (add --gif for an animation)" if suffix == ".gif" else ""
        raise CnnkitError(f"{out}: a picture is written as {', '.join(PICTURE_SUFFIXES)}; received "
                          f"{suffix or 'no suffix'}{hint}")


def explain(kind: str, size: tuple[int, int], kernel: int, stride: int, padding: str | int, dilation: int,
            out: Path | None, gif: bool = False, overwrite: bool = False) -> dict:
    """The numbers of `explain_window` plus, unless `out` is None, the picture (PNG of the first window, or a GIF of
    the scan) at `out`, which must not exist unless `overwrite`."""
    info = explain_window(kind, size, kernel, stride, padding, dilation)
    if out is not None:
        check_picture_name(out, gif)
        if out.exists() and not overwrite:
            raise CnnkitError(f"{out} already exists; pass --overwrite to replace it")
        if out.exists() and not out.is_file():
            raise CnnkitError(f"{out}: exists and is not a file")
        info["picture"] = str(draw_window(info, out, gif))
    return info
