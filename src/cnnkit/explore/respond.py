"""What the explore server sends: every JSON answer goes through `reply` (strict JSON, no NaN or infinity), tensors
travel packed by `encode` / `packed` (float32 base64, the page's Float32Array), and numbers read from a query string
or header go through `whole_number` (ASCII digits only, bounded).

A network with finite but huge weights (3e38 passes the load-time check) overflows float32 on an image; its
answer is refused with a one-line 400 naming the first layer whose output overflows, never a 500.
"""

from __future__ import annotations

import base64
import json
import re

import torch
from starlette.responses import Response
from torch import nn

from cnnkit.analysis.trace import tensors
from cnnkit.core.errors import CnnkitError

NOT_FINITE = "the model's output for this image is not finite (inf/NaN): its weights are out of range"
_DIGITS = re.compile(r"[0-9]{1,18}")  # str.isdigit also takes '²' and other Unicode digits int() refuses


class ApiError(Exception):
    """A refused request: HTTP status and a one-line message."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def reply(content: object, status: int = 200, not_finite: str = NOT_FINITE) -> Response:
    """`content` as strict JSON; a NaN or infinity anywhere in it is refused (400, `not_finite`), as JSON
    cannot carry it."""
    try:
        body = json.dumps(content, ensure_ascii=False, allow_nan=False, separators=(",", ":"))
    except ValueError as error:
        if "Out of range float" not in str(error):
            raise
        raise ApiError(400, not_finite) from None
    return Response(body.encode(), status_code=status, media_type="application/json")


def encode(values: torch.Tensor) -> str:
    """float32 little-endian bytes, base64: what the page decodes into a Float32Array."""
    return base64.b64encode(values.detach().float().contiguous().numpy().astype("<f4").tobytes()).decode()


def packed(values: torch.Tensor) -> dict:
    """A tensor as its shape and `encode`d values (a 224x224 plane: 268 kB instead of about 1 MB of JSON numbers)."""
    return {"shape": list(values.shape), "data": encode(values)}


def whole_number(text: str, what: str, maximum: int) -> int:
    """`text` as a whole number 0..maximum, written in ASCII digits; anything else is refused naming `what`."""
    if not _DIGITS.fullmatch(text) or int(text) > maximum:
        raise CnnkitError(f"{what} must be a whole number from 0 to {maximum:,} (ASCII digits); received "
                          f"{text[:20]!r}")
    return int(text)


def _finite(value: torch.Tensor | None) -> bool:
    return value is None or not value.is_floating_point() or bool(torch.isfinite(value).all())


def first_non_finite(model: nn.Module, x: torch.Tensor) -> str | None:
    """The first layer, in the order the forward pass runs them, whose output holds inf or NaN for `x`."""
    found: list[str] = []

    def hook(name: str, output: object) -> None:
        if not found and not all(_finite(t) for t in tensors(output)):
            found.append(name)

    leaves = [(n, m) for n, m in model.named_modules() if n and not any(m.children())]
    handles = [m.register_forward_hook(lambda _m, _i, o, n=n: hook(n, o)) for n, m in leaves]
    try:
        with torch.no_grad():
            model(x)
    finally:
        for handle in handles:
            handle.remove()
    return found[0] if found else None


def refuse_non_finite(model: nn.Module, x: torch.Tensor, *values: torch.Tensor | None) -> None:
    """Refuse (one line, naming the layer) when any of `values` computed from model input `x` is not finite."""
    if all(_finite(v) for v in values):
        return
    if not _finite(x):
        raise CnnkitError("the model's input for this image is not finite (inf/NaN): the checkpoint's "
                          "preprocessing values are out of range")
    layer = first_non_finite(model, x)
    if layer is None:  # the forward pass is finite: a gradient overflowed
        raise CnnkitError("the model's gradient for this image is not finite (inf/NaN): its weights are out of "
                          "range")
    weights = [p.detach().abs().max() for p in dict(model.named_modules())[layer].parameters(recurse=False)
               if p.numel()]
    largest = f"; its largest weight is {float(max(weights)):.3g}" if weights else ""
    raise CnnkitError(f"{NOT_FINITE} (layer {layer} overflows first{largest})")
