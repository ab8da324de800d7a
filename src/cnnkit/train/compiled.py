"""A whole training step (forward, backward, optimiser) as one torch.compile graph over flat parameters.

For tiny networks the eager step is all per-operator overhead: oneDNN convolution calls, a Python loop per
parameter in the optimiser, autograd bookkeeping. Here the parameters live in one flat tensor (the model's
parameters become views into it), gradients come from torch.func, and Adam/AdamW/SGD update the flat tensors in
the same graph, so each step is a single compiled call.
"""

from __future__ import annotations

import sys
import types
from collections.abc import Callable

import torch
from torch import nn
from torch.func import functional_call, grad_and_value

from cnnkit.errors import CnnkitError
from cnnkit.layers.conv import Conv2d
from cnnkit.models.base import main_logits
from cnnkit.train.config import TrainConfig

SINGLE_THREAD_PARAMS = 100_000
TINY_MAP = 16 * 16  # convolutions on maps this small run as gather + matmul inside the compiled graph


def compiler_available() -> bool:
    """torch.compile's CPU backend needs a C++ compiler."""
    import shutil

    return any(shutil.which(cc) for cc in ("g++", "c++", "clang++"))


class CompiledStep:
    """step(x, y, lr) -> (loss, logits), updating the model's parameters, buffers and optimiser state in place."""

    def __init__(self, model: nn.Module, config: TrainConfig, loss_fn: Callable, input_size: tuple[int, int]) -> None:
        if config.optimizer not in ("adam", "adamw", "sgd"):
            raise CnnkitError(f"no compiled step for optimizer {config.optimizer!r}")
        self.model, self.config, self.loss_fn = model, config, loss_fn
        named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
        self.names = [n for n, _ in named]
        self.shapes = [p.shape for _, p in named]
        self.sizes = [p.numel() for _, p in named]
        self.flat = torch.cat([p.detach().reshape(-1) for _, p in named])
        # Weight decay applies to weights (>1-D), not to biases and normalisation parameters, as make_optimizer.
        self.decay_mask = torch.cat([torch.full((p.numel(),), float(p.dim() > 1)) for _, p in named]).to(self.flat)
        offset = 0
        for (_, p), size in zip(named, self.sizes, strict=True):
            p.data = self.flat[offset:offset + size].view_as(p)  # the model now reads the flat tensor
            offset += size
        self.buffers = dict(model.named_buffers())
        # A step of a tiny CPU network is all thread hand-offs and no work: one thread is faster there (the
        # article's recipe: 685 vs 918 us per step on 2 cores).
        self.single_thread = self.flat.device.type == "cpu" and self.flat.numel() < SINGLE_THREAD_PARAMS
        self.exp_avg = torch.zeros_like(self.flat)
        self.exp_avg_sq = torch.zeros_like(self.flat)
        self.step_count = torch.zeros((), dtype=self.flat.dtype, device=self.flat.device)
        if min(input_size) ** 2 <= TINY_MAP:
            for module in model.modules():
                if isinstance(module, Conv2d):
                    module.im2col = True
        # Guards re-check the model and config on every call (~100 us here). Both are fixed for this object, so
        # only tensor guards (shapes, dtypes: a smaller last batch recompiles) are kept, and each CompiledStep
        # compiles its own copy of the step's code so no other model or config can share its cached graph.
        options = {"guard_filter_fn": torch.compiler.keep_tensor_guards_unsafe} \
            if hasattr(torch.compiler, "keep_tensor_guards_unsafe") else None
        code = CompiledStep._step.__code__.replace(co_name=f"_step_{id(self):x}")
        own_step = types.FunctionType(code, CompiledStep._step.__globals__, code.co_name).__get__(self)
        self._compiled = torch.compile(own_step, fullgraph=True, dynamic=False, options=options)

    def _step(self, flat, buffers, exp_avg, exp_avg_sq, step_count, x, y, lr):
        names, shapes, sizes = self.names, self.shapes, self.sizes

        def loss_of(weights, bufs):
            params = {n: t.view(s) for n, t, s in zip(names, weights.split(sizes), shapes, strict=True)}
            output = functional_call(self.model, (params, bufs), (x,))
            return self.loss_fn(output, y), output

        grads, (loss, output) = grad_and_value(loss_of, has_aux=True)(flat, buffers)
        config = self.config
        if config.grad_clip:
            norm = grads.norm()
            grads = grads * torch.clamp(config.grad_clip / (norm + 1e-6), max=1.0)
        step_count.add_(1)
        if config.optimizer == "sgd":
            if config.weight_decay:
                grads = grads + config.weight_decay * self.decay_mask * flat
            # torch's SGD starts the momentum buffer at the first gradient
            buffer = torch.where(step_count == 1, grads, exp_avg * config.momentum + grads)
            exp_avg.copy_(buffer)
            update = grads + config.momentum * buffer if config.nesterov else buffer
            flat.sub_(lr * update)
        else:
            beta1, beta2, eps = 0.9, 0.999, 1e-8
            if config.weight_decay and config.optimizer == "adamw":
                flat.mul_(1 - lr * config.weight_decay * self.decay_mask)
            elif config.weight_decay:
                grads = grads + config.weight_decay * self.decay_mask * flat
            exp_avg.lerp_(grads, 1 - beta1)
            exp_avg_sq.mul_(beta2).addcmul_(grads, grads, value=1 - beta2)
            correction1 = 1 - beta1 ** step_count
            correction2 = 1 - beta2 ** step_count
            denom = (exp_avg_sq.sqrt() / correction2.sqrt()).add_(eps)
            flat.sub_(exp_avg / denom * (lr / correction1))
        return loss.detach(), main_logits(output).detach()

    def __call__(self, x: torch.Tensor, y: torch.Tensor, lr: float) -> tuple[torch.Tensor, torch.Tensor]:
        """One optimiser step on a batch."""
        lr_tensor = torch.tensor(lr, dtype=self.flat.dtype)
        args = (self.flat, self.buffers, self.exp_avg, self.exp_avg_sq, self.step_count, x, y, lr_tensor)
        if not self.single_thread:
            return self._compiled(*args)
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            return self._compiled(*args)
        finally:
            torch.set_num_threads(threads)

    def state_tensors(self) -> dict[str, torch.Tensor]:
        """Optimiser state for a checkpoint."""
        return {"optim.flat.exp_avg": self.exp_avg.clone(), "optim.flat.exp_avg_sq": self.exp_avg_sq.clone(),
                "optim.flat.step": self.step_count.clone()}

    def load_state_tensors(self, tensors: dict[str, torch.Tensor]) -> None:
        """Inverse of state_tensors."""
        self.exp_avg.copy_(tensors["optim.flat.exp_avg"])
        self.exp_avg_sq.copy_(tensors["optim.flat.exp_avg_sq"])
        self.step_count.copy_(tensors["optim.flat.step"])


def should_compile(config: TrainConfig, total_steps: int, world_size: int, say: Callable[[str], None]) -> bool:
    """'on' compiles (unless impossible); 'auto' compiles long runs, where the compile time pays for itself."""
    if config.compile == "off":
        return False
    reason = None
    if not compiler_available():
        reason = "no C++ compiler found for torch.compile"
    elif world_size > 1:
        reason = "the compiled step does not run under DistributedDataParallel"
    elif config.precision != "fp32":
        reason = f"the compiled step runs in fp32 only (precision {config.precision})"
    elif sys.version_info >= (3, 14):
        reason = "torch.compile does not support this Python version"
    if reason:
        say(f"compile: falling back to eager ({reason})")
        return False
    return config.compile == "on" or total_steps >= 20_000
