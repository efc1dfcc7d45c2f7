"""A table of the model: each layer (to a depth), its output shape on a real-sized input, its parameters."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn


@dataclass
class LayerRow:
    name: str
    kind: str
    output_shape: str
    params: int


def _shape(output) -> str:
    if isinstance(output, torch.Tensor):
        return "x".join(str(d) for d in output.shape[1:]) or "scalar"
    if isinstance(output, (tuple, list)) and output and isinstance(output[0], torch.Tensor):
        return _shape(output[0]) + (" (+more)" if len(output) > 1 else "")
    return type(output).__name__


@torch.no_grad()
def summarize(model: nn.Module, input_shape, device: torch.device, max_depth: int = 2) -> list[LayerRow]:
    """Rows for the modules down to `max_depth` levels, in the order their forward pass runs.

    One forward pass of a 2-sample zero batch in eval mode (so batch-norm statistics do not move);
    the model's own mode is restored afterwards.
    """
    shapes: dict[str, str] = {}
    order: list[str] = []
    hooks = []
    for name, module in model.named_modules():
        if not name or name.count(".") >= max_depth:
            continue

        def started(_module, _inputs, name=name):  # at the start: parents are listed before their children
            if name not in order:
                order.append(name)

        def finished(_module, _inputs, output, name=name):
            shapes[name] = _shape(output)

        hooks += [module.register_forward_pre_hook(started), module.register_forward_hook(finished)]
    was_training = model.training
    try:
        model.eval()
        model(torch.zeros(2, *input_shape, device=device))
    finally:
        model.train(was_training)
        for hook in hooks:
            hook.remove()
    modules = dict(model.named_modules())
    return [LayerRow(name, type(modules[name]).__name__, shapes[name],
                     sum(p.numel() for p in modules[name].parameters())) for name in order]
