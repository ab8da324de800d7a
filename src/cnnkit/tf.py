"""TensorFlow-exact functional ops on torch tensors, with TF's signatures, so the article's code ports line by line.

`tf.nn.conv2d(x, w, strides=[1, 1, 1, 1], padding="SAME")` becomes `cnnkit.tf.nn.conv2d(...)` with the same
arguments and layouts (NHWC by default, filters [h, w, in, out]); autograd works through every op.
"""

from __future__ import annotations

from collections.abc import Sequence
from types import SimpleNamespace

import torch
import torch.nn.functional as F

from cnnkit.core.arithmetic import check_window_fits, effective_kernel, same_padding
from cnnkit.core.errors import CnnkitError

__all__ = [
    "avg_pool", "batch_normalization", "conv2d", "local_response_normalization", "max_pool", "moments", "nn",
    "relu", "softmax", "spatial_pads",
]


def _check_format(data_format: str) -> str:
    if data_format not in ("NHWC", "NCHW"):
        raise CnnkitError(f"data_format must be 'NHWC' or 'NCHW'; received data_format={data_format!r}")
    return data_format


def _check_rank4(x: torch.Tensor, name: str, data_format: str) -> None:
    if x.dim() != 4:
        raise CnnkitError(f"{name} must be a 4-D {data_format} tensor; received shape {tuple(x.shape)}")


def _hw(value: int | Sequence[int] | None, name: str, data_format: str, default: int = 1) -> tuple[int, int]:
    """TF's ints, 1-, 2- or 4-lists for strides/ksize/dilations -> (h, w); batch and depth entries must be 1."""
    if value is None:
        return default, default
    if isinstance(value, int):
        value = [value]
    value = [int(v) for v in value]
    if len(value) == 1:
        hw = (value[0], value[0])
    elif len(value) == 2:
        hw = (value[0], value[1])
    elif len(value) == 4:
        outer = (value[0], value[3]) if data_format == "NHWC" else (value[0], value[1])
        if outer != (1, 1):
            raise CnnkitError(
                f"{name} must be 1 on the batch and depth axes; received {name}={value!r} ({data_format})"
            )
        hw = (value[1], value[2]) if data_format == "NHWC" else (value[2], value[3])
    else:
        raise CnnkitError(f"{name} must be an int or a list of 1, 2 or 4 ints; received {name}={value!r}")
    if min(hw) < 1:
        raise CnnkitError(f"{name} must be positive; received {name}={value!r}")
    return hw


def spatial_pads(
    size: tuple[int, int], kernel: tuple[int, int], stride: tuple[int, int], padding: str | Sequence,
    dilation: tuple[int, int] = (1, 1), data_format: str = "NHWC",
) -> tuple[int, int, int, int]:
    """(left, right, top, bottom) pads for 'SAME', 'VALID' or TF's explicit [[0,0],[t,b],[l,r],[0,0]] list."""
    if isinstance(padding, str):
        mode = padding.upper()
        if mode == "SAME":
            top, bottom = same_padding(size[0], kernel[0], stride[0], dilation[0])
            left, right = same_padding(size[1], kernel[1], stride[1], dilation[1])
            return left, right, top, bottom
        if mode != "VALID":
            raise CnnkitError(
                f"padding must be 'SAME', 'VALID' or an explicit list of pairs; received padding={padding!r}"
            )
        for axis in (0, 1):
            check_window_fits(size[axis], effective_kernel(kernel[axis], dilation[axis]), shape=size)
        return 0, 0, 0, 0
    pairs = [list(p) for p in padding]
    if len(pairs) != 4 or any(len(p) != 2 for p in pairs):
        raise CnnkitError(f"explicit padding must be 4 pairs; received padding={padding!r}")
    (top, bottom), (left, right) = (pairs[1], pairs[2]) if data_format == "NHWC" else (pairs[2], pairs[3])
    return int(left), int(right), int(top), int(bottom)


def _to_nchw(x: torch.Tensor, data_format: str) -> torch.Tensor:
    return x.permute(0, 3, 1, 2) if data_format == "NHWC" else x


def _from_nchw(x: torch.Tensor, data_format: str) -> torch.Tensor:
    return x.permute(0, 2, 3, 1) if data_format == "NHWC" else x


def conv2d(
    input: torch.Tensor, filters: torch.Tensor, strides: int | Sequence[int], padding: str | Sequence,
    data_format: str = "NHWC", dilations: int | Sequence[int] | None = None,
) -> torch.Tensor:
    """tf.nn.conv2d: filters [h, w, in, out]; SAME pads the extra row/column at the bottom/right."""
    _check_format(data_format)
    _check_rank4(input, "input", data_format)
    if filters.dim() != 4:
        raise CnnkitError(f"filters must be 4-D [h, w, in, out]; received shape {tuple(filters.shape)}")
    stride = _hw(strides, "strides", data_format)
    dilation = _hw(dilations, "dilations", data_format)
    x = _to_nchw(input, data_format)
    kh, kw, k_in, k_out = filters.shape
    channels = x.shape[1]
    if channels % k_in:
        raise CnnkitError(f"input depth {channels} is not a multiple of the filters' in-depth {k_in} "
                          f"(filters shape {tuple(filters.shape)})")
    pads = spatial_pads(tuple(x.shape[2:]), (kh, kw), stride, padding, dilation, data_format)
    if any(pads):
        x = F.pad(x, pads)
    weight = filters.permute(3, 2, 0, 1)  # HWIO -> OIHW
    y = F.conv2d(x, weight, None, stride, 0, dilation, groups=channels // k_in)
    return _from_nchw(y, data_format)


def _pool_setup(value: torch.Tensor, ksize, strides, padding: str, data_format: str):
    """Checked NCHW input, (kh, kw), (sh, sw) and the (left, right, top, bottom) pads of a TF pooling call."""
    _check_format(data_format)
    _check_rank4(value, "value", data_format)
    kernel, stride = _hw(ksize, "ksize", data_format), _hw(strides, "strides", data_format)
    x = _to_nchw(value, data_format)
    return x, kernel, stride, spatial_pads(tuple(x.shape[2:]), kernel, stride, padding, data_format=data_format)


def max_pool(
    value: torch.Tensor, ksize: int | Sequence[int], strides: int | Sequence[int], padding: str,
    data_format: str = "NHWC",
) -> torch.Tensor:
    """tf.nn.max_pool: padded cells are -inf, so a window never picks one."""
    x, kernel, stride, pads = _pool_setup(value, ksize, strides, padding, data_format)
    if any(pads):
        x = F.pad(x, pads, value=float("-inf"))
    return _from_nchw(F.max_pool2d(x, kernel, stride), data_format)


def avg_pool(
    value: torch.Tensor, ksize: int | Sequence[int], strides: int | Sequence[int], padding: str,
    data_format: str = "NHWC",
) -> torch.Tensor:
    """tf.nn.avg_pool: with SAME, each window's sum is divided by its number of real (unpadded) cells."""
    x, kernel, stride, pads = _pool_setup(value, ksize, strides, padding, data_format)
    return _from_nchw(avg_pool_real_cells(x, kernel, stride, pads), data_format)


def avg_pool_real_cells(
    x: torch.Tensor, kernel: tuple[int, int], stride: tuple[int, int], pads: tuple[int, int, int, int],
) -> torch.Tensor:
    """NCHW average pooling after zero pads (left, right, top, bottom), each window's sum divided by its number
    of real (unpadded) cells: TF's SAME average pool."""
    if not any(pads):
        return F.avg_pool2d(x, kernel, stride)
    ones = torch.ones((1, 1, *x.shape[2:]), dtype=x.dtype, device=x.device)
    real_cells = F.avg_pool2d(F.pad(ones, pads), kernel, stride, divisor_override=1)
    window_sums = F.avg_pool2d(F.pad(x, pads), kernel, stride, divisor_override=1)
    return window_sums / real_cells


def moments(
    x: torch.Tensor, axes: Sequence[int], keepdims: bool = False, *, keep_dims: bool | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """tf.nn.moments: (mean, population variance) over `axes`; `keep_dims` is TF 1's spelling."""
    keep = keepdims if keep_dims is None else keep_dims
    variance, mean = torch.var_mean(x, dim=list(axes), correction=0, keepdim=keep)
    return mean, variance


def batch_normalization(
    x: torch.Tensor, mean: torch.Tensor, variance: torch.Tensor, offset: torch.Tensor | None,
    scale: torch.Tensor | None, variance_epsilon: float,
) -> torch.Tensor:
    """tf.nn.batch_normalization: scale * (x - mean) / sqrt(variance + eps) + offset, broadcasting like TF."""
    inv = torch.rsqrt(variance + variance_epsilon)
    if scale is not None:
        inv = inv * scale
    shift = -mean * inv if offset is None else offset - mean * inv
    return x * inv + shift


def local_response_normalization(
    input: torch.Tensor, depth_radius: int = 5, bias: float = 1.0, alpha: float = 1.0, beta: float = 0.5,
    data_format: str = "NHWC",
) -> torch.Tensor:
    """tf.nn.local_response_normalization: input / (bias + alpha * sum of squares over d-r..d+r) ** beta."""
    _check_format(data_format)
    _check_rank4(input, "input", data_format)
    if depth_radius < 0:
        raise CnnkitError(f"depth_radius must be >= 0; received depth_radius={depth_radius!r}")
    x = _to_nchw(input, data_format)
    squares = F.pad(x.square(), (0, 0, 0, 0, depth_radius, depth_radius))  # zero maps beyond the edges
    channels = x.shape[1]
    window_sums = squares[:, :channels]  # sum of 2r+1 shifted slices: exact, and exports as Slice + Add
    for offset in range(1, 2 * depth_radius + 1):
        window_sums = window_sums + squares[:, offset:offset + channels]
    return _from_nchw(x / (bias + alpha * window_sums).pow(beta), data_format)


def relu(features: torch.Tensor) -> torch.Tensor:
    """tf.nn.relu: max(x, 0)."""
    return torch.relu(features)


def softmax(logits: torch.Tensor, axis: int = -1) -> torch.Tensor:
    """tf.nn.softmax over `axis` (the last by default, as in TF)."""
    return torch.softmax(logits, dim=axis)


# `from cnnkit import tf` then `tf.nn.conv2d(...)`, exactly as the article writes it.
nn = SimpleNamespace(
    conv2d=conv2d, max_pool=max_pool, avg_pool=avg_pool, moments=moments, batch_normalization=batch_normalization,
    local_response_normalization=local_response_normalization, lrn=local_response_normalization,
    relu=relu, softmax=softmax,
)
