"""A small VGG-like convnet: stages of 3x3 conv blocks with 2x2 max pooling between them."""

from __future__ import annotations

from typing import Sequence

from torch import nn

from trainlab.errors import ConfigError
from trainlab.models.layers import make_activation


def conv_block(in_channels: int, out_channels: int, batch_norm: bool, activation: str) -> list[nn.Module]:
    # the conv's bias is redundant in front of batch norm (its shift absorbs it)
    conv = nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=not batch_norm)
    return [conv] + ([nn.BatchNorm2d(out_channels)] if batch_norm else []) + [make_activation(activation)]


class CNN(nn.Module):
    """Stages of conv blocks; max pool between stages; global average pool, dropout, linear head."""

    def __init__(
        self,
        input_shape: Sequence[int],
        num_classes: int,
        channels: Sequence[int] = (32, 64, 128),
        blocks_per_stage: int = 1,
        batch_norm: bool = True,
        activation: str = "relu",
        dropout: float = 0.0,
    ):
        super().__init__()
        if not channels or any(c < 1 for c in channels) or blocks_per_stage < 1:
            raise ConfigError(f"model.channels={list(channels)}, blocks_per_stage={blocks_per_stage}: need >= 1 each")
        if not 0.0 <= dropout < 1.0:
            raise ConfigError(f"model.dropout={dropout}: must be in [0, 1)")
        layers: list[nn.Module] = []
        width = input_shape[0]
        for stage, out_channels in enumerate(channels):
            if stage > 0:
                layers.append(nn.MaxPool2d(2))
            for _ in range(blocks_per_stage):
                layers += conv_block(width, out_channels, batch_norm, activation)
                width = out_channels
        self.features = nn.Sequential(*layers)
        self.pool = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.dropout = nn.Dropout(dropout) if dropout else nn.Identity()
        self.head = nn.Linear(width, num_classes)

    def forward(self, x):
        return self.head(self.dropout(self.pool(self.features(x))))
