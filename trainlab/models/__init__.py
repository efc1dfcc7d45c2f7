"""Models built from the `model` config group; each takes input_shape (C, H, W) and num_classes."""

from __future__ import annotations

from torch import nn

from trainlab.config import instantiate


def build_model(model_cfg, input_shape, num_classes: int) -> nn.Module:
    """The architecture of cfg.model (its transfer-learning keys, pretrained/freeze, are applied elsewhere)."""
    from trainlab.transfer import split_model_config

    architecture, _ = split_model_config(model_cfg)
    model = instantiate(architecture, "model", input_shape=list(input_shape), num_classes=num_classes)
    if not isinstance(model, nn.Module):
        raise TypeError(f"model._target_ built a {type(model).__name__}, not a torch.nn.Module")
    return model


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
