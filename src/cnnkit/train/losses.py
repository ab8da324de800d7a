"""Training losses: cross-entropy (with label smoothing) and the article's clipped one-hot loss."""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

from cnnkit.models.base import TrainingOutputs, auxiliary_logits, main_logits


def article_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """-mean(Y * log(clip(softmax, 1e-11, 1))) over batch AND classes, exactly as the article's TF code."""
    probs = torch.softmax(logits, dim=1).clamp(1e-11, 1.0)
    one_hot = F.one_hot(labels, logits.shape[1]).to(probs.dtype)
    return -(one_hot * probs.log()).mean()


def make_loss(kind: str, label_smoothing: float = 0.0) -> Callable[[torch.Tensor | TrainingOutputs, torch.Tensor],
                                                                   torch.Tensor]:
    """A function (model output, labels) -> scalar loss; auxiliary outputs add their losses at their weight."""

    def single(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        if kind == "article":
            return article_loss(logits.float(), labels)
        return F.cross_entropy(logits.float(), labels, label_smoothing=label_smoothing)

    def loss(output: torch.Tensor | TrainingOutputs, labels: torch.Tensor) -> torch.Tensor:
        total = single(main_logits(output), labels)
        auxiliary, weight = auxiliary_logits(output)
        for logits in auxiliary:
            total = total + weight * single(logits, labels)
        return total

    return loss


def describe_objective(kind: str, label_smoothing: float = 0.0) -> str:
    """The training objective in words, for logs that report it beside the plain cross-entropy of held-out data."""
    if kind == "article":
        return "the article's loss -mean(Y * log(clip(softmax, 1e-11, 1)))"
    return f"cross-entropy with label smoothing {label_smoothing:g}" if label_smoothing else "cross-entropy"
