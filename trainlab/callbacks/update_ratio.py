"""The update/weight ratio ||dw|| / ||w|| of each weight tensor, every `every` optimizer steps.

The playbook's rule of thumb: about 1e-3 is healthy; much higher (1e-2 and up) means the learning rate
is likely too high, much lower (1e-5 and down) too low. The ratios are computed on the device with
foreach norms (no host sync) and read at the next log interval, where the Trainer syncs anyway. At the
end of an epoch whose median ratio stayed outside [low, high], the console says so (once per run).
"""

from __future__ import annotations

import statistics
from typing import Optional

import torch

from trainlab.callbacks.base import Callback, EpochEnd
from trainlab.checks import KeyProblem, is_int, is_number, require


class UpdateRatio(Callback):
    order = 45  # after TensorBoard opened its writer and after the console's epoch line (its note follows it)
    resume_free = ("*",)

    def __init__(self, every: int = 50, low: float = 1e-5, high: float = 1e-2, per_tensor: bool = True):
        self.every = require("every", every, lambda v: is_int(v) and v >= 1, "a whole number >= 1 (optimizer steps)")
        self.low = require("low", low, lambda v: is_number(v) and v > 0, "a number > 0")
        self.high = require("high", high, lambda v: is_number(v) and v > 0, "a number > 0")
        if high <= low:
            raise KeyProblem("high", high, f"must be above callbacks.update_ratio.low={low:g}")
        self.per_tensor = require("per_tensor", per_tensor, lambda v: isinstance(v, bool), "true or false")
        self.names: list[str] = []
        self.params: list[torch.Tensor] = []
        self.before: Optional[list[torch.Tensor]] = None
        self.pending: list[tuple[int, torch.Tensor]] = []  # (step, ratios on the device), read at the next log
        self.epoch_medians: list[float] = []
        self.warned = False

    def on_fit_start(self, trainer, start_epoch: int) -> None:
        named = [(n, p) for n, p in trainer.model.named_parameters() if p.requires_grad and p.ndim > 1]
        self.names = [n for n, _ in named]  # weights only: biases start at 0, where the ratio means nothing
        self.params = [p for _, p in named]
        from trainlab.callbacks.tensorboard import TensorBoard

        self.board = trainer.callbacks.find(TensorBoard)

    def on_step(self, trainer) -> None:
        if not self.params:
            return
        if self.before is not None:  # the step just taken is the one measured
            with torch.no_grad():
                deltas = torch._foreach_sub([p.detach() for p in self.params], self.before)
                ratios = torch.stack(torch._foreach_norm(deltas)) / torch.stack(torch._foreach_norm(self.before)).clamp_min(1e-12)
            self.pending.append((trainer.step, ratios))
            self.before = None
        if (trainer.step + 1) % self.every == 0:  # keep the weights the next step starts from
            self.before = [p.detach().clone() for p in self.params]

    def on_log(self, trainer, scalars: dict[str, float]) -> None:
        if not self.pending:
            return
        values = torch.stack([r for _, r in self.pending]).float().cpu().tolist()  # one transfer, after the Trainer's
        for (step, _), ratios in zip(self.pending, values):
            median = statistics.median(ratios)
            self.epoch_medians.append(median)
            if self.board is not None:
                self.board.scalars({"update_ratio/median": median}, step)
                if self.per_tensor:
                    self.board.scalars({f"update_ratio/{n}": r for n, r in zip(self.names, ratios)}, step)
        self.pending = []

    def on_epoch_end(self, trainer, end: EpochEnd) -> None:
        medians, self.epoch_medians = self.epoch_medians, []
        if not medians or self.warned:
            return
        median = statistics.median(medians)
        if median > self.high or median < self.low:
            self.warned = True
            direction = ("too high: the weights change fast; lower optimizer.lr" if median > self.high
                         else "too low: the weights barely move; raise optimizer.lr or check the init")
            from trainlab.callbacks.console import Console

            console = trainer.callbacks.find(Console)
            message = (f"note: the median update/weight ratio in epoch {end.epoch} was {median:.1e}, outside "
                       f"[{self.low:g}, {self.high:g}] (about 1e-3 is healthy): {direction}")
            if console is not None:
                console.info(message)
