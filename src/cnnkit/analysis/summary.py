"""What a model holds and does, layer by layer: parameters, output shapes, multiply-adds, receptive fields."""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from torch import nn

from cnnkit.analysis.inference import open_model
from cnnkit.analysis.trace import window_of
from cnnkit.analysis.tracer import Call, carry, trace
from cnnkit.core.arithmetic import batchnorm_params, conv_params, dense_params
from cnnkit.layers import BatchNorm2d, Flatten, GlobalAvgPool2d
from cnnkit.models.stats import count_parameters, layer_macs


@dataclass
class LayerRow:
    """One line of a summary."""

    name: str
    type: str
    output_shape: list
    trainable: int
    non_trainable: int
    macs: int
    receptive_field: int | None  # side of the input region one output cell sees (None: the whole input)
    jump: int | None  # input pixels between neighbouring output cells
    formula: str


@dataclass
class Summary:
    """A model's summary table and totals."""

    model: str
    input_shape: list
    rows: list[LayerRow]
    all_trainable: int = 0  # every trainable parameter the model holds, training-only modules included

    @property
    def totals(self) -> dict:
        """Totals over all rows (the inference path), and the model's whole trainable count."""
        return {"trainable": sum(r.trainable for r in self.rows),
                "non_trainable": sum(r.non_trainable for r in self.rows), "macs": sum(r.macs for r in self.rows),
                "trainable_with_training_only_modules": self.all_trainable}

    def to_dict(self) -> dict:
        """JSON-ready."""
        return {"model": self.model, "input_shape": self.input_shape, "layers": [asdict(r) for r in self.rows],
                "totals": self.totals}

    def table(self) -> str:
        """The summary as a fixed-width text table."""
        header = ("layer", "type", "output", "params", "non-train", "mult-adds", "RF", "jump", "formula")
        lines = [header] + [
            (r.name, r.type, "x".join(map(str, r.output_shape)) if r.output_shape else "-", f"{r.trainable:,}",
             f"{r.non_trainable:,}", f"{r.macs:,}", "all" if r.receptive_field is None else str(r.receptive_field),
             "-" if r.jump is None else str(r.jump), r.formula)
            for r in self.rows
        ]
        widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
        text = ["  ".join(cell.ljust(w) for cell, w in zip(line, widths, strict=True)).rstrip() for line in lines]
        text.insert(1, "-" * len(text[0]))
        t = self.totals
        text.append("-" * len(text[0]))
        text.append(f"input {'x'.join(map(str, self.input_shape))}; trainable parameters {t['trainable']:,}; "
                    f"non-trainable {t['non_trainable']:,}; multiply-adds per image {t['macs']:,}")
        if self.all_trainable > t["trainable"]:
            text.append(f"the rows are the inference path; with the modules used only in training (auxiliary "
                        f"classifiers) the model holds {self.all_trainable:,} trainable parameters")
        return "\n".join(text)


def _formula(module: nn.Module, own: int) -> str:
    """The article-style parameter formula with cnnkit.core.arithmetic's count (equal to the layer's own count)."""
    if isinstance(module, nn.Conv2d):
        kh, kw = module.kernel_size
        cin = module.in_channels // module.groups
        count = conv_params(kh, kw, module.in_channels, module.out_channels, module.bias is not None, module.groups)
        if module.bias is not None:
            return f"({kh}*{kw}*{cin}+1)*{module.out_channels} = {count:,}"
        return f"{kh}*{kw}*{cin}*{module.out_channels} = {count:,}"
    if isinstance(module, nn.Linear):
        bias = "+1" if module.bias is not None else ""
        count = dense_params(module.in_features, module.out_features, module.bias is not None)
        return f"({module.in_features}{bias})*{module.out_features} = {count:,}"
    if isinstance(module, BatchNorm2d) and module.weight is not None:
        count = batchnorm_params(module.num_features, module.per, module.spatial)
        return f"2*{'*'.join(map(str, module.weight.shape))} = {count:,}"
    return f"{own:,}" if own else ""


def summarize(model: nn.Module, input_shape: tuple[int, int, int], name: str = "") -> Summary:
    """Run one (C, H, W) zero image through `model` in eval mode and describe every layer that holds parameters
    or does work. Receptive fields follow the path each tensor takes (branches merge by the largest field)."""
    rows = [_row(call, rf, jump) for call, (rf, jump) in carry(trace(model, input_shape), (1, 1), _field, _widest)
            if call.leaf or _counts(call.module) != (0, 0)]
    return Summary(name or getattr(model, "model_name", type(model).__name__), list(input_shape), rows,
                   count_parameters(model))


def _field(call: Call, field: tuple[int | None, int | None]) -> tuple[int | None, int | None]:
    """(receptive field, jump) after a leaf: a sliding window widens it; flattening and dense layers see all."""
    rf, jump = field
    x, out = call.inputs[:1], call.outputs[:1]
    window = window_of(call.module, x[0], tuple(out[0].shape[-2:])) if x and out else None
    if rf is not None and window is not None:  # along the height, as the article counts
        rf, jump = rf + (window.kernel[0] - 1) * window.dilation[0] * jump, jump * window.stride[0]
    if isinstance(call.module, (Flatten, GlobalAvgPool2d, nn.Linear, nn.AdaptiveAvgPool2d, nn.Flatten)):
        return None, None
    return rf, jump


def _widest(a: tuple[int, int], b: tuple[int, int]) -> tuple[int, int]:
    return max(a[0], b[0]), max(a[1], b[1])


def _counts(module: nn.Module) -> tuple[int, int]:
    """(trainable, non-trainable) values a module holds itself: frozen parameters and float buffers it saves."""
    own = sum(p.numel() for p in module.parameters(recurse=False) if p.requires_grad)
    frozen = sum(p.numel() for p in module.parameters(recurse=False) if not p.requires_grad)
    frozen += sum(b.numel() for n, b in module.named_buffers(recurse=False)
                  if b.is_floating_point() and n in module.state_dict(keep_vars=True))
    return own, frozen


def _row(call: Call, rf: int | None, jump: int | None) -> LayerRow:
    module, output = call.module, call.output
    first = output[0] if isinstance(output, (list, tuple)) else output
    shape = list(first.shape[1:]) if isinstance(first, torch.Tensor) else []
    own, frozen = _counts(module)
    return LayerRow(call.name, type(module).__name__, shape, own, frozen, layer_macs(module, first), rf, jump,
                    _formula(module, own))


def summarize_source(source: str, input_shape: tuple[int, int, int] | None = None,
                     num_classes: int | None = None) -> Summary:
    """The summary of a registered model (fresh weights) or a checkpoint's model."""
    trained = open_model(source, input_shape, num_classes)
    return summarize(trained.model, trained.input_shape, name=source)
