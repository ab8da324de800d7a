"""Pictures of a network: first-layer filters, feature maps, learning curves, confusion matrices."""

from __future__ import annotations

import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402
from torch import nn  # noqa: E402

from cnnkit.errors import CnnkitError  # noqa: E402
from cnnkit.inference import open_model, read_inputs  # noqa: E402


def module_names(model: nn.Module) -> list[str]:
    """Every named layer of a model."""
    return [name for name, _ in model.named_modules() if name]


def default_layers(model: nn.Module, limit: int = 6) -> list[str]:
    """The conv layers, first `limit`."""
    return [n for n, m in model.named_modules() if isinstance(m, nn.Conv2d)][:limit]


@torch.no_grad()
def feature_maps(model: nn.Module, x: torch.Tensor, layers: list[str]) -> dict[str, torch.Tensor]:
    """Outputs of the named layers for a (1, C, H, W) input; unknown names list the known ones."""
    modules = dict(model.named_modules())
    unknown = [name for name in layers if name not in modules or not name]
    if unknown:
        known = module_names(model)
        shown = ", ".join(known[:40]) + (f", ... ({len(known)} in all)" if len(known) > 40 else "")
        raise CnnkitError(f"no layer named {unknown[0]!r}; layers: {shown}")
    captured: dict[str, torch.Tensor] = {}
    def keep(name: str, out) -> None:
        first = out[0] if isinstance(out, (list, tuple)) else out
        captured[name] = first[0]  # the one image's (C, H, W) maps

    handles = [modules[name].register_forward_hook(lambda _m, _i, out, name=name: keep(name, out)) for name in layers]
    model.eval()
    try:
        model(x)
    finally:
        for handle in handles:
            handle.remove()
    return captured


def _grid(count: int) -> tuple[int, int]:
    cols = math.ceil(math.sqrt(count))
    return math.ceil(count / cols), cols


def plot_filters(model: nn.Module, path: Path, limit: int = 64) -> Path:
    """The first conv layer's kernels, one panel each (the mean over input channels for colour inputs)."""
    conv = next((m for m in model.modules() if isinstance(m, nn.Conv2d)), None)
    if conv is None:
        raise CnnkitError("the model has no convolution layer to draw")
    weights = conv.weight.detach().float().cpu()
    kernels = weights.mean(dim=1)[:limit].numpy()  # (O, kh, kw); matplotlib wants NumPy arrays
    rows, cols = _grid(len(kernels))
    fig, axes = plt.subplots(rows, cols, figsize=(1.3 * cols + 1, 1.3 * rows + 0.8), squeeze=False)
    bound = float(abs(kernels).max()) or 1.0
    image = None
    for i, ax in enumerate(axes.flat):
        ax.axis("off")
        if i < len(kernels):
            image = ax.imshow(kernels[i], cmap="RdBu_r", vmin=-bound, vmax=bound)
            ax.set_title(str(i), fontsize=7)
    fig.suptitle(f"first-layer filters ({conv.out_channels} x {conv.in_channels}x{conv.kernel_size[0]}x"
                 f"{conv.kernel_size[1]}, mean over input channels)", fontsize=9)
    fig.colorbar(image, ax=axes, shrink=0.7, label="weight")
    return _save(fig, path)


def plot_feature_maps(name: str, maps: torch.Tensor, path: Path, limit: int = 32) -> Path:
    """One grid of a layer's feature maps for one image, labelled with the layer and map index."""
    maps = maps.detach().float().cpu()
    if maps.dim() == 1:
        maps = maps[:, None, None]
    shown = maps[:limit].numpy()
    rows, cols = _grid(len(shown))
    fig, axes = plt.subplots(rows, cols, figsize=(1.3 * cols + 1, 1.3 * rows + 0.8), squeeze=False)
    low, high = float(shown.min()), float(shown.max())
    image = None
    for i, ax in enumerate(axes.flat):
        ax.axis("off")
        if i < len(shown):
            image = ax.imshow(shown[i], cmap="viridis", vmin=low, vmax=high if high > low else low + 1)
            ax.set_title(f"map {i}", fontsize=7)
    fig.suptitle(f"{name}: {maps.shape[0]} maps of {maps.shape[-2]}x{maps.shape[-1]}"
                 + (f" (first {limit})" if maps.shape[0] > limit else ""), fontsize=9)
    fig.colorbar(image, ax=axes, shrink=0.7, label="activation")
    return _save(fig, path)


def plot_curves(history: list[dict], path: Path) -> Path:
    """Training and validation loss and accuracy per epoch."""
    epochs = [r for r in history if "epoch" in r]
    fig, (loss_ax, acc_ax) = plt.subplots(1, 2, figsize=(9, 3.4))
    x = [r["epoch"] for r in epochs]
    loss_ax.plot(x, [r["train_loss"] for r in epochs], label="train")
    acc_ax.plot(x, [100 * r["train_accuracy"] for r in epochs], label="train")
    val = [r for r in epochs if r.get("val_accuracy") is not None]
    if val:
        loss_ax.plot([r["epoch"] for r in val], [r["val_loss"] for r in val], label="validation")
        acc_ax.plot([r["epoch"] for r in val], [100 * r["val_accuracy"] for r in val], label="validation")
    loss_ax.set(title="loss", xlabel="epoch", ylabel="loss")
    acc_ax.set(title="accuracy", xlabel="epoch", ylabel="accuracy (%)")
    for ax in (loss_ax, acc_ax):
        ax.legend()
        ax.grid(alpha=0.3)
    return _save(fig, path)


def plot_confusion(matrix: list[list[int]], class_names: list[str], path: Path) -> Path:
    """A confusion matrix with counts in the cells."""
    size = max(4.0, 0.45 * len(class_names) + 2)
    fig, ax = plt.subplots(figsize=(size + 1, size))
    image = ax.imshow(matrix, cmap="Blues")
    ticks = range(len(class_names))
    ax.set_xticks(ticks, class_names, rotation=45 if max(map(len, class_names)) > 2 else 0)
    ax.set_yticks(ticks, class_names)
    ax.set(xlabel="predicted class", ylabel="true class", title="confusion matrix (test)")
    peak = max(max(row) for row in matrix) or 1
    for i, row in enumerate(matrix):
        for j, value in enumerate(row):
            if value:
                ax.text(j, i, str(value), ha="center", va="center", fontsize=7,
                        color="white" if value > peak / 2 else "black")
    fig.colorbar(image, ax=ax, shrink=0.8, label="images")
    return _save(fig, path)


def plot_examples(images: torch.Tensor, titles: list[str], path: Path, title: str) -> Path:
    """A grid of images with a caption each (e.g. predicted vs true labels)."""
    rows, cols = _grid(max(1, len(images)))
    fig, axes = plt.subplots(rows, cols, figsize=(1.6 * cols + 0.5, 1.8 * rows + 0.6), squeeze=False)
    for i, ax in enumerate(axes.flat):
        ax.axis("off")
        if i < len(images):
            image = images[i].float()
            image = ((image - image.min()) / ((image.max() - image.min()) or 1)).numpy()
            ax.imshow(image[0] if image.shape[0] == 1 else image.transpose(1, 2, 0), cmap="gray_r"
                      if image.shape[0] == 1 else None)
            ax.set_title(titles[i], fontsize=7)
    fig.suptitle(title, fontsize=9)
    return _save(fig, path)


def _save(fig: plt.Figure, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return path


def visualize(source: str, image: str, layers: list[str] | None, out: Path) -> list[Path]:
    """Filters of the first conv layer and feature maps of `layers` for one image, as PNGs in `out`."""
    trained = open_model(source)
    x = trained.prepare(read_inputs([image], trained)[0])[:1]
    maps_by_layer = feature_maps(trained.model, x, layers or default_layers(trained.model))  # names checked first
    written = [plot_filters(trained.model, out / "filters.png")]
    for name, maps in maps_by_layer.items():
        written.append(plot_feature_maps(name, maps, out / f"features_{name.replace('.', '_')}.png"))
    return written
