"""A plain convnet: stages of conv blocks, pooling between stages, global average pool, linear head."""

from __future__ import annotations

import math
import warnings
from typing import Any, Optional, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from trainlab.errors import ConfigError
from trainlab.models.layers import NORMS, check_choice, check_probability, expansion, make_activation, make_norm


POOLS = ("max", "avg", "fractional")
FRACTIONAL_RATIO = 1 / math.sqrt(2)  # Graham 2014: shrink by sqrt(2) per pooling, twice as many stages


class FractionalMaxPool2d(nn.FractionalMaxPool2d):
    """nn.FractionalMaxPool2d whose pooling regions are random in training and fixed in eval.

    torch draws new pseudo-random regions on every call, eval mode included, which makes validation
    scores noisy; here eval uses the fixed offset u = 0.5 for every sample and channel.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training or self._random_samples is not None:
            return super().forward(x)
        samples = x.new_full((x.shape[0], x.shape[1], 2), 0.5)
        return F.fractional_max_pool2d(x, self.kernel_size, self.output_size, self.output_ratio,
                                       self.return_indices, _random_samples=samples)


def make_pool(kind: str) -> nn.Module:
    if kind == "max":
        return nn.MaxPool2d(2)
    if kind == "avg":
        return nn.AvgPool2d(2)
    return FractionalMaxPool2d(2, output_ratio=FRACTIONAL_RATIO)


def pooled_size(size: int, kind: str) -> int:
    return int(size * FRACTIONAL_RATIO) if kind == "fractional" else size // 2


def conv_block(in_channels: int, out_channels: int, kernel_size: int, norm: str, activation: str,
               activation_params: Optional[dict[str, Any]] = None) -> list[nn.Module]:
    """conv ('same' padding) -> norm -> activation; the conv outputs k * out_channels for maxout."""
    width = out_channels * expansion(activation, activation_params)
    # the conv's bias is redundant in front of batch norm (its shift absorbs it)
    conv = nn.Conv2d(in_channels, width, kernel_size, padding=kernel_size // 2, bias=norm != "batch")
    layers = [conv] + ([make_norm(norm, width, dims=2)] if norm != "none" else [])
    return layers + [make_activation(activation, activation_params)]


class CNN(nn.Module):
    """Stages of conv blocks; pooling between stages; global average pool, dropout, linear head.

    Top-level children in forward order: `features` (a flat Sequential: conv, norm, act, ..., pool,
    ...), `pool` (global average pool + flatten), `dropout`, `head`.

    - channels: output channels per stage; blocks_per_stage conv blocks in each.
    - kernel_size: odd, 'same' padding (spatial size only changes at the poolings).
    - pool: max | avg (2x2, stride 2) | fractional (FractionalMaxPool2d, output ratio 1/sqrt(2),
      random regions in training, fixed in eval), between stages.
    - norm: batch | group | layer | none after each conv; batch_norm (bool) is a deprecated alias
      of norm=batch|none.
    - activation (+ activation_params): maxout makes each conv k times wider.
    - dropout: before the head.
    """

    def __init__(
        self,
        input_shape: Sequence[int],
        num_classes: int,
        *,
        channels: Sequence[int] = (32, 64, 128),
        blocks_per_stage: int = 1,
        kernel_size: int = 3,
        pool: str = "max",
        activation: str = "relu",
        activation_params: Optional[dict[str, Any]] = None,
        norm: str = "batch",
        dropout: float = 0.0,
        batch_norm: Optional[bool] = None,
    ):
        super().__init__()
        if isinstance(channels, str) or not all(isinstance(c, int) and not isinstance(c, bool)
                                                for c in channels):
            raise ConfigError(f"model.channels={channels}: must be a list of whole numbers, e.g. [32,64,128]")
        channels = list(channels)
        if not channels or any(c < 1 for c in channels) or blocks_per_stage < 1:
            raise ConfigError(f"model.channels={channels}, blocks_per_stage={blocks_per_stage}: need >= 1 each")
        if kernel_size < 1 or kernel_size % 2 == 0:
            raise ConfigError(f"model.kernel_size={kernel_size}: must be odd and >= 1 ('same' padding)")
        check_choice("pool", pool, POOLS)
        check_probability("dropout", dropout)
        if batch_norm is not None:
            warnings.warn("model.batch_norm is deprecated; use model.norm=batch|none", DeprecationWarning, stacklevel=2)
            if norm not in ("batch", "none"):
                raise ConfigError(f"model.batch_norm={batch_norm} with model.norm={norm}: set model.norm only")
            norm = "batch" if batch_norm else "none"
        check_choice("norm", norm, NORMS)
        make_activation(activation, activation_params)  # a bad name/params fails here, naming the key
        height, width_px = input_shape[1:]
        for stage in range(1, len(channels)):
            if min(height, width_px) < 2:
                raise ConfigError(
                    f"model.channels={channels}: {len(channels)} stages pool {len(channels) - 1} times, too many "
                    f"for a {input_shape[1]}x{input_shape[2]} input (nothing left to pool before stage {stage + 1})"
                )
            height, width_px = pooled_size(height, pool), pooled_size(width_px, pool)

        layers: list[nn.Module] = []
        width = input_shape[0]
        for stage, out_channels in enumerate(channels):
            if stage > 0:
                layers.append(make_pool(pool))
            for _ in range(blocks_per_stage):
                layers += conv_block(width, out_channels, kernel_size, norm, activation, activation_params)
                width = out_channels
        self.features = nn.Sequential(*layers)
        self.pool = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.dropout = nn.Dropout(dropout) if dropout else nn.Identity()
        self.head = nn.Linear(width, num_classes)

    def forward(self, x):
        return self.head(self.dropout(self.pool(self.features(x))))
