"""Training losses: cross-entropy (with label smoothing) and the article's clipped one-hot loss."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from cnnkit.models.googlenet import GoogLeNetOutputs

AUX_WEIGHT = 0.3  # GoogLeNet section 5: auxiliary losses added with weight 0.3


def article_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """-mean(Y * log(clip(softmax, 1e-11, 1))) over batch AND classes, exactly as the article's TF code."""
    probs = torch.softmax(logits, dim=1).clamp(1e-11, 1.0)
    one_hot = F.one_hot(labels, logits.shape[1]).to(probs.dtype)
    return -(one_hot * probs.log()).mean()


def make_loss(kind: str, label_smoothing: float = 0.0):
    """A function (model output, labels) -> scalar loss; GoogLeNet's auxiliary outputs are added at 0.3."""

    def single(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        if kind == "article":
            return article_loss(logits.float(), labels)
        return F.cross_entropy(logits.float(), labels, label_smoothing=label_smoothing)

    def loss(output: torch.Tensor | GoogLeNetOutputs, labels: torch.Tensor) -> torch.Tensor:
        if isinstance(output, GoogLeNetOutputs):
            aux = single(output.aux1, labels) + single(output.aux2, labels)
            return single(output.logits, labels) + AUX_WEIGHT * aux
        return single(output, labels)

    return loss


def main_logits(output: torch.Tensor | GoogLeNetOutputs) -> torch.Tensor:
    """The logits that accuracy is measured on."""
    return output.logits if isinstance(output, GoogLeNetOutputs) else output
