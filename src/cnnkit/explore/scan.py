"""What the animated scan and the dense view show: a whole input plane with the window's kernel slice and each
cell's sum, and one dense output's weighted inputs.

Planes travel `packed` ({"shape": [h, w], "data": float32 base64})."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from cnnkit.analysis.trace import Unit, window_of
from cnnkit.core.errors import CnnkitError
from cnnkit.explore.cell import _counts_padding, _is_max
from cnnkit.explore.respond import packed

# Padded input cells one scan sends (384x384): Inception's 299x299 stem fits; a plane past it is refused (the
# page says so) rather than sent as megabytes of numbers or averaged into windows the products no longer match.
MAX_SCAN_CELLS = 384 * 384
TOP_TERMS = 16  # weighted inputs listed for a dense output (the largest by size)


def scan_plane(unit: Unit, layer_input: torch.Tensor, pre: torch.Tensor, channel: int, input_channel: int | None
               ) -> dict:
    """For output map `channel` of `unit`'s head: the window, one input plane, its kernel slice, every output cell's
    sum over that plane (a conv's share from this input channel) and the head's output map."""
    head = unit.members[0]
    h, w = layer_input.shape[-2:]
    window = window_of(head, layer_input[None], tuple(pre.shape[-2:]))
    top, bottom, left, right = window.pads
    padded = (h + top + bottom, w + left + right)
    if padded[0] * padded[1] > MAX_SCAN_CELLS:
        raise CnnkitError(f"{unit.id}'s padded input is {padded[0]}x{padded[1]} = {padded[0] * padded[1]:,} cells; "
                          f"the animation sends up to {MAX_SCAN_CELLS:,} (explore a smaller --input-size)")
    out = {"layer": unit.id, "channel": channel, "kernel": list(window.kernel), "stride": list(window.stride),
           "dilation": list(window.dilation), "pads": dict(zip(("top", "bottom", "left", "right"), window.pads,
                                                               strict=True)),
           "output_values": packed(pre[channel]), "post_values": post_plane(unit, pre, channel),
           "after": unit.types[1:]}
    if unit.kind == "conv":
        per_group = head.out_channels // head.groups
        width = head.in_channels // head.groups
        first = (channel // per_group) * width
        chosen = first if input_channel is None else input_channel
        if not first <= chosen < first + width:
            raise CnnkitError(f"input_channel={chosen} does not feed map {channel} of {unit.id} (channels "
                              f"{first}..{first + width - 1})")
        kernel = head.weight.detach()[channel, chosen - first].double()
        part = F.conv2d(F.pad(layer_input[chosen].double()[None, None], (left, right, top, bottom)), kernel[None, None],
                        stride=window.stride, dilation=window.dilation)[0, 0]
        bias = float(head.bias.detach()[channel]) if head.bias is not None else 0.0
        return {**out, "op": "conv", "input_channel": chosen, "input_channels": [first, first + width - 1],
                "input_values": packed(layer_input[chosen]), "kernel_values": kernel.tolist(), "bias": bias,
                "partial_values": packed(part[:pre.shape[1], :pre.shape[2]])}
    op = "max" if _is_max(head) else "avg"
    return {**out, "op": op, "input_channel": channel, "input_values": packed(layer_input[channel]),
            "kernel_values": None, "counts_padding": op == "avg" and _counts_padding(head)}


def post_plane(unit: Unit, pre: torch.Tensor, channel: int) -> dict | None:
    """Map `channel` after the unit's batch norms and activation (what the post-activation maps show), computed
    from the head's output by the unit's own modules; None for a unit that is its head alone."""
    if len(unit.members) == 1:
        return None
    value = pre[None].clone()  # an in-place ReLU must not change the recorded pre-activation map
    with torch.no_grad():
        for module in unit.members[1:]:
            value = module(value)
    return packed(value[0, channel])


def dense_output(unit: Unit, layer_input: torch.Tensor, output: int, source: Unit | None) -> dict:
    """Output `output` of a dense layer: bias plus the sum of weight x input, the largest terms listed, each input
    named by the (channel, row, column) of the map it was flattened from when `source` is that map."""
    linear = unit.members[0]
    if not hasattr(linear, "weight") or linear.weight.dim() != 2:
        raise CnnkitError(f"{unit.id} is a {unit.types[0]}; only dense (Linear) layers have a weighted sum to show")
    if not 0 <= output < linear.weight.shape[0]:
        raise CnnkitError(f"output={output} is out of range for {unit.id} (0..{linear.weight.shape[0] - 1})")
    x = layer_input.reshape(-1).double()
    weights = linear.weight.detach()[output].double()
    products = (weights * x).tolist()
    bias = float(linear.bias.detach()[output]) if linear.bias is not None else 0.0
    order = sorted(range(len(products)), key=lambda i: -abs(products[i]))[:TOP_TERMS]
    listed = set(order)
    shape = source.shape if source is not None and len(source.shape) == 3 and math.prod(source.shape) == len(x) \
        else None

    def origin(i: int) -> list[int] | None:
        return None if shape is None else [i // (shape[1] * shape[2]), i // shape[2] % shape[1], i % shape[2]]

    return {"layer": unit.id, "output": output, "inputs": len(products), "bias": bias,
            "from": None if shape is None else {"layer": source.id, "shape": list(shape)},
            "terms": [{"index": i, "input": float(x[i]), "weight": float(weights[i]), "product": products[i],
                       "at": origin(i)} for i in order],
            "rest": math.fsum(products[i] for i in range(len(products)) if i not in listed),
            "value": math.fsum([*products, bias])}
