"""The gradient-reversal layer of DANN (Ganin et al., JMLR 2016) and the schedules the paper trains it with.

torch has no gradient-reversal op, hence this one: identity on the way forward, the gradient times -lambda on
the way back, so the feature extractor learns to *fool* the domain classifier it feeds while that classifier
learns to tell the domains apart.
"""

from __future__ import annotations

import math

import torch
from torch import nn


class _ReverseGradient(torch.autograd.Function):
    @staticmethod
    def forward(ctx, features: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(weight)
        return features.view_as(features)  # a new tensor node: its backward is ours

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        (weight,) = ctx.saved_tensors
        return grad * -weight.to(grad.dtype), None


def reverse_gradient(features: torch.Tensor, weight: float | torch.Tensor = 1.0) -> torch.Tensor:
    """`features` unchanged; in backward the gradient flowing into them is multiplied by -weight. A tensor
    weight (0-dim, on the features' device) may change every step without a host sync, and without
    torch.compile recompiling (it would guard on a Python float)."""
    if not torch.is_tensor(weight):
        weight = torch.tensor(float(weight), device=features.device)
    return _ReverseGradient.apply(features, weight)


class GradientReversal(nn.Module):
    """reverse_gradient as a layer; `weight` (lambda) is set from the schedule as training goes."""

    def __init__(self, weight: float = 1.0):
        super().__init__()
        self.weight = float(weight)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return reverse_gradient(features, self.weight)

    def extra_repr(self) -> str:
        return f"weight={self.weight:g}"


def _progress(progress: float) -> float:
    if not 0.0 <= progress <= 1.0:
        raise ValueError(f"training progress {progress} must be in [0, 1]")
    return progress


def ganin_lambda(progress: float, gamma: float = 10.0) -> float:
    """The reversal weight over training progress p in [0, 1]: 2 / (1 + exp(-gamma p)) - 1, from 0 (the domain
    signal is off while the features are still noise) rising to ~1 (Ganin 2016, section 5.2.2; gamma = 10)."""
    return 2.0 / (1.0 + math.exp(-gamma * _progress(progress))) - 1.0


def ganin_lr_factor(progress: float, alpha: float = 10.0, beta: float = 0.75) -> float:
    """The learning-rate annealing of the paper, mu_p = mu_0 / (1 + alpha p)^beta, as a factor of mu_0."""
    return (1.0 + alpha * _progress(progress)) ** -beta
