"""An exponential moving average of the model (Polyak averaging), for trainer.ema.

torch.optim.swa_utils.AveragedModel with get_ema_multi_avg_fn(decay) and use_buffers=True: parameters
*and* buffers (batch-norm statistics) are averaged, w_ema <- decay * w_ema + (1 - decay) * w, and the first
update copies the model. Its `n_averaged` counter stays on the CPU (AveragedModel's default), so the
"first update?" test inside update_parameters is a CPU comparison, not a device sync.
"""

from __future__ import annotations


import torch
from torch import nn
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn


def build_ema(model: nn.Module, decay: float) -> AveragedModel:
    if not 0.0 < decay < 1.0:
        raise ValueError(f"EMA decay={decay} must be in (0, 1)")
    ema = AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(decay), use_buffers=True)
    ema.n_averaged = ema.n_averaged.cpu()  # see the module note: keep the counter's test off the device
    ema.requires_grad_(False)
    ema.decay = decay
    return ema


def ema_weights(ema: AveragedModel) -> dict[str, torch.Tensor]:
    """The averaged model's state dict with the model's own keys (loadable into the model, e.g. for best.pt)."""
    return ema.module.state_dict()
