"""Training steps as torch.compile graphs over flat parameters: one step per call, or a whole epoch per call.

For tiny networks the eager step is all per-operator overhead: oneDNN convolution calls, a Python loop per
parameter in the optimiser, autograd bookkeeping. Here the parameters live in one flat tensor (the model's
parameters become views into it), gradients come from torch.func, and Adam/AdamW/SGD update the flat tensors in
the same graph. `run_epoch` goes further: a `while_loop` over the epoch's batches inside one compiled C++ call
gathers each batch, steps, and sums loss and accuracy, so no Python runs between steps.
"""

from __future__ import annotations

import contextlib
import math
import sys
import types
from collections.abc import Callable, Iterator

import torch
from torch import nn
from torch._higher_order_ops.while_loop import while_loop
from torch.func import functional_call, grad_and_value

from cnnkit.core.errors import CnnkitError
from cnnkit.layers.conv import Conv2d
from cnnkit.models.base import main_logits
from cnnkit.train.config import TrainConfig

SINGLE_THREAD_PARAMS = 100_000
AUTO_COMPILE_STEPS = 20_000  # below this, compiling (~30 s cold) costs more than it saves
TINY_MAP = 16 * 16  # convolutions on maps this small run as im2col + matmul inside the compiled graph
BETA1, BETA2, EPS = 0.9, 0.999, 1e-8  # torch.optim.Adam's defaults, which make_optimizer keeps
# Inductor's FX graph cache skips graphs holding a while_loop; its key pickles the loop's body and condition
# graphs with the rest, so marking it cacheable is sound and turns a 20-40 s compile into a 2-5 s cache load.
CACHEABLE_LOOP = {"torch.ops.higher_order.while_loop": torch.__version__}


def compiler_available() -> bool:
    """torch.compile's CPU backend needs a C++ compiler."""
    import shutil

    return any(shutil.which(cc) for cc in ("g++", "c++", "clang++"))


class CompiledStep:
    """step(x, y, lr) -> (loss, logits), and run_epoch(...) for whole epochs, updating the model's parameters,
    buffers and optimiser state in place."""

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
        self.steps_taken = 0  # step_count on the host, for the bias corrections (no device read per step)
        tiny_maps = min(input_size) ** 2 <= TINY_MAP
        # On maps this small, gather + matmul beats oneDNN's convolution; only while the step says so (`convolutions`).
        self.tiny_convs = [m for m in model.modules() if isinstance(m, Conv2d)] if tiny_maps else []
        self._step_graph = self._compile(CompiledStep._step, {})
        self._epoch_graph = self._compile(CompiledStep._epoch, epoch_graph_options(tiny_maps))

    def _compile(self, method: Callable, options: dict) -> Callable:
        """torch.compile a copy of `method` bound to this object.

        Guards re-check the model and config on every call (~100 us here). Both are fixed for this object, so
        only tensor guards (shapes, dtypes) are kept, and each object compiles its own copy of the code so no
        other model or config can share its cached graph.
        """
        if hasattr(torch.compiler, "keep_tensor_guards_unsafe"):
            options = {**options, "guard_filter_fn": torch.compiler.keep_tensor_guards_unsafe}
        code = method.__code__.replace(co_name=f"{method.__name__}_{id(self):x}")
        own = types.FunctionType(code, method.__globals__, code.co_name).__get__(self)
        return torch.compile(own, fullgraph=True, dynamic=False, options=options or None)

    def _loss_and_grads(self, flat, buffers, x, y):
        """(grads, loss, logits) of one batch; batch norm updates the tensors in `buffers` in place."""
        names, shapes, sizes = self.names, self.shapes, self.sizes

        def loss_of(weights, state):  # buffers are an argument: torch.func refuses to mutate captured tensors
            params = {n: t.view(s) for n, t, s in zip(names, weights.split(sizes), shapes, strict=True)}
            output = functional_call(self.model, (params, state), (x,))
            return self.loss_fn(output, y), output

        grads, (loss, output) = grad_and_value(loss_of, has_aux=True)(flat, buffers)
        return grads, loss.detach(), main_logits(output).detach()

    def _update(self, flat, exp_avg, exp_avg_sq, grads, scalars):
        """New (flat, exp_avg, exp_avg_sq) after one optimiser step, as torch.optim computes it.

        `scalars` = (lr, lr / (1 - beta1^t), sqrt(1 - beta2^t), 1 on the first step): the bias corrections are
        computed on the host in float64, as torch.optim does, instead of a pow per parameter in the graph.
        """
        config = self.config
        lr, step_size, correction2_sqrt, first = scalars.unbind()
        if config.grad_clip:
            grads = grads * torch.clamp(config.grad_clip / (grads.norm() + 1e-6), max=1.0)
        if config.optimizer == "sgd":
            if config.weight_decay:
                grads = grads + config.weight_decay * self.decay_mask * flat
            # torch's SGD starts the momentum buffer at the first gradient
            exp_avg = torch.where(first > 0, grads, exp_avg * config.momentum + grads)
            update = grads + config.momentum * exp_avg if config.nesterov else exp_avg
            return flat - lr * update, exp_avg, exp_avg_sq
        if config.weight_decay and config.optimizer == "adamw":
            flat = flat * (1 - lr * config.weight_decay * self.decay_mask)
        elif config.weight_decay:
            grads = grads + config.weight_decay * self.decay_mask * flat
        exp_avg = exp_avg.lerp(grads, 1 - BETA1)
        exp_avg_sq = exp_avg_sq * BETA2 + grads * grads * (1 - BETA2)
        denom = exp_avg_sq.sqrt() / correction2_sqrt + EPS
        return flat - step_size * (exp_avg / denom), exp_avg, exp_avg_sq

    def _step(self, flat, buffers, exp_avg, exp_avg_sq, step_count, x, y, scalars):
        grads, loss, logits = self._loss_and_grads(flat, buffers, x, y)
        new_flat, new_avg, new_avg_sq = self._update(flat, exp_avg, exp_avg_sq, grads, scalars)
        flat.copy_(new_flat)
        exp_avg.copy_(new_avg)
        exp_avg_sq.copy_(new_avg_sq)
        step_count.add_(1)
        return loss, logits

    def _epoch(self, flat, buffers, exp_avg, exp_avg_sq, step_count, images, labels, order, scalars):
        """Every batch of `order` (batches, batch size) in one while_loop; returns (loss sum, correct, first bad)."""
        names = list(buffers)

        def more(i, *carried):
            return i < order.shape[0]

        def one_step(i, flat, exp_avg, exp_avg_sq, loss_sum, correct, first_bad, *buffer_values):
            index = order.index_select(0, i.view(1)).view(-1)
            x, y = images.index_select(0, index), labels.index_select(0, index)
            state = {n: b.clone() for n, b in zip(names, buffer_values, strict=True)}  # the loop body is pure
            grads, loss, logits = self._loss_and_grads(flat, state, x, y)
            flat, exp_avg, new_avg_sq = self._update(flat, exp_avg, exp_avg_sq, grads,
                                                     scalars.index_select(0, i.view(1)).view(-1))
            # SGD leaves exp_avg_sq alone, and a loop body may not hand back an input itself
            exp_avg_sq = exp_avg_sq.clone() if new_avg_sq is exp_avg_sq else new_avg_sq
            first_bad = torch.where((first_bad < 0) & ~torch.isfinite(loss), i, first_bad)
            return (i + 1, flat, exp_avg, exp_avg_sq, loss_sum + loss * y.shape[0],
                    correct + (logits.argmax(1) == y).sum(), first_bad, *state.values())

        def count(value):  # a fresh tensor each: carried values must not alias one another
            return torch.full((), value, dtype=torch.long, device=flat.device)

        start = (count(0), flat, exp_avg, exp_avg_sq, torch.zeros_like(step_count), count(0), count(-1),
                 *buffers.values())
        _, new_flat, new_avg, new_avg_sq, loss_sum, correct, first_bad, *new_buffers = while_loop(
            more, one_step, start)
        flat.copy_(new_flat)
        exp_avg.copy_(new_avg)
        exp_avg_sq.copy_(new_avg_sq)
        for buffer, value in zip(buffers.values(), new_buffers, strict=True):
            buffer.copy_(value)
        step_count.add_(order.shape[0])
        return loss_sum, correct, first_bad

    def _scalars(self, lrs: list[float]) -> torch.Tensor:
        """(steps, 4) per-step optimiser scalars for the next len(lrs) steps (see `_update`)."""
        rows = []
        for k, lr in enumerate(lrs):
            t = self.steps_taken + k + 1
            rows.append((lr, lr / (1 - BETA1 ** t), math.sqrt(1 - BETA2 ** t), float(t == 1)))
        return torch.tensor(rows, dtype=torch.float64).to(self.flat)

    def convolutions(self) -> contextlib.AbstractContextManager:
        """Where the graphs are traced and a run using them evaluates: on tiny maps, convolutions as im2col + matmul."""
        return im2col_convolutions(self.tiny_convs)

    def _run(self, graph: Callable, *args):
        """Call a compiled graph in `convolutions()`, on one thread for tiny CPU networks."""
        threads = torch.get_num_threads()
        with self.convolutions():
            if not self.single_thread:
                return graph(*args)
            torch.set_num_threads(1)
            try:
                return graph(*args)
            finally:
                torch.set_num_threads(threads)

    def __call__(self, x: torch.Tensor, y: torch.Tensor, lr: float) -> tuple[torch.Tensor, torch.Tensor]:
        """One optimiser step on a batch."""
        scalars = self._scalars([lr])[0]
        result = self._run(self._step_graph, self.flat, self.buffers, self.exp_avg, self.exp_avg_sq,
                           self.step_count, x, y, scalars)
        self.steps_taken += 1
        return result

    def runs_epochs(self, config: TrainConfig, images: torch.Tensor) -> bool:
        """Whether `run_epoch` can train this run: a tiny CPU network (where per-step overhead is most of a step;
        a bigger one's steps gain little and its looped graph compiles slowly), and nothing random or per-batch in
        a step (augmentation, dropout), since the epoch graph replays one step's code for every batch."""
        dropout = any(isinstance(m, nn.modules.dropout._DropoutNd) and m.p > 0 for m in self.model.modules())
        return self.single_thread and not (config.shift or config.flip or dropout) \
            and images.dim() == 4 and images.is_contiguous()

    def run_epoch(self, images: torch.Tensor, labels: torch.Tensor, order: torch.Tensor, batch_size: int,
                  drop_last: bool, lr_of_step: Callable[[int], float], step: int) -> tuple[int, dict]:
        """Train on `images[order]` in batches; the same result as calling the step once per batch."""
        full = len(order) // batch_size
        zero = torch.zeros((), dtype=torch.long, device=self.flat.device)
        loss_sum, correct, first_bad = torch.zeros((), device=self.flat.device), zero, zero - 1
        if full:
            batches = order[:full * batch_size].view(full, batch_size)
            scalars = self._scalars([lr_of_step(step + k) for k in range(full)])
            for varying in (batches, scalars):  # one graph for any number of batches (a short run, a test)
                torch._dynamo.decorators.mark_unbacked(varying, 0)
            loss_sum, correct, first_bad = self._run(self._epoch_graph, self.flat, self.buffers, self.exp_avg,
                                                     self.exp_avg_sq, self.step_count, images, labels, batches,
                                                     scalars)
            self.steps_taken += full
        count, rest = full * batch_size, order[full * batch_size:]
        if len(rest) and not drop_last:  # the short last batch: its own step graph, so no padding changes BN
            y = labels[rest]
            loss, logits = self(images[rest], y, lr_of_step(step + full))
            first_bad = torch.where((first_bad < 0) & ~torch.isfinite(loss), full, first_bad)
            loss_sum, correct = loss_sum + loss * len(y), correct + (logits.argmax(1) == y).sum()
            count, full = count + len(y), full + 1
        return step + full, {"loss_sum": loss_sum, "correct": correct, "count": count, "first_bad": first_bad}

    def state_tensors(self) -> dict[str, torch.Tensor]:
        """Optimiser state for a checkpoint."""
        return {"optim.flat.exp_avg": self.exp_avg.clone(), "optim.flat.exp_avg_sq": self.exp_avg_sq.clone(),
                "optim.flat.step": self.step_count.clone()}

    def load_state_tensors(self, tensors: dict[str, torch.Tensor]) -> None:
        """Inverse of state_tensors."""
        for name, own in (("exp_avg", self.exp_avg), ("exp_avg_sq", self.exp_avg_sq), ("step", self.step_count)):
            saved = tensors[f"optim.flat.{name}"]
            if saved.shape != own.shape:  # copy_ would broadcast a wrong shape without a word
                raise ValueError(f"optimiser state flat.{name} has shape {tuple(saved.shape)}; this model needs "
                                 f"{tuple(own.shape)}")
        self.exp_avg.copy_(tensors["optim.flat.exp_avg"])
        self.exp_avg_sq.copy_(tensors["optim.flat.exp_avg_sq"])
        self.step_count.copy_(tensors["optim.flat.step"])
        self.steps_taken = int(self.step_count)


@contextlib.contextmanager
def im2col_convolutions(convolutions: list[Conv2d]) -> Iterator[None]:
    """Within: these convolutions run as im2col + matmul; afterwards each runs as it did before."""
    switched = [conv for conv in convolutions if not conv.im2col]  # nested: the outer context's stay as they are
    for conv in switched:
        conv.im2col = True
    try:
        yield
    finally:
        for conv in switched:
            conv.im2col = False


def epoch_graph_options(tiny_maps: bool) -> dict:
    """Inductor settings for the epoch graph: its loop runs in generated C++, so no Python runs between steps."""
    options = {"cpp_wrapper": True, "unsafe_marked_cacheable_functions": CACHEABLE_LOOP}
    if tiny_maps and torch.backends.cpu.get_cpu_capability() in ("AVX2", "AVX512"):
        # Tiny maps and batches fill 8-lane vectors; 16-lane AVX-512 loops over them run mostly masked (the
        # article's recipe: 153 vs 227 us per step).
        options["cpp.simdlen"] = 256
    return options


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
    if config.compile == "on" or total_steps >= AUTO_COMPILE_STEPS:
        say("compile: the training step runs compiled (torch.compile; the first compile takes ~30 s, later runs "
            "load it from the cache)")
        return True
    say(f"compile: eager (auto compiles runs of {AUTO_COMPILE_STEPS:,}+ steps, where the compile time pays for "
        f"itself; this run has {total_steps:,}; --compile on compiles it anyway)")
    return False
