"""What a model would cost before it is built: parameters and one forward's activations, on the meta device.

A size from a flag or a file (`--input-size 3x4096x4096` for vgg16) must be refused in one line before cnnkit
allocates the 137 GB its classifier would take, or the gigabytes of feature maps one image would fill.
"""

from __future__ import annotations

import torch
from torch import nn

from cnnkit.core.errors import CnnkitError
from cnnkit.core.limits import check_limit, limit
from cnnkit.models import get_model, model_info


def check_footprint(name: str, num_classes: int | None, input_shape: tuple[int, int, int], options: dict) -> None:
    """Refuse `name` for (C, H, W) inputs when its parameters or one image's activations (every layer's output,
    summed) exceed the `parameters` and `activation_bytes` caps; measured on the meta device, which holds no memory
    (fake tensors would too, but importing them imports torch._dynamo: 1.3 s of every `cnnkit summary`)."""
    if within_defaults(name, num_classes, input_shape) and not options:
        return
    what = f"{name} on {'x'.join(map(str, input_shape))} inputs"
    total = [4 * input_shape[0] * input_shape[1] * input_shape[2]]

    def count(_module: nn.Module, _inputs: object, output: object) -> None:
        for tensor in output if isinstance(output, (list, tuple)) else [output]:
            if isinstance(tensor, torch.Tensor):
                total[0] += tensor.numel() * tensor.element_size()

    with torch.device("meta"), torch.no_grad():
        # .to("meta"): buffers a builder draws on the CPU on purpose (LeNet-5's RBF codes) follow the weights.
        try:
            model = get_model(name, num_classes, input_shape[0], input_shape[1:], **options).to("meta")
        except RuntimeError as error:  # torch cannot even describe the weights' sizes (they overflow 64 bits)
            raise CnnkitError(f"{what}: the weights' sizes overflow ({error}); far beyond the parameters limit of "
                              f"{limit('parameters'):,}") from None
        check_limit("parameters", sum(t.numel() for t in model.state_dict().values()), f"{what}: parameter values")
        for module in model.modules():
            if not any(True for _ in module.children()):
                module.register_forward_hook(count)
        model.eval()(torch.empty(1, *input_shape))
    check_limit("activation_bytes", total[0], f"{what}: bytes of one image's activations")


def within_defaults(name: str, num_classes: int | None, input_shape: tuple[int, int, int]) -> bool:
    """Whether a model is asked for at most its registered input size and classes: the registry's own sizes fit
    (the largest, resnet152 at 3x224x224, needs 342 MiB), and a meta-device forward would import torch._dynamo."""
    info = model_info(name)
    if not all(isinstance(v, int) and not isinstance(v, bool) for v in (*input_shape, num_classes or 1)):
        return False  # the builder names the value that is no whole number
    channels, height, width = input_shape
    default_channels, default_height, default_width = info.input_size
    return (channels <= max(default_channels, 3) and height <= default_height and width <= default_width
            and (num_classes is None or num_classes <= info.num_classes))
