"""The compiled training step and the compiled epoch give the eager trainer's results, and resume."""

import pytest
import torch

from cnnkit.layers import Conv2d
from cnnkit.models import get_model
from cnnkit.store.checkpoint import load_checkpoint
from cnnkit.train import TrainConfig, fit, seed_recipe
from cnnkit.train.compiled import CompiledStep
from cnnkit.train.loop import make_optimizer
from cnnkit.train.losses import make_loss


def test_im2col_convolution_equals_torch():
    for args in [(3, 4, 3, 2, "same"), (3, 4, (3, 2), 1, "valid"), (2, 5, 3, 1, 1), (2, 3, 3, 1, "same", 2)]:
        conv = Conv2d(*args[:4], padding=args[4], dilation=args[5] if len(args) > 5 else 1).double()
        x = torch.randn(2, args[0], 9, 7, dtype=torch.float64)
        expected = conv(x)
        conv.im2col = True
        torch.testing.assert_close(conv(x), expected)


def _eager_and_compiled(config: TrainConfig, name: str, steps: int = 6, batch: int = 8):
    torch.manual_seed(0)
    eager_model = get_model(name, **({"seed_faithful": True} if name == "digitsnet" else {}))
    compiled_model = get_model(name, **({"seed_faithful": True} if name == "digitsnet" else {}))
    compiled_model.load_state_dict(eager_model.state_dict())
    optimizer = make_optimizer(config, eager_model)
    loss_fn = make_loss(config.loss, config.label_smoothing)
    step = CompiledStep(compiled_model, config, loss_fn, (8, 8))
    eager_model.train(), compiled_model.train()
    for i in range(steps):
        x, y = torch.rand(batch, 1, 8, 8), torch.arange(batch) % 10
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


@pytest.mark.slow  # torch.compile: 15-40 s per graph with a cold inductor cache
def test_compiled_adam_step_matches_eager_on_the_seed_recipe():
    # Batches of 3: the step graph the short-last-batch test below also needs (compiled once).
    eager, compiled = _eager_and_compiled(seed_recipe(), "digitsnet", batch=3)
    for (name, a), b in zip(eager.state_dict().items(), compiled.state_dict().values(), strict=True):
        if name in ("features.conv2.bias", "features.bn2.running_mean"):
            # BN right after conv2 cancels its bias: the true gradient is 0, the computed one rounding noise that
            # Adam scales up to full steps, differently in each implementation (and the running mean carries it).
            continue
        torch.testing.assert_close(b, a, rtol=1e-4, atol=1e-5, msg=name)


@pytest.mark.slow  # torch.compile: 15-40 s per graph with a cold inductor cache
def test_compiled_sgd_with_decay_matches_eager():
    config = TrainConfig(optimizer="sgd", lr=0.05, momentum=0.9, nesterov=True, weight_decay=1e-3, grad_clip=1.0,
                         label_smoothing=0.0)
    eager, compiled = _eager_and_compiled(config, "digitsnet")
    for a, b in zip(eager.parameters(), compiled.parameters(), strict=True):
        torch.testing.assert_close(b, a, rtol=1e-4, atol=1e-5)


def _article_pair():
    """An eager digitsnet with its Adam and a compiled copy of it, both at the article's N(0, 1) initialisation."""
    config = seed_recipe()
    eager = get_model("digitsnet", seed_faithful=True)
    model = get_model("digitsnet", seed_faithful=True)
    model.load_state_dict(eager.state_dict())
    eager.train(), model.train()
    return config, eager, make_optimizer(config, eager), CompiledStep(model, config, make_loss("article"), (8, 8))


def _eager_losses(eager, optimizer, images, labels, order, batch_size, lr=1e-3):
    """The plain eager loop's loss at every step over `order` in batches (the last one may be short)."""
    losses = []
    for start in range(0, len(order), batch_size):
        index = order[start:start + batch_size]
        for group in optimizer.param_groups:
            group["lr"] = lr
        optimizer.zero_grad()
        loss = make_loss("article")(eager(images[index]), labels[index])
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    return torch.tensor(losses)


def _assert_same_weights(expected, actual, tolerance=1e-4):
    for (name, a), b in zip(expected.state_dict().items(), actual.state_dict().values(), strict=True):
        if name not in ("features.conv2.bias", "features.bn2.running_mean"):  # see the seed-recipe test above
            torch.testing.assert_close(b, a, rtol=tolerance, atol=tolerance, msg=name)


@pytest.mark.slow  # torch.compile: 15-40 s per graph with a cold inductor cache
def test_compiled_epoch_matches_the_eager_loop_over_200_steps():
    config, eager, optimizer, compiled = _article_pair()
    images, labels = torch.rand(1600, 1, 8, 8), torch.randint(0, 10, (1600,))
    order = torch.randperm(1600)
    expected = _eager_losses(eager, optimizer, images, labels, order[:800], 8)
    ours = []
    for k in range(100):  # one step per call: each step's loss
        step, sums = compiled.run_epoch(images, labels, order[8 * k:8 * k + 8], 8, True, lambda s: 1e-3, k)
        ours.append(float(sums["loss_sum"]) / 8)
        assert step == k + 1 and sums["count"] == 8
    torch.testing.assert_close(torch.tensor(ours), expected, rtol=1e-4, atol=1e-6)
    _assert_same_weights(eager, compiled.model)
    # The next 100 steps in one call: the summed loss, the step count and the weights agree. Float rounding
    # differences grow with the steps (Adam turns near-zero gradients into full-size steps), hence 1e-3.
    expected = _eager_losses(eager, optimizer, images, labels, order[800:], 8)
    step, sums = compiled.run_epoch(images, labels, order[800:], 8, True, lambda s: 1e-3, 100)
    assert step == 200 and sums["count"] == 800 and int(compiled.step_count) == 200 and int(sums["first_bad"]) == -1
    torch.testing.assert_close(float(sums["loss_sum"]), float(expected.sum()) * 8, rtol=1e-5, atol=1e-5)
    _assert_same_weights(eager, compiled.model, tolerance=1e-3)


@pytest.mark.slow  # torch.compile: 15-40 s per graph with a cold inductor cache
def test_compiled_epoch_takes_a_short_last_batch_as_the_eager_loop():
    config, eager, optimizer, compiled = _article_pair()
    images, labels = torch.rand(1600, 1, 8, 8), torch.randint(0, 10, (1600,))  # the 200-step test's shapes
    order = torch.randperm(1600)[:83]
    expected = _eager_losses(eager, optimizer, images, labels, order, 8)  # ten batches of 8, one of 3
    step, sums = compiled.run_epoch(images, labels, order, 8, False, lambda s: 1e-3, 0)
    assert step == 11 and sums["count"] == 83
    torch.testing.assert_close(float(sums["loss_sum"]), float((expected[:10] * 8).sum() + expected[10] * 3),
                               rtol=1e-4, atol=1e-4)
    _assert_same_weights(eager, compiled.model)


@pytest.mark.slow  # torch.compile: 15-40 s per graph with a cold inductor cache
def test_compiled_sgd_epoch_with_decay_and_clipping_matches_eager():
    config = TrainConfig(optimizer="sgd", lr=0.05, momentum=0.9, nesterov=True, weight_decay=1e-3, grad_clip=1.0,
                         label_smoothing=0.0, loss="article")
    eager = get_model("digitsnet", seed_faithful=True)
    model = get_model("digitsnet", seed_faithful=True)
    model.load_state_dict(eager.state_dict())
    eager.train(), model.train()
    optimizer = make_optimizer(config, eager)
    compiled = CompiledStep(model, config, make_loss("article"), (8, 8))
    images, labels = torch.rand(1600, 1, 8, 8), torch.randint(0, 10, (1600,))
    order = torch.randperm(1600)[:160]
    expected = 0.0
    for start in range(0, 160, 8):
        index = order[start:start + 8]
        optimizer.zero_grad()
        loss = make_loss("article")(eager(images[index]), labels[index])
        loss.backward()
        torch.nn.utils.clip_grad_norm_(eager.parameters(), config.grad_clip)
        optimizer.step()
        expected += loss.item() * 8
    step, sums = compiled.run_epoch(images, labels, order, 8, True, lambda s: config.lr, 0)
    assert step == 20
    torch.testing.assert_close(float(sums["loss_sum"]), expected, rtol=1e-5, atol=1e-5)
    for a, b in zip(eager.parameters(), model.parameters(), strict=True):
        torch.testing.assert_close(b, a, rtol=1e-4, atol=1e-5)


def test_the_epoch_graph_steps_aside_for_augmentation_dropout_and_big_networks():
    images = torch.rand(16, 1, 8, 8)
    step = _article_pair()[3]
    assert step.runs_epochs(seed_recipe(), images)
    assert not step.runs_epochs(seed_recipe(shift=1), images)  # shifts are drawn per batch, on the host
    assert not step.runs_epochs(seed_recipe(flip=True), images)
    dropout = CompiledStep(get_model("digits_cnn"), TrainConfig(), make_loss("cross_entropy"), (8, 8))
    assert not dropout.runs_epochs(TrainConfig(shift=0), images)
    dropout.model.head[1].p = 0.0
    assert dropout.runs_epochs(TrainConfig(shift=0), images)
    wide = get_model("digits_cnn", width=64, dropout=0.0)  # 270k parameters: its per-step path is fine
    big = CompiledStep(wide, TrainConfig(), make_loss("cross_entropy"), (8, 8))
    assert big.flat.numel() > 100_000 and not big.runs_epochs(TrainConfig(shift=0), images)


@pytest.mark.slow  # torch.compile: 15-40 s per graph with a cold inductor cache
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
    # The interrupted and resumed run ends where an uninterrupted one does.
    fit(config, out=tmp_path / "straight", progress=False)
    straight, _ = load_checkpoint(tmp_path / "straight" / "last")
    assert straight.keys() == tensors.keys()
    for name, value in straight.items():
        torch.testing.assert_close(tensors[name], value, rtol=0, atol=0, msg=name)
