"""The approaches' loss functions (torch). Rows without a target are masked out."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def cross_entropy(logits: torch.Tensor, labels: torch.Tensor,
                  weights: list[float] | None = None) -> torch.Tensor:
    """Cross-entropy over rows with a label (``-1`` rows ignored); 0 when there is none."""
    labels = labels.to(logits.device).long()
    if not (labels >= 0).any():
        return logits.sum() * 0.0
    weight = None if weights is None else torch.tensor(weights, dtype=logits.dtype,
                                                       device=logits.device)
    return F.cross_entropy(logits, labels, weight=weight, ignore_index=-1)


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
    """Mean squared error over the ``known`` rows; 0 when there is none."""
    if not known.any():
        return pred.sum() * 0.0
    return F.mse_loss(pred[known], gold[known])


def ccc_loss(pred: torch.Tensor, gold: torch.Tensor, known: torch.Tensor,
             eps: float = 1e-8) -> torch.Tensor:
    """``1 - mean_d CCC(pred[:, d], gold[:, d])`` over the ``known`` rows; 0 when fewer than
    two rows are known (CCC needs a variance)."""
    if known.sum() < 2:
        return pred.sum() * 0.0
    x, y = pred[known], gold[known]
    mx, my = x.mean(dim=0), y.mean(dim=0)
    vx, vy = x.var(dim=0, unbiased=False), y.var(dim=0, unbiased=False)
    cov = ((x - mx) * (y - my)).mean(dim=0)
    ccc = 2 * cov / (vx + vy + (mx - my) ** 2 + eps)
    return 1.0 - ccc.mean()
