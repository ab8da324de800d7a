"""Layer arithmetic as pure functions: output sizes, TF padding, parameter counts and multiply-adds."""

from __future__ import annotations

import math
from collections.abc import Sequence

from cnnkit.core.errors import CnnkitError

Padding = str | int | tuple[int, int]


def pair(value: int | Sequence[int], name: str) -> tuple[int, int]:
    """Return (h, w) from an int or an (h, w) pair, checking both are positive ints."""
    if isinstance(value, int) and not isinstance(value, bool):
        result = (value, value)
    elif isinstance(value, Sequence) and len(value) == 2 and all(isinstance(v, int) for v in value):
        result = (int(value[0]), int(value[1]))
    else:
        raise CnnkitError(f"{name} must be an int or an (h, w) pair of ints; received {name}={value!r}")
    if min(result) < 1:
        raise CnnkitError(f"{name} must be positive; received {name}={value!r}")
    return result


def padding_mode(padding: Padding) -> str | tuple[int, int]:
    """Normalise a padding argument to 'same', 'valid' or an explicit (h, w) pair of non-negative ints."""
    if isinstance(padding, str):
        mode = padding.lower()
        if mode not in ("same", "valid"):
            raise CnnkitError(
                f"padding must be 'same', 'valid', an int or an (h, w) pair; received padding={padding!r}"
            )
        return mode
    if isinstance(padding, int) and not isinstance(padding, bool):
        padding = (padding, padding)
    if (isinstance(padding, Sequence) and len(padding) == 2
            and all(isinstance(p, int) and not isinstance(p, bool) and p >= 0 for p in padding)):
        return (int(padding[0]), int(padding[1]))
    raise CnnkitError(f"padding must be 'same', 'valid', an int or an (h, w) pair; received padding={padding!r}")


def effective_kernel(kernel: int, dilation: int = 1) -> int:
    """Extent of a dilated kernel: (k - 1) * d + 1."""
    return (kernel - 1) * dilation + 1


def same_padding(in_size: int, kernel: int, stride: int = 1, dilation: int = 1) -> tuple[int, int]:
    """TensorFlow SAME padding (before, after) along one axis; the extra cell goes after (bottom/right)."""
    out = math.ceil(in_size / stride)
    total = max((out - 1) * stride + effective_kernel(kernel, dilation) - in_size, 0)
    return total // 2, total - total // 2


def output_size(in_size: int, kernel: int, stride: int = 1, padding: Padding = "valid", dilation: int = 1) -> int:
    """Output length along one axis of a conv or pool: SAME ceil(in/s), VALID ceil((in-k+1)/s), int pads."""
    mode = padding_mode(padding)
    extent = effective_kernel(kernel, dilation)
    if mode == "same":
        return math.ceil(in_size / stride)
    pad = 0 if mode == "valid" else mode[0]
    check_window_fits(in_size, extent, pad)
    return (in_size + 2 * pad - extent) // stride + 1


def check_window_fits(in_size: int, extent: int, pad: int = 0, shape: tuple[int, int] | None = None) -> None:
    """Refuse a window of `extent` cells that does not fit an input of `in_size` cells padded by `pad` on each side
    (a VALID window when `pad` is 0); `shape` (H, W) names the whole input in the message."""
    if in_size + 2 * pad < extent:
        where = f" padded by {pad} on each side" if pad else ""
        whole = f" (input {shape[0]}x{shape[1]})" if shape else ""
        raise CnnkitError(f"kernel extent {extent} is larger than the {'' if pad else 'VALID '}input size {in_size}"
                          f"{where}{whole}; use a smaller kernel or padding='same'")


def conv_params(kh: int, kw: int, in_ch: int, out_ch: int, bias: bool = True, groups: int = 1) -> int:
    """Trainable parameters of a conv layer: (kh*kw*in/groups + bias) * out, e.g. (5*5*1+1)*3 = 78."""
    return (kh * kw * (in_ch // groups) + int(bias)) * out_ch


def conv_macs(kh: int, kw: int, in_ch: int, out_ch: int, out_h: int, out_w: int, groups: int = 1) -> int:
    """Multiply-adds of a conv layer's forward pass for one sample."""
    return kh * kw * (in_ch // groups) * out_ch * out_h * out_w


def pool_ops(kh: int, kw: int, channels: int, out_h: int, out_w: int) -> int:
    """Comparisons or additions of a pooling layer for one sample (one per window cell); no parameters."""
    return kh * kw * channels * out_h * out_w


def dense_params(in_features: int, out_features: int, bias: bool = True) -> int:
    """Trainable parameters of a fully connected layer: in*out + out, e.g. 784*15 + 15."""
    return in_features * out_features + int(bias) * out_features


def dense_macs(in_features: int, out_features: int) -> int:
    """Multiply-adds of a fully connected layer for one sample."""
    return in_features * out_features


def batchnorm_params(channels: int, per: str = "feature_map", spatial: tuple[int, int] | None = None) -> int:
    """Trainable BN parameters (gamma and beta): 2*C per feature map, 2*C*H*W per neuron."""
    if per == "feature_map":
        return 2 * channels
    if per == "neuron" and spatial is not None:
        return 2 * channels * spatial[0] * spatial[1]
    raise CnnkitError(f"per must be 'feature_map' or 'neuron' (with spatial=(H, W)); received per={per!r}")


def lrn_ops(size: int, channels: int, h: int, w: int) -> int:
    """Multiply-adds of local response normalisation for one sample: a window of squares per output."""
    return size * channels * h * w
