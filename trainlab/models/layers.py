"""Building blocks shared by the models: activations by name."""

from __future__ import annotations

from torch import nn

from trainlab.errors import ConfigError

ACTIVATIONS = {
    "relu": nn.ReLU,
    "leaky_relu": nn.LeakyReLU,
    "elu": nn.ELU,
    "selu": nn.SELU,
    "gelu": nn.GELU,
    "silu": nn.SiLU,
    "tanh": nn.Tanh,
    "sigmoid": nn.Sigmoid,
}


def make_activation(name: str) -> nn.Module:
    """A fresh activation module for `name` (model.activation)."""
    try:
        return ACTIVATIONS[name]()
    except KeyError:
        raise ConfigError(
            f"model.activation={name!r}: unknown activation; choose one of {', '.join(ACTIVATIONS)}"
        ) from None
