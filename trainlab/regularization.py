"""Explicit weight penalties added to the training loss: trainer.l1, trainer.l2 (both = elastic net).

    penalty = l1 * sum |w| + l2 * sum w^2        gradient: l1 * sign(w) + 2 * l2 * w

"Weights" are the trainable parameters with ndim > 1: the matrices of linear layers and the kernels of
convolutions. Biases and normalisation scales/shifts (ndim 1) are left alone, as is usual: penalising
them constrains the function's offsets rather than its complexity. This is not the optimizer's
weight_decay (which decoupled optimizers such as AdamW apply outside the gradient); this penalty goes
through the gradient, so it is logged (train/penalty) and scaled by the learning rate like the data loss.
"""

from __future__ import annotations

from typing import Optional

import torch
from torch import nn


def penalized_parameters(model: nn.Module) -> list[torch.Tensor]:
    """The parameters a penalty applies to: trainable, with ndim > 1."""
    return [p for p in model.parameters() if p.requires_grad and p.ndim > 1]


class WeightPenalty:
    """l1 * sum|w| + l2 * sum w^2 over `penalized_parameters(model)`, as a 0-dim fp32 tensor on their device."""

    def __init__(self, model: nn.Module, l1: float = 0.0, l2: float = 0.0):
        if l1 < 0 or l2 < 0:
            raise ValueError(f"l1={l1} and l2={l2} must be >= 0")
        self.l1, self.l2 = float(l1), float(l2)
        self.params = penalized_parameters(model)

    def __call__(self) -> torch.Tensor:
        total = torch.zeros((), device=self.params[0].device) if self.params else torch.zeros(())
        if self.l1:
            total = total + self.l1 * torch.stack([p.float().abs().sum() for p in self.params]).sum()
        if self.l2:
            total = total + self.l2 * torch.stack([p.float().square().sum() for p in self.params]).sum()
        return total


def build_penalty(model: nn.Module, l1: float, l2: float) -> Optional[WeightPenalty]:
    """None when both coefficients are 0 (no work, no train/penalty scalar), else the penalty."""
    if not l1 and not l2:
        return None
    penalty = WeightPenalty(model, l1, l2)
    return penalty if penalty.params else None
