"""Stop when the monitored metric has not improved by more than `min_delta` for `patience` epochs."""

from __future__ import annotations

import math
from typing import Optional

from trainlab.callbacks.base import Callback, EpochEnd, RunInfo
from trainlab.checks import is_int, is_number, require
from trainlab.errors import ConfigError


class EarlyStopping(Callback):
    order = 10  # before the checkpoint, so last.pt holds this epoch's count
    every_rank = True  # every rank stops at the same epoch: the metrics it reads are reduced ones

    def __init__(self, patience: Optional[int] = None, min_delta: float = 0.0):
        self.patience = require("patience", patience, lambda v: v is None or (is_int(v) and v >= 1),
                                "null (off) or a whole number >= 1 (epochs)")
        self.min_delta = require("min_delta", min_delta, lambda v: is_number(v) and math.isfinite(v) and v >= 0,
                                 "a number >= 0")
        self.enabled = patience is not None
        self.monitor, self.mode = "val/acc", "max"
        self.best: Optional[float] = None
        self.best_epoch: Optional[int] = None
        self.bad_epochs = 0

    def setup(self, run: RunInfo) -> None:
        super().setup(run)
        self.monitor, self.mode = run.monitor, run.mode

    def update(self, epoch: int, metrics: dict[str, float]) -> Optional[str]:
        """Record this epoch's metrics; return the reason to stop, or None to go on."""
        value = metrics[self.monitor]
        if self.best is None or (value > self.best + self.min_delta if self.mode == "max"
                                 else value < self.best - self.min_delta):
            self.best, self.best_epoch, self.bad_epochs = value, epoch, 0
            return None
        self.bad_epochs += 1
        if self.bad_epochs < self.patience:
            return None
        return (f"{self.monitor} did not improve by more than {self.min_delta:g} for {self.patience} epochs "
                f"(best {self.best:.4g} at epoch {self.best_epoch})")

    def on_epoch_end(self, trainer, end: EpochEnd) -> None:
        reason = self.update(end.epoch, end.metrics)
        if reason is not None and end.stop is None:
            end.stop = reason

    def state_dict(self) -> dict:
        return {"best": self.best, "best_epoch": self.best_epoch, "bad_epochs": self.bad_epochs}

    def load_state_dict(self, state: dict) -> None:
        self.best, self.best_epoch, self.bad_epochs = state["best"], state["best_epoch"], state["bad_epochs"]
        if self.patience is not None and self.bad_epochs >= self.patience:
            raise ConfigError(f"that run stopped early ({self.bad_epochs} epochs without improvement); "
                              "there is nothing to continue")
