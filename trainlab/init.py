"""Weight initializers from the `init` group: a torch.nn.init function for weights, a constant for biases."""

from __future__ import annotations

from typing import Callable, Optional

import torch
from torch import nn

from trainlab.config import instantiate
from trainlab.errors import ConfigError

# Layers whose weights an initializer sets; norm layers keep their identity start (weight 1, bias 0).
INITIALIZED = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)


@torch.no_grad()
def initialize(model: nn.Module, weight: Optional[Callable] = None, bias: Optional[float] = None) -> int:
    """Apply `weight(tensor)` to each linear/conv weight and fill biases with `bias`; return layers touched."""
    touched = 0
    for module in model.modules():
        if not isinstance(module, INITIALIZED):
            continue
        if weight is not None:
            weight(module.weight)
        if bias is not None and module.bias is not None:
            nn.init.constant_(module.bias, bias)
        touched += 1
    return touched


def apply_init(model: nn.Module, init_cfg) -> int:
    """Initialize `model` as the `init` config says (weight: a partial torch.nn.init fn or null; bias: float or null)."""
    weight = instantiate(init_cfg.weight, "init.weight") if init_cfg.get("weight") is not None else None
    try:
        return initialize(model, weight, init_cfg.get("bias"))
    except (ValueError, TypeError) as error:
        raise ConfigError(f"init: {error}") from None
