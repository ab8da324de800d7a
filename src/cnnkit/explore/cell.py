"""The arithmetic of one output cell of a conv or pool layer, with the real numbers, as the article explains it.

A conv cell is the sum over the input channels of (input patch x kernel slice), plus the bias; then each batch
norm and the activation of its unit. A pool cell is the max or the average of its window. Window cells outside
the input are padding: a conv multiplies them by zero, a max pool never picks them, a TF-SAME average pool does
not count them. Sums are taken in float64 over the float32 values (exact products, `math.fsum`), so the numbers
shown add up to the map value up to float32 rounding.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from cnnkit.analysis.trace import NORMS, Unit, Window, window_of
from cnnkit.layers import AvgPool2d, MaxPool2d


def explain_cell(unit: Unit, layer_input: torch.Tensor, outputs: dict[str, torch.Tensor], channel: int, y: int,
                 x: int) -> dict:
    """The arithmetic of cell (channel, y, x) of `unit`'s head, given the head's (C, H, W) input and the unit's
    recorded (C, H, W) outputs by layer name: `output` is the head's value, `steps` the batch norms / activation
    after it, `value` the unit's post-activation value; `map_value` holds what the maps show (pre and post)."""
    head = unit.members[0]
    window = window_of(head, layer_input[None], tuple(outputs[unit.pre].shape[-2:]))
    rows, cols = window.rows(y), window.cols(x)
    part = conv_cell(head, layer_input, channel, rows, cols) if unit.kind == "conv" else \
        pool_cell(head, window, layer_input, channel, rows, cols)
    output = part.pop("value")  # the head's own output: the pre-activation value
    steps, value = chain_steps(unit, output, channel, y, x)
    h, w = layer_input.shape[-2:]
    return {
        "layer": unit.id, "type": type(head).__name__, "channel": channel, "y": y, "x": x,
        "window": {"kernel": list(window.kernel), "stride": list(window.stride), "dilation": list(window.dilation),
                   "pads": dict(zip(("top", "bottom", "left", "right"), window.pads, strict=True)),
                   "rows": rows, "cols": cols, "input_size": [int(h), int(w)]},
        **part, "output": output, "steps": steps, "value": value,
        "map_value": {"pre": float(outputs[unit.pre][channel, y, x]), "post": float(outputs[unit.post][channel, y, x])},
    }


def patch(plane: torch.Tensor, rows: list[int], cols: list[int]) -> list[list[float | None]]:
    """The window's values on one (H, W) plane; None marks a padding cell."""
    h, w = plane.shape
    values = plane.tolist()
    return [[values[r][c] if 0 <= r < h and 0 <= c < w else None for c in cols] for r in rows]


def conv_cell(conv: nn.Conv2d, layer_input: torch.Tensor, out_channel: int, rows: list[int], cols: list[int]) -> dict:
    """Per input channel of the cell's group: patch, kernel slice and their dot product; then bias and total."""
    per_group = conv.out_channels // conv.groups
    width = conv.in_channels // conv.groups
    first = (out_channel // per_group) * width
    kernels = conv.weight[out_channel].detach().double().tolist()  # (in/groups, kh, kw)
    channels = []
    for k in range(width):
        values = patch(layer_input[first + k], rows, cols)
        products = [v * w for row, weights in zip(values, kernels[k], strict=True)
                    for v, w in zip(row, weights, strict=True) if v is not None]
        channels.append({"input_channel": first + k, "patch": values, "kernel": kernels[k],
                         "sum": math.fsum(products)})
    bias = float(conv.bias.detach()[out_channel]) if conv.bias is not None else 0.0
    return {"kind": "conv", "groups": conv.groups, "channels": channels, "bias": bias,
            "value": math.fsum([c["sum"] for c in channels] + [bias])}


def _is_max(pool: nn.Module) -> bool:
    return isinstance(pool, (MaxPool2d, nn.MaxPool2d))


def _counts_padding(pool: nn.Module) -> bool:
    """Whether an average pool divides by padding cells too (torch's explicit pads), or by real cells only (TF)."""
    if isinstance(pool, AvgPool2d):
        return pool.tf_padding == "explicit"
    return bool(getattr(pool, "count_include_pad", False))


def pool_cell(pool: nn.Module, window: Window, layer_input: torch.Tensor, channel: int, rows: list[int],
              cols: list[int]) -> dict:
    """The window on the cell's channel and its max, or its sum and divisor."""
    values = patch(layer_input[channel], rows, cols)
    real = [(v, i, j) for i, row in enumerate(values) for j, v in enumerate(row) if v is not None]
    if _is_max(pool):
        best = max(real, key=lambda item: item[0])
        return {"kind": "max_pool", "channel_patch": values, "value": best[0], "argmax": [best[1], best[2]]}
    h, w = layer_input.shape[-2:]
    top, bottom, left, right = window.pads
    if getattr(pool, "divisor_override", None):
        divisor = pool.divisor_override
    elif _counts_padding(pool):  # padding cells inside the padded input count, cells past it do not
        divisor = sum(1 for r in rows if -top <= r < h + bottom) * sum(1 for c in cols if -left <= c < w + right)
    else:
        divisor = len(real)
    total = math.fsum(v for v, _, _ in real)
    return {"kind": "avg_pool", "channel_patch": values, "sum": total, "divisor": divisor, "value": total / divisor}


def chain_steps(unit: Unit, value: float, channel: int, y: int, x: int) -> tuple[list[dict], float]:
    """Each batch norm (population statistics) and the activation after the head, applied to the cell's value."""
    steps = []
    for name, module in zip(unit.names[1:], unit.members[1:], strict=True):
        if isinstance(module, NORMS):
            step = batch_norm_step(module, value, channel, y, x)
        else:
            with torch.no_grad():
                out = module(torch.tensor([[[[value]]]], dtype=torch.float64))
            step = {"op": "activation", "formula": "max(0, x)" if isinstance(module, nn.ReLU)
                    else f"{type(module).__name__}(x)", "input": value, "value": float(out.reshape(-1)[0])}
        steps.append({"layer": name, "type": type(module).__name__, **step})
        value = step["value"]
    return steps, value


def batch_norm_step(bn: nn.Module, value: float, channel: int, y: int, x: int) -> dict:
    """(x - mean) / sqrt(var + eps) * gamma + beta with the layer's population statistics at this cell."""
    per_neuron = bn.running_mean.dim() == 3  # cnnkit's BatchNorm2d(per='neuron'): statistics per (c, y, x)
    at = (channel, y, x) if per_neuron else (channel,)
    mean, var = float(bn.running_mean[at]), float(bn.running_var[at])
    gamma = float(bn.weight.detach()[at]) if bn.weight is not None else 1.0
    beta = float(bn.bias.detach()[at]) if bn.bias is not None else 0.0
    result = (value - mean) / math.sqrt(var + bn.eps) * gamma + beta
    return {"op": "batch_norm", "formula": "(x - mean) / sqrt(var + eps) * gamma + beta", "input": value,
            "mean": mean, "var": var, "eps": bn.eps, "gamma": gamma, "beta": beta, "value": result}
