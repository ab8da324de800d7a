"""Pictures of a network: filters, feature maps beside their input, learning curves, confusion matrices, and why
the network decided (saliency, Grad-CAM)."""

from __future__ import annotations

import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from torch import nn  # noqa: E402

from cnnkit.analysis.inference import Trained, logits_of, open_model, read_inputs  # noqa: E402
from cnnkit.analysis.saliency import grad_cam, input_gradient, saliency_map, upsample  # noqa: E402
from cnnkit.analysis.trace import grad_cam_layer, record, trace_units  # noqa: E402
from cnnkit.core.errors import CnnkitError  # noqa: E402
from cnnkit.core.outputs import ensure_parent, refuse_existing  # noqa: E402

LOG_AXIS_RATIO = 100  # a curve whose largest value is this many times its smallest gets a log axis
# Text that holds names (classes, files, layers) is drawn as typed: a class folder named "$x" is not math. Set per
# text, never globally, where it would also print a log axis' ticks as raw "$\\mathdefault{10^{-2}}$".
PLAIN = {"parse_math": False}


def module_names(model: nn.Module) -> list[str]:
    """Every named layer of a model."""
    return [name for name, _ in model.named_modules() if name]


def default_layers(model: nn.Module, limit: int = 6) -> list[str]:
    """The conv layers, first `limit`."""
    return [n for n, m in model.named_modules() if isinstance(m, nn.Conv2d)][:limit]


def drawn_layers(model: nn.Module, input_shape: tuple[int, int, int], layers: list[str],
                 activation: str = "post") -> dict[str, str]:
    """Each requested layer -> the layer whose output is drawn: after a conv's (or dense layer's) batch norm and
    activation by default ('post'), its own output with 'pre'; unknown names list the known ones."""
    known = module_names(model)
    unknown = [name for name in layers if name not in known]
    if unknown:
        shown = ", ".join(known[:40]) + (f", ... ({len(known)} in all)" if len(known) > 40 else "")
        raise CnnkitError(f"no layer named {unknown[0]!r}; layers: {shown}")
    units = {unit.id: unit for unit in trace_units(model, input_shape)}
    return {name: units[name].output_name(activation) if name in units else name for name in layers}


def feature_maps(model: nn.Module, x: torch.Tensor, layers: list[str], activation: str = "post"
                 ) -> dict[str, tuple[str, torch.Tensor]]:
    """Requested layer -> (drawn layer, its (C, H, W) maps) for a (1, C, H, W) model input."""
    drawn = drawn_layers(model, tuple(x.shape[1:]), layers, activation)
    _, outputs, _ = record(model, x, set(drawn.values()))
    return {name: (shown, outputs[shown][0]) for name, shown in drawn.items()}


def _grid(count: int) -> tuple[int, int]:
    cols = math.ceil(math.sqrt(count))
    return math.ceil(count / cols), cols


def show_image(ax: plt.Axes, image: torch.Tensor, pixel_max: float | None = None) -> None:
    """A stored-scale (C, H, W) image, white = `pixel_max` (or its own maximum when None)."""
    image = image.detach().float().cpu()
    top = pixel_max if pixel_max is not None else float(image.max() - image.min()) or 1.0
    low = 0.0 if pixel_max is not None else float(image.min())
    scaled = ((image - low) / top).clamp(0, 1).numpy()
    ax.imshow(scaled[0] if scaled.shape[0] == 1 else scaled.transpose(1, 2, 0), cmap="gray", vmin=0, vmax=1)
    ax.set_xticks([])
    ax.set_yticks([])


def mosaic(panels: np.ndarray) -> tuple[np.ndarray, int, int]:
    """(N, h, w) panels tiled in a near-square grid with NaN gaps (one image draws far faster than N axes);
    returns the image, the number of columns and the tile pitch (panel side plus gap)."""
    count, h, w = panels.shape
    rows, cols = _grid(count)
    gap = max(1, max(h, w) // 8)
    tiled = np.full((rows * (h + gap) - gap, cols * (w + gap) - gap), np.nan)
    for i, panel in enumerate(panels):
        r, c = divmod(i, cols)
        tiled[r * (h + gap):r * (h + gap) + h, c * (w + gap):c * (w + gap) + w] = panel
    return tiled, cols, (h + gap, w + gap)


def show_mosaic(ax: plt.Axes, panels: np.ndarray, cmap: str, low: float, high: float):
    """Draw panels as a mosaic labelled so that panel index = row label + column label; returns the image."""
    tiled, cols, (pitch_h, pitch_w) = mosaic(panels)
    colours = matplotlib.colormaps[cmap].with_extremes(bad="white")
    image = ax.imshow(tiled, cmap=colours, vmin=low, vmax=high if high > low else low + 1)
    h, w = panels.shape[1:]
    rows = math.ceil(len(panels) / cols)
    ax.set_xticks([c * pitch_w + (w - 1) / 2 for c in range(cols)], [str(c) for c in range(cols)], fontsize=7)
    ax.set_yticks([r * pitch_h + (h - 1) / 2 for r in range(rows)], [str(r * cols) for r in range(rows)], fontsize=7)
    ax.tick_params(length=0)
    for side in ax.spines.values():
        side.set_visible(False)
    return image


def plot_filters(model: nn.Module, path: Path, limit: int = 64, note: str = "") -> Path:
    """The first conv layer's kernels, one panel each (the mean over input channels for colour inputs); `note`
    (e.g. UNTRAINED) heads the title."""
    conv = next((m for m in model.modules() if isinstance(m, nn.Conv2d)), None)
    if conv is None:
        raise CnnkitError("the model has no convolution layer to draw")
    weights = conv.weight.detach().float().cpu()
    kernels = weights.mean(dim=1)[:limit].numpy()  # (O, kh, kw); matplotlib wants NumPy arrays
    rows, cols = _grid(len(kernels))
    fig, ax = plt.subplots(figsize=(0.9 * cols + 2.2, 0.9 * rows + 1.2))
    bound = float(abs(kernels).max()) or 1.0
    image = show_mosaic(ax, kernels, "RdBu_r", -bound, bound)
    ax.set_title(f"{note}first-layer filters ({conv.out_channels} x {conv.in_channels}x{conv.kernel_size[0]}x"
                 f"{conv.kernel_size[1]}, mean over input channels); filter = row + column", fontsize=9)
    fig.colorbar(image, ax=ax, shrink=0.7, label="weight")
    return _save(fig, path)


def maps_figure(title: str, maps: torch.Tensor, image: torch.Tensor, caption: str, pixel_max: float,
                limit: int = 32) -> Figure:
    """The input image (with `caption`: predicted and true class) beside a mosaic of a layer's maps."""
    maps = maps.detach().float().cpu()
    maps = maps[:, None, None] if maps.dim() == 1 else maps
    shown = maps[:limit].numpy()
    rows, cols = _grid(len(shown))
    fig, (ax_in, ax_maps) = plt.subplots(1, 2, figsize=(0.9 * cols + 4.4, max(2.8, 0.9 * rows + 1.2)),
                                         width_ratios=[2.2, 0.9 * cols + 1])
    show_image(ax_in, image, pixel_max)
    ax_in.set_title(caption, fontsize=8, **PLAIN)
    picture = show_mosaic(ax_maps, shown, "viridis", float(shown.min()), float(shown.max()))
    ax_maps.set_title(f"{title}: {maps.shape[0]} maps of {maps.shape[-2]}x{maps.shape[-1]}"
                      + (f" (first {limit})" if maps.shape[0] > limit else "") + "; map = row + column",
                      fontsize=9, **PLAIN)
    fig.colorbar(picture, ax=ax_maps, shrink=0.7, label="activation")
    return fig


def map_title(name: str, shown: str) -> str:
    """'features.0 -> features.2 (post-activation)' when the maps are drawn after the layer's BN and activation."""
    return name if shown == name else f"{name} -> {shown} (post-activation)"


def plot_feature_maps(title: str, maps: torch.Tensor, path: Path, image: torch.Tensor, caption: str,
                      pixel_max: float, limit: int = 32) -> Path:
    """One PNG: the input and a layer's maps for it."""
    return _save(maps_figure(title, maps, image, caption, pixel_max, limit), path)


def _log_if_wide(ax: plt.Axes, values: list[float]) -> None:
    positive = [v for v in values if v is not None and v > 0]
    if positive and max(positive) >= LOG_AXIS_RATIO * min(positive):
        ax.set_yscale("log")


def curves_figure(history: list[dict], best_epoch: int | None = None) -> Figure:
    """Loss (a log axis when it spans decades), accuracy (the article-style one too, when recorded) and learning
    rate per epoch, with the best validation epoch marked."""
    epochs = [r for r in history if "epoch" in r]
    x = [r["epoch"] for r in epochs]
    with_lr = any("lr" in r for r in epochs)
    fig, axes = plt.subplots(1, 3 if with_lr else 2, figsize=(13 if with_lr else 9, 3.4), layout="constrained")
    loss_ax, acc_ax = axes[0], axes[1]
    losses = [r["train_loss"] for r in epochs]
    loss_ax.plot(x, losses, label="train")
    acc_ax.plot(x, [100 * r["train_accuracy"] for r in epochs], label="train")
    val = [r for r in epochs if r.get("val_accuracy") is not None]
    if val:
        losses += [r["val_loss"] for r in val]
        loss_ax.plot([r["epoch"] for r in val], [r["val_loss"] for r in val], label="validation")
        acc_ax.plot([r["epoch"] for r in val], [100 * r["val_accuracy"] for r in val], label="validation")
    article = [r for r in epochs if "article_train_accuracy" in r]
    if article:
        acc_ax.plot([r["epoch"] for r in article], [100 * r["article_train_accuracy"] for r in article],
                    label="train, article-style (batch statistics)", linestyle=":")
    _log_if_wide(loss_ax, losses)
    loss_ax.set(title="loss" + (" (log axis)" if loss_ax.get_yscale() == "log" else ""), xlabel="epoch",
                ylabel="loss")
    acc_ax.set(title="accuracy", xlabel="epoch", ylabel="accuracy (%)")
    if with_lr:
        rates = [r["lr"] for r in epochs if "lr" in r]
        axes[2].plot([r["epoch"] for r in epochs if "lr" in r], rates, color="tab:purple")
        _log_if_wide(axes[2], rates)
        axes[2].set(title="learning rate (end of epoch)", xlabel="epoch", ylabel="learning rate")
    for ax in axes:
        if best_epoch is not None:
            ax.axvline(best_epoch, color="tab:red", linestyle="--", linewidth=1, label=f"best epoch {best_epoch}")
        ax.grid(alpha=0.3)
    loss_ax.legend(fontsize=8)
    acc_ax.legend(fontsize=8)
    return fig


def plot_curves(history: list[dict], path: Path, best_epoch: int | None = None) -> Path:
    """Learning curves as one PNG."""
    return _save(curves_figure(history, best_epoch), path)


def plot_confusion(matrix: list[list[int]], class_names: list[str], path: Path) -> Path:
    """A confusion matrix with counts in the cells."""
    size = max(4.0, 0.45 * len(class_names) + 2)
    fig, ax = plt.subplots(figsize=(size + 1, size))
    image = ax.imshow(matrix, cmap="Blues")
    ticks = range(len(class_names))
    ax.set_xticks(ticks, class_names, rotation=45 if max(map(len, class_names)) > 2 else 0, **PLAIN)
    ax.set_yticks(ticks, class_names, **PLAIN)
    ax.set(xlabel="predicted class", ylabel="true class", title="confusion matrix (test)")
    peak = max(max(row) for row in matrix) or 1
    for i, row in enumerate(matrix):
        for j, value in enumerate(row):
            if value:
                ax.text(j, i, str(value), ha="center", va="center", fontsize=7,
                        color="white" if value > peak / 2 else "black")
    fig.colorbar(image, ax=ax, shrink=0.8, label="images")
    return _save(fig, path)


def plot_examples(images: torch.Tensor, titles: list[str], path: Path, title: str,
                  pixel_max: float | None = None) -> Path:
    """A grid of stored-scale images with a caption each (e.g. predicted vs true labels)."""
    rows, cols = _grid(max(1, len(images)))
    fig, axes = plt.subplots(rows, cols, figsize=(1.8 * cols + 0.5, 1.9 * rows + 0.6), squeeze=False)
    for i, ax in enumerate(axes.flat):
        ax.axis("off")
        if i < len(images):
            show_image(ax, images[i], pixel_max)
            ax.set_title(titles[i], fontsize=7, **PLAIN)
    fig.suptitle(title, fontsize=9, **PLAIN)
    return _save(fig, path)


def _save(fig: plt.Figure, path: Path) -> Path:
    ensure_parent(path)
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return path


def file_stem(name: str) -> str:
    """A layer or input name as a file name part: dots and separators become underscores."""
    return "".join(c if c.isalnum() or c in "-_" else "_" for c in name)


UNTRAINED = "UNTRAINED (random weights): "  # heads every picture of a registry model, so none passes for a trained one


def untrained_note(trained: Trained) -> str:
    """UNTRAINED for a registered model's fresh weights, else nothing."""
    return "" if trained.trained else UNTRAINED


def visualize(source: str, image: str, layers: list[str] | None, out: Path, activation: str = "post",
              label: str | None = None, overwrite: bool = False, white: float | None = None) -> list[Path]:
    """Filters of the first conv layer, and per layer one PNG of the image beside its maps (after the layer's
    batch norm and activation unless `activation` is 'pre'), titled with the predicted (and true) class, and
    UNTRAINED for a registered model's fresh weights."""
    trained = open_model(source)
    if label is not None and label not in trained.class_names:
        raise CnnkitError(f"--label {label!r} is not one of the model's classes: {', '.join(trained.class_names)}")
    images = read_inputs([image], trained, white)[0][:1]
    x = trained.prepare(images)
    maps_by_layer = feature_maps(trained.model, x, layers or default_layers(trained.model), activation)  # names first
    probabilities = torch.softmax(logits_of(trained, images)[0], dim=0)
    predicted = int(probabilities.argmax())
    caption = (f"input: predicted {trained.class_names[predicted]} ({100 * float(probabilities[predicted]):.1f}%)"
               + (f"\ntrue {label}" if label is not None else "")
               + ("\nUNTRAINED: random weights" if not trained.trained else ""))
    refuse_existing([out / "filters.png", *(out / f"maps_{file_stem(name)}.png" for name in maps_by_layer)],
                    overwrite)
    written = [plot_filters(trained.model, out / "filters.png", note=untrained_note(trained))]
    for name, (shown, maps) in maps_by_layer.items():
        written.append(plot_feature_maps(untrained_note(trained) + map_title(name, shown), maps,
                                         out / f"maps_{file_stem(name)}.png", images[0], caption, trained.pixel_max))
    return written


def why_figure(image: torch.Tensor, heat: torch.Tensor, pixel_max: float, what: str, title: str) -> Figure:
    """Input | heat map | heat over the input, for saliency or Grad-CAM (stretched to the input's size)."""
    fig, (ax_in, ax_heat, ax_over) = plt.subplots(1, 3, figsize=(8.4, 3.2))
    show_image(ax_in, image, pixel_max)
    ax_in.set_title("input", fontsize=8)
    heat = heat.detach().float().cpu().numpy()
    shown = ax_heat.imshow(heat, cmap="inferno")
    ax_heat.set_title(what, fontsize=8, **PLAIN)
    fig.colorbar(shown, ax=ax_heat, shrink=0.8)
    show_image(ax_over, image, pixel_max)
    ax_over.imshow(heat, cmap="inferno", alpha=0.55)
    ax_over.set_title("over the input", fontsize=8)
    for ax in (ax_heat, ax_over):
        ax.set_xticks([])
        ax.set_yticks([])
    fig.suptitle(title, fontsize=9, **PLAIN)
    return fig


def explain_decision(source: str, inputs: list[str], out: Path, class_name: str | None = None,
                     layer: str | None = None, overwrite: bool = False, white: float | None = None) -> list[dict]:
    """Saliency and Grad-CAM PNGs (IMAGE_saliency.png, IMAGE_gradcam.png) per input image, for its predicted class
    or `class_name`; returns what each picture explains, and whether the model is `untrained` (a registered
    model's fresh weights: its pictures say UNTRAINED)."""
    trained = open_model(source)
    model = trained.model
    if class_name is not None and class_name not in trained.class_names:
        raise CnnkitError(f"--class {class_name!r} is not one of the model's classes: "
                          f"{', '.join(trained.class_names)}")
    cam_layer = layer or grad_cam_layer(trace_units(model, trained.input_shape))
    drawn_layers(model, trained.input_shape, [cam_layer])  # an unknown --layer is refused before any file
    images, names = read_inputs(inputs, trained, white)
    probabilities = torch.softmax(logits_of(trained, images), dim=1)
    stems = [file_stem(Path(name).stem) for name in names]
    stems = [s if stems.count(s) == 1 else f"{i}_{s}" for i, s in enumerate(stems)]  # same file names elsewhere
    refuse_existing([out / f"{stem}_{kind}.png" for stem in stems for kind in ("saliency", "gradcam")], overwrite)
    results = []
    for image, name, stem, probs in zip(images, names, stems, probabilities, strict=True):
        predicted = int(probs.argmax())
        target = trained.class_names.index(class_name) if class_name is not None else predicted
        x = trained.prepare(image[None])
        heat = saliency_map(input_gradient(model, x, target))
        cam = upsample(grad_cam(model, x, target, cam_layer), tuple(image.shape[-2:]))
        title = (f"{untrained_note(trained)}{name}: predicted {trained.class_names[predicted]} "
                 f"({100 * float(probs[predicted]):.1f}%); explaining class {trained.class_names[target]}")
        saliency_path = _save(why_figure(image, heat, trained.pixel_max, "saliency |d score / d input|", title),
                              out / f"{stem}_saliency.png")
        cam_path = _save(why_figure(image, cam, trained.pixel_max, f"Grad-CAM on {cam_layer}", title),
                         out / f"{stem}_gradcam.png")
        results.append({"input": name, "predicted": trained.class_names[predicted],
                        "probability": float(probs[predicted]), "explained": trained.class_names[target],
                        "grad_cam_layer": cam_layer, "saliency": str(saliency_path), "grad_cam": str(cam_path),
                        "untrained": not trained.trained})
    return results
