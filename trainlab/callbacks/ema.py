"""An exponential moving average of the weights (Polyak averaging), scored as val_ema/* each epoch.

torch.optim.swa_utils.AveragedModel with get_ema_multi_avg_fn(decay) and use_buffers=True: parameters
*and* buffers (batch-norm statistics) are averaged, w_ema <- decay * w_ema + (1 - decay) * w, and the first
update copies the model. Its `n_averaged` counter stays on the CPU (AveragedModel's default), so the
"first update?" test inside update_parameters is a CPU comparison, not a device sync.
"""

from __future__ import annotations

from typing import Optional

from torch import nn
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

from trainlab.callbacks.base import Callback
from trainlab.checkpoint import cpu_state
from trainlab.checks import KeyProblem, is_int, is_number, require


def build_ema(model: nn.Module, decay: float) -> AveragedModel:
    if not 0.0 < decay < 1.0:
        raise ValueError(f"EMA decay={decay} must be in (0, 1)")
    ema = AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(decay), use_buffers=True)
    ema.n_averaged = ema.n_averaged.cpu()  # see the module note: keep the counter's test off the device
    ema.requires_grad_(False)
    ema.decay = decay
    return ema


class EMA(Callback):
    order = 0  # its val_ema/* metrics are in place before anything reads an epoch's metrics
    every_rank = True  # the averaged weights and their val_ema/* scores (a collective) on every rank

    def __init__(self, decay: Optional[float] = None, every: int = 1, evaluate: bool = True,
                 select_best: bool = False):
        self.decay = require("decay", decay, lambda v: v is None or (is_number(v) and 0.0 < v < 1.0),
                             "null (off) or a number in (0, 1)")
        self.every = require("every", every, lambda v: is_int(v) and v >= 1,
                             "a whole number >= 1 (optimizer steps between EMA updates)")
        self.evaluate = require("evaluate", evaluate, lambda v: isinstance(v, bool), "true or false")
        self.select_best = require("select_best", select_best, lambda v: isinstance(v, bool), "true or false")
        if decay is None and select_best:
            raise KeyProblem("select_best", True, "needs the EMA on", "set callbacks.ema.decay (e.g. 0.999)")
        if select_best and not evaluate:
            raise KeyProblem("select_best", True, "needs callbacks.ema.evaluate=true",
                             "best.pt is chosen on the EMA model's validation metrics")
        self.enabled = decay is not None
        self.averaged: Optional[AveragedModel] = None
        self._pending: Optional[dict] = None  # a resumed state, loaded once the averaged model exists

    def on_fit_start(self, trainer, start_epoch: int) -> None:
        if self.averaged is None:
            self.averaged = build_ema(trainer.model, self.decay)
        if self._pending is not None:
            self.averaged.load_state_dict(self._pending)
            self._pending = None

    def on_step(self, trainer) -> None:
        if trainer.step % self.every == 0:
            self.averaged.update_parameters(trainer.model)

    def on_validation_end(self, trainer, metrics: dict[str, float]) -> None:
        if self.evaluate:
            scored = trainer.evaluate(trainer.val_loader, self.averaged.module)
            metrics.update({"val_ema/loss": scored["loss"], "val_ema/acc": scored["acc"]})

    def weights(self) -> dict:
        """The averaged model's state dict with the model's own keys (loadable into the model)."""
        return cpu_state(self.averaged.module.state_dict())

    def state_dict(self) -> dict:
        return cpu_state(self.averaged.state_dict()) if self.averaged is not None else (self._pending or {})

    def load_state_dict(self, state: dict) -> None:
        if self.averaged is None:
            self._pending = state
        else:
            self.averaged.load_state_dict(state)

