"""A multi-layer perceptron on flattened pixels."""

from __future__ import annotations

import math
from typing import Sequence

from torch import nn

from trainlab.errors import ConfigError
from trainlab.models.layers import make_activation


class MLP(nn.Sequential):
    """Flatten -> [Linear -> activation -> Dropout] per hidden size -> Linear head."""

    def __init__(
        self,
        input_shape: Sequence[int],
        num_classes: int,
        hidden: Sequence[int] = (256, 128),
        activation: str = "relu",
        dropout: float = 0.0,
    ):
        if any(h < 1 for h in hidden):
            raise ConfigError(f"model.hidden={list(hidden)}: every layer needs >= 1 unit")
        if not 0.0 <= dropout < 1.0:
            raise ConfigError(f"model.dropout={dropout}: must be in [0, 1)")
        layers: list[nn.Module] = [nn.Flatten()]
        width = math.prod(input_shape)
        for size in hidden:
            layers += [nn.Linear(width, size), make_activation(activation)]
            if dropout:
                layers.append(nn.Dropout(dropout))
            width = size
        layers.append(nn.Linear(width, num_classes))
        super().__init__(*layers)
