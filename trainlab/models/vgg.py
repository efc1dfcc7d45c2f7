"""A small VGG-style convnet (Simonyan & Zisserman 2014) for 28x28 / 32x32 images.

The body is a list like [64, 64, "M", 128, 128, "M", 256, 256, "M"]: a number is a 3x3 conv block
(conv -> norm -> activation) with that many output channels, "M" a 2x2 max pool.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any, Optional, Sequence, Union

from torch import nn

from trainlab.errors import ConfigError
from trainlab.models.cnn import conv_block
from trainlab.models.layers import NORMS, check_choice, check_probability, expansion, make_activation, make_norm


CLASSIFIERS = ("avg", "flatten")


class VGG(nn.Module):
    """VGG body, then global average pool or flatten, hidden fully-connected layers, linear head.

    Top-level children in forward order: `features` (flat Sequential of conv, norm, act, MaxPool2d),
    `pool` (AdaptiveAvgPool2d(1) + Flatten, or Flatten), `fc` (the hidden layers: Linear -> norm ->
    activation, with Dropout between them; empty when hidden=[]), `dropout`, `head`. So dropout
    comes after every hidden layer, as in VGG's classifier (and before the head when hidden=[]).

    - cfg: conv widths and "M" (2x2 max pool); every "M" halves the size (floor), so 28x28 works too.
    - classifier: avg (global average pool, few parameters) | flatten (C*H*W features).
    - hidden: widths of the fully-connected layers before the head.
    - norm: batch | group | layer | none, after each conv and each hidden Linear.
    """

    def __init__(
        self,
        input_shape: Sequence[int],
        num_classes: int,
        *,
        cfg: Sequence[Union[int, str]] = (64, 64, "M", 128, 128, "M", 256, 256, "M"),
        classifier: str = "avg",
        hidden: Sequence[int] = (),
        activation: str = "relu",
        activation_params: Optional[dict[str, Any]] = None,
        norm: str = "batch",
        dropout: float = 0.0,
    ):
        super().__init__()
        cfg, hidden = list(cfg), list(hidden)
        convs = [v for v in cfg if v != "M"]
        if not convs or any(isinstance(v, bool) or not isinstance(v, int) or v < 1 for v in convs):
            raise ConfigError(f"model.cfg={cfg}: needs conv widths (whole numbers >= 1) and 'M' (max pool) only")
        if any(not isinstance(h, int) or h < 1 for h in hidden):
            raise ConfigError(f"model.hidden={hidden}: every layer needs a whole number >= 1 of units")
        check_choice("classifier", classifier, CLASSIFIERS)
        check_choice("norm", norm, NORMS)
        check_probability("dropout", dropout)
        make_activation(activation, activation_params)
        k = expansion(activation, activation_params)

        layers: list[nn.Module] = []
        channels, height, width = input_shape
        for value in cfg:
            if value == "M":
                if min(height, width) < 2:
                    raise ConfigError(f"model.cfg={cfg}: too many 'M' poolings for a "
                                      f"{input_shape[1]}x{input_shape[2]} input")
                layers.append(nn.MaxPool2d(2))
                height, width = height // 2, width // 2
            else:
                layers += conv_block(channels, value, 3, norm, activation, activation_params)
                channels = value
        self.features = nn.Sequential(*layers)
        if classifier == "avg":
            self.pool = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten())
            features = channels
        else:
            self.pool = nn.Flatten()
            features = channels * height * width

        fc: OrderedDict[str, nn.Module] = OrderedDict()
        for i, size in enumerate(hidden, start=1):
            if i > 1 and dropout:
                fc[f"drop{i - 1}"] = nn.Dropout(dropout)
            fc[f"fc{i}"] = nn.Linear(features, size * k, bias=norm != "batch")
            if norm != "none":
                fc[f"norm{i}"] = make_norm(norm, size * k, dims=1)
            fc[f"act{i}"] = make_activation(activation, activation_params)
            features = size
        self.fc = nn.Sequential(fc)
        self.dropout = nn.Dropout(dropout) if dropout else nn.Identity()
        self.head = nn.Linear(features, num_classes)

    def forward(self, x):
        return self.head(self.dropout(self.fc(self.pool(self.features(x)))))

