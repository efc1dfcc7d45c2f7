"""A multi-layer perceptron on flattened pixels."""

from __future__ import annotations

import math
from collections import OrderedDict
from typing import Any, Optional, Sequence

from torch import nn

from trainlab.errors import ConfigError
from trainlab.models.dropconnect import DropConnectLinear
from trainlab.models.layers import NORMS, check_choice, check_probability, expansion, make_activation, make_norm


class MLP(nn.Sequential):
    """Flatten -> per hidden size [Linear -> norm -> activation -> Dropout] -> Linear head.

    Top-level children, in forward order: `flatten`, then `fc1`, `norm1`, `act1`, `drop1`, `fc2`, ...
    (norm/drop only when enabled), then `head`; `model[1]` is the first Linear, `model[-1]` the head.

    - hidden: layer widths, e.g. [50] (one hidden layer) or [500] * 10; [] is a linear classifier.
    - activation (+ activation_params): see layers.make_activation; with maxout (k pieces) each hidden
      Linear outputs k * width features and maxout reduces them to `width`.
    - norm: none | batch | layer | group on the Linear's output (before the activation); batch makes
      the Linear's bias redundant, so it is left out.
    - dropout: probability of dropping a hidden activation (after the activation).
    - dropconnect: probability of dropping each weight of the hidden Linear layers in training
      (DropConnectLinear; the head is a plain Linear).
    """

    def __init__(
        self,
        input_shape: Sequence[int],
        num_classes: int,
        *,
        hidden: Sequence[int] = (50,),
        activation: str = "relu",
        activation_params: Optional[dict[str, Any]] = None,
        norm: str = "none",
        dropout: float = 0.0,
        dropconnect: float = 0.0,
    ):
        hidden = list(hidden)
        if any(not isinstance(h, int) or h < 1 for h in hidden):
            raise ConfigError(f"model.hidden={hidden}: every layer needs a whole number >= 1 of units")
        check_probability("dropout", dropout)
        check_probability("dropconnect", dropconnect)
        check_choice("norm", norm, NORMS)
        make_activation(activation, activation_params)  # fail on a bad name/params even with hidden=[]
        k = expansion(activation, activation_params)

        layers: OrderedDict[str, nn.Module] = OrderedDict(flatten=nn.Flatten())
        width = math.prod(input_shape)
        for i, size in enumerate(hidden, start=1):
            bias = norm != "batch"
            if dropconnect:
                layers[f"fc{i}"] = DropConnectLinear(width, size * k, bias=bias, p=dropconnect)
            else:
                layers[f"fc{i}"] = nn.Linear(width, size * k, bias=bias)
            if norm != "none":
                layers[f"norm{i}"] = make_norm(norm, size * k, dims=1)
            layers[f"act{i}"] = make_activation(activation, activation_params)
            if dropout:
                layers[f"drop{i}"] = nn.Dropout(dropout)
            width = size
        layers["head"] = nn.Linear(width, num_classes)
        super().__init__(layers)

    def __getitem__(self, idx):
        # nn.Sequential slices by calling type(self)(OrderedDict), which MLP's signature does not
        # take; a slice (e.g. model[:-1], everything before the head) is a plain nn.Sequential.
        if isinstance(idx, slice):
            return nn.Sequential(OrderedDict(list(self._modules.items())[idx]))
        return super().__getitem__(idx)
