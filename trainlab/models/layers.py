"""Building blocks shared by the models: activations (with their parameters), normalization layers.

Every model takes `activation` as a name plus `activation_params` (e.g. leaky_relu's slope, elu's
alpha, maxout's k) and `norm` as a name. Maxout is an activation that *reduces* width: k linear
pieces per unit, max over them (Goodfellow et al. 2013), so a layer followed by maxout must produce
`expansion(activation, params)` times as many features; models ask for that factor here.
"""

from __future__ import annotations

from typing import Any, Optional, Sequence

import torch
from torch import nn

from trainlab.errors import ConfigError

ACTIVATIONS: dict[str, type[nn.Module]] = {
    "relu": nn.ReLU,
    "leaky_relu": nn.LeakyReLU,   # negative_slope (default 0.01)
    "prelu": nn.PReLU,            # num_parameters, init (learned slope)
    "elu": nn.ELU,                # alpha
    "selu": nn.SELU,
    "gelu": nn.GELU,
    "silu": nn.SiLU,
    "tanh": nn.Tanh,
    "sigmoid": nn.Sigmoid,
    "identity": nn.Identity,
}


class Maxout(nn.Module):
    """Max over groups of `k` consecutive features (dim 1): [N, k*C, ...] -> [N, C, ...]."""

    def __init__(self, k: int = 2):
        super().__init__()
        if k < 2:
            raise ConfigError(f"model.activation_params.k={k}: maxout needs k >= 2 pieces")
        self.k = k

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, c = x.shape[:2]
        if c % self.k:
            raise ValueError(f"maxout with k={self.k} got {c} features (not a multiple of k)")
        return x.view(n, c // self.k, self.k, *x.shape[2:]).amax(dim=2)

    def extra_repr(self) -> str:
        return f"k={self.k}"


def make_activation(name: str, params: Optional[dict[str, Any]] = None) -> nn.Module:
    """A fresh activation module for `name` (model.activation) with `params` (model.activation_params)."""
    params = dict(params or {})
    if name == "maxout":
        return Maxout(**params)
    if name not in ACTIVATIONS:
        raise ConfigError(
            f"model.activation={name!r}: unknown activation; choose one of {', '.join([*ACTIVATIONS, 'maxout'])}"
        )
    try:
        return ACTIVATIONS[name](**params)
    except TypeError as error:
        raise ConfigError(f"model.activation_params={params}: not parameters of {name} ({error})") from None


def expansion(name: str, params: Optional[dict[str, Any]] = None) -> int:
    """How many times wider the layer before this activation must be (k for maxout, else 1)."""
    return int((params or {}).get("k", 2)) if name == "maxout" else 1


# The nonlinearity name torch.nn.init.calculate_gain knows for each activation (for gains that follow
# the activation); activations it does not know are treated as ReLU-like or linear as noted.
GAIN_NONLINEARITY = {
    "relu": "relu", "leaky_relu": "leaky_relu", "prelu": "leaky_relu", "elu": "relu", "selu": "selu",
    "gelu": "relu", "silu": "relu", "tanh": "tanh", "sigmoid": "sigmoid", "identity": "linear", "maxout": "linear",
}

NORMS = ("batch", "group", "layer", "none")


def make_norm(kind: str, channels: int, dims: int = 2, groups: int = 8) -> nn.Module:
    """A normalization layer for `channels` features: batch (BatchNorm1d/2d), group, layer, or none.

    dims=2 for conv feature maps [N, C, H, W], dims=1 for dense features [N, C]. Layer norm on
    feature maps is GroupNorm with one group (normalizes over C, H, W per sample).
    """
    if kind == "none":
        return nn.Identity()
    if kind == "batch":
        return nn.BatchNorm2d(channels) if dims == 2 else nn.BatchNorm1d(channels)
    if kind == "group":
        return nn.GroupNorm(_group_count(channels, groups), channels)
    if kind == "layer":
        return nn.GroupNorm(1, channels) if dims == 2 else nn.LayerNorm(channels)
    raise ConfigError(f"model.norm={kind!r}: unknown normalization; choose one of {', '.join(NORMS)}")


def _group_count(channels: int, wanted: int) -> int:
    """The largest group count <= wanted that divides `channels`."""
    return next(g for g in range(min(wanted, channels), 0, -1) if channels % g == 0)


# Checks of model keys shared by every model: one line naming model.<key>.


def check_probability(key: str, value: float) -> None:
    """A dropout-like rate: 0 <= value < 1."""
    if not 0.0 <= value < 1.0:
        raise ConfigError(f"model.{key}={value}: must be in [0, 1)")


def check_choice(key: str, value: Any, choices: Sequence[str]) -> None:
    if value not in choices:
        raise ConfigError(f"model.{key}={value!r}: unknown; choose one of {', '.join(choices)}")
