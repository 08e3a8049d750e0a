"""The approaches' loss functions (torch). Rows without a target are masked out.

Masks are applied arithmetically (no boolean indexing, no ``if tensor``), so a training step
never waits for the GPU to learn how many rows are known.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def _safe_divide(total: torch.Tensor, count: torch.Tensor) -> torch.Tensor:
    """``total / count``, and 0 (with zero gradients) where ``count`` is 0."""
    return total / torch.where(count > 0, count, torch.ones_like(count))


def cross_entropy(logits: torch.Tensor, labels: torch.Tensor,
                  weights: list[float] | None = None) -> torch.Tensor:
    """Cross-entropy over rows with a label (``-1`` rows ignored); 0 when there is none."""
    labels = labels.to(logits.device).long()
    weight = None if weights is None else torch.tensor(weights, dtype=logits.dtype,
                                                       device=logits.device)
    total = F.cross_entropy(logits, labels, weight=weight, ignore_index=-1, reduction="sum")
    known = (labels >= 0).to(logits.dtype)
    count = known.sum() if weight is None else (weight[labels.clamp(min=0)] * known).sum()
    return _safe_divide(total, count)


def standardised_avd(avd: torch.Tensor, mean: list[float], std: list[float],
                     like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Gold AVD standardised with the training statistics, and the ``[B]`` mask of rows
    whose three values are known."""
    avd = avd.to(device=like.device, dtype=like.dtype)
    known = torch.isfinite(avd).all(dim=1)
    z = (avd - torch.tensor(mean, dtype=like.dtype, device=like.device)) \
        / torch.tensor(std, dtype=like.dtype, device=like.device)
    return torch.nan_to_num(z), known


def mse(pred: torch.Tensor, gold: torch.Tensor, known: torch.Tensor) -> torch.Tensor:
    """Mean squared error over the ``known`` rows (``gold`` finite everywhere); 0 when there
    is none."""
    rows = known.to(pred.dtype).unsqueeze(1)
    squared = ((pred - gold) ** 2 * rows).sum()
    return _safe_divide(squared, rows.sum() * pred.shape[1])


def ccc_loss(pred: torch.Tensor, gold: torch.Tensor, known: torch.Tensor,
             eps: float = 1e-8) -> torch.Tensor:
    """``1 - mean_d CCC(pred[:, d], gold[:, d])`` over the ``known`` rows; 0 when fewer than
    two rows are known (CCC needs a variance)."""
    rows = known.to(pred.dtype).unsqueeze(1)
    n = rows.sum()
    n_safe = torch.where(n > 0, n, torch.ones_like(n))

    def mean(values: torch.Tensor) -> torch.Tensor:
        return (values * rows).sum(dim=0) / n_safe

    mx, my = mean(pred), mean(gold)
    vx, vy = mean((pred - mx) ** 2), mean((gold - my) ** 2)
    cov = mean((pred - mx) * (gold - my))
    ccc = 2 * cov / (vx + vy + (mx - my) ** 2 + eps)
    return torch.where(n >= 2, 1.0 - ccc.mean(), pred.sum() * 0.0)
