"""Where a run's numbers first stopped being finite: weights, activations (forward order) or gradients.

Called once, on the failure path only (it syncs freely): the Trainer has just read a NaN/Inf loss and
asks which layer to name in its message.
"""

from __future__ import annotations

from typing import Callable, Optional

import torch
from torch import nn


def _finite(value) -> bool:
    tensors = [value] if isinstance(value, torch.Tensor) else [v for v in (value if isinstance(value, (tuple, list))
                                                                             else []) if isinstance(v, torch.Tensor)]
    return all(bool(torch.isfinite(t).all()) for t in tensors if t.is_floating_point())


def first_nonfinite(model: nn.Module, loss_of: Callable[[], torch.Tensor]) -> Optional[str]:
    """'weights of <name>', 'output of <module>' (the first in forward order) or 'gradient of <name>';
    None when all is finite. `loss_of()` runs the forward pass of the failing batch and returns its loss."""
    for name, parameter in model.named_parameters():
        if not bool(torch.isfinite(parameter).all()):
            return f"weights of {name}"
    found: list[str] = []
    names = {module: name for name, module in model.named_modules() if name}

    def hook(module, inputs, output):
        if not found and not _finite(output):
            found.append(names.get(module, type(module).__name__))

    handles = [module.register_forward_hook(hook) for module in names if not list(module.children())]
    try:
        model.zero_grad(set_to_none=True)
        loss = loss_of()
    finally:
        for handle in handles:
            handle.remove()
    if found:
        return f"output of {found[0]}"
    if loss.requires_grad:
        loss.backward()
        for name, parameter in model.named_parameters():
            if parameter.grad is not None and not bool(torch.isfinite(parameter.grad).all()):
                return f"gradient of {name}"
    return None
