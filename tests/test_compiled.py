"""The compiled training step gives the eager trainer's results, and resumes."""

import torch

from cnnkit.checkpoint import load_checkpoint
from cnnkit.layers import Conv2d
from cnnkit.models import get_model
from cnnkit.train import TrainConfig, fit, seed_recipe
from cnnkit.train.compiled import CompiledStep
from cnnkit.train.loop import make_optimizer
from cnnkit.train.losses import make_loss


def test_im2col_convolution_equals_torch():
    for args in [(3, 4, 3, 2, "same"), (3, 4, (3, 2), 1, "valid"), (2, 5, 3, 1, 1)]:
        conv = Conv2d(*args[:4], padding=args[4]).double()
        x = torch.randn(2, args[0], 9, 7, dtype=torch.float64)
        expected = conv(x)
        conv.im2col = True
        torch.testing.assert_close(conv(x), expected)


def _eager_and_compiled(config: TrainConfig, name: str, steps: int = 6):
    torch.manual_seed(0)
    eager_model = get_model(name, **({"seed_faithful": True} if name == "digitsnet" else {}))
    compiled_model = get_model(name, **({"seed_faithful": True} if name == "digitsnet" else {}))
    compiled_model.load_state_dict(eager_model.state_dict())
    optimizer = make_optimizer(config, eager_model)
    loss_fn = make_loss(config.loss, config.label_smoothing)
    step = CompiledStep(compiled_model, config, loss_fn, (8, 8))
    eager_model.train(), compiled_model.train()
    for i in range(steps):
        x, y = torch.rand(8, 1, 8, 8), torch.arange(8) % 10
        for group in optimizer.param_groups:
            group["lr"] = config.lr
        optimizer.zero_grad()
        loss = loss_fn(eager_model(x), y)
        loss.backward()
        if config.grad_clip:
            torch.nn.utils.clip_grad_norm_(eager_model.parameters(), config.grad_clip)
        optimizer.step()
        compiled_loss, _ = step(x, y, config.lr)
        torch.testing.assert_close(compiled_loss, loss.detach(), rtol=1e-4, atol=1e-6, msg=f"step {i}")
    return eager_model, compiled_model


def test_compiled_adam_step_matches_eager_on_the_seed_recipe():
    eager, compiled = _eager_and_compiled(seed_recipe(), "digitsnet")
    for (name, a), b in zip(eager.state_dict().items(), compiled.state_dict().values(), strict=True):
        if name in ("features.conv2.bias", "features.bn2.running_mean"):
            # BN right after conv2 cancels its bias: the true gradient is 0, the computed one rounding noise that
            # Adam scales up to full steps, differently in each implementation (and the running mean carries it).
            continue
        torch.testing.assert_close(b, a, rtol=1e-4, atol=1e-5, msg=name)


def test_compiled_sgd_with_decay_matches_eager():
    config = TrainConfig(optimizer="sgd", lr=0.05, momentum=0.9, nesterov=True, weight_decay=1e-3, grad_clip=1.0,
                         label_smoothing=0.0)
    eager, compiled = _eager_and_compiled(config, "digitsnet")
    for a, b in zip(eager.parameters(), compiled.parameters(), strict=True):
        torch.testing.assert_close(b, a, rtol=1e-4, atol=1e-5)


def test_fit_with_compile_resumes(tmp_path):
    config = seed_recipe(epochs=2, eval_every=1, compile="on", test_fraction=0.5)
    fit(config, out=tmp_path / "run", progress=False, stop_after_epochs=1)
    result = fit(config, out=tmp_path / "run", progress=False, resume=True)
    assert result.compiled  # the compiled step ran, not the eager fallback
    tensors, meta = load_checkpoint(tmp_path / "run" / "last")
    # The flat optimiser state only the compiled step writes, counting every step of both calls (898 training
    # images in whole batches of 8 per epoch).
    assert int(tensors["optim.flat.step"]) == meta["global_step"] == 2 * (898 // 8)
    assert result.epochs_run == 2 and 0.0 <= result.test_accuracy <= 1.0
