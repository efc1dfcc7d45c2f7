"""DropConnect (Wan et al. 2013): drop individual *weights* of a linear layer during training.

Dropout zeroes activations; DropConnect zeroes each entry of the weight matrix independently with
probability p, so every output unit sees a different random subset of its inputs.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from trainlab.errors import ConfigError


class DropConnectLinear(nn.Linear):
    """nn.Linear whose weight entries are dropped with probability `p` in training mode.

    Training: each weight is kept with probability 1 - p and the kept ones are divided by (1 - p)
    ("inverted" scaling, as nn.Dropout does for activations), so the expected weight matrix is the
    full one. Evaluation: the full weights are used unscaled, i.e. exactly an nn.Linear; this is the
    simple mean approximation, not the paper's Gaussian moment-matching inference.

    Simplification: one mask is drawn per forward pass and shared by every sample of the batch
    (the paper draws one per sample, which needs an [N, out, in] weight tensor). It is drawn on the
    weight's device, in one batched op. The bias is never dropped.

    A subclass of nn.Linear with the same parameters (weight, bias), so initializers, state dicts and
    transfer learning treat it as a Linear layer.
    """

    def __init__(self, in_features: int, out_features: int, bias: bool = True, p: float = 0.5,
                 device=None, dtype=None):
        if not 0.0 <= p < 1.0:
            raise ConfigError(f"model.dropconnect={p}: must be in [0, 1)")
        super().__init__(in_features, out_features, bias=bias, device=device, dtype=dtype)
        self.p = float(p)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training and self.p > 0:
            # F.dropout on the weight tensor = Bernoulli(1 - p) mask and 1 / (1 - p) scaling;
            # gradients reach only the kept weights.
            return F.linear(x, F.dropout(self.weight, self.p, training=True), self.bias)
        return F.linear(x, self.weight, self.bias)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, p={self.p}"
