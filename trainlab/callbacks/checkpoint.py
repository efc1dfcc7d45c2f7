"""checkpoints/best.pt (by the monitored metric) and checkpoints/last.pt (everything to resume): each epoch,
and at save points inside one (trainer.checkpoint_every_steps, and the step where a signal stopped the run)."""

from __future__ import annotations

import math
from typing import Callable, Optional

from trainlab.callbacks.base import Callback, EpochEnd, RunInfo
from trainlab.checkpoint import FORMAT, cpu_state, save_atomic
from trainlab.checks import require


class Checkpoint(Callback):
    """best.pt holds the weights that scored best on `monitor` (the EMA's when the run selects on val_ema/*),
    with the preprocessing statistics, classes and resolved config; last.pt the trained weights plus the
    Trainer's state (optimizer, schedule, RNGs, step, every callback's state)."""

    order = 20  # after early stopping (its state goes into last.pt), before the console (the "* best" mark)

    def __init__(self, save_last: bool = True):
        self.save_last = require("save_last", save_last, lambda v: isinstance(v, bool), "true or false")
        self.best_weights: Optional[Callable[[], dict]] = None  # set by the build when best.pt holds the EMA
        self.best_value = -math.inf
        self.best_epoch: Optional[int] = None

    def setup(self, run: RunInfo) -> None:
        super().setup(run)
        self.monitor, self.mode = run.monitor, run.mode
        self.best_value = -math.inf if self.mode == "max" else math.inf
        self.folder = run.run_dir / "checkpoints" if run.run_dir is not None else None

    @property
    def best_path(self):
        return self.folder / "best.pt"

    @property
    def last_path(self):
        return self.folder / "last.pt"

    def improved(self, value: float) -> bool:
        return value > self.best_value if self.mode == "max" else value < self.best_value

    def best(self) -> dict:
        return {"metric": self.monitor, "mode": self.mode, "value": self.best_value, "epoch": self.best_epoch}

    def on_epoch_end(self, trainer, end: EpochEnd) -> None:
        end.is_best = self.improved(end.metrics[self.monitor])
        if end.is_best:
            self.best_value, self.best_epoch = end.metrics[self.monitor], end.epoch
        if self.folder is None:
            return
        common = {"format": FORMAT, "epoch": end.epoch, "metrics": dict(end.metrics),
                  "model": cpu_state(trainer.model.state_dict()), "best": self.best(), **self.run.checkpoint_extra}
        if end.is_best:
            weights = ({"model": self.best_weights(), "weights": "ema"} if self.best_weights is not None
                       else {"weights": "model"})
            save_atomic({**common, **weights}, self.best_path)
        if self.save_last:
            self.save_last_state(trainer, {**common, **trainer.state_dict()})

    def on_save_point(self, trainer, progress: dict) -> None:
        """last.pt inside epoch `progress["epoch"]`: its `epoch` is the last finished one, its `progress` the
        position and running sums the Trainer continues the epoch from (no epoch metrics: none exist yet)."""
        if self.folder is None or not self.save_last:
            return
        self.save_last_state(trainer, {"format": FORMAT, "epoch": progress["epoch"] - 1, "metrics": {},
                                       "model": cpu_state(trainer.model.state_dict()), "best": self.best(),
                                       **self.run.checkpoint_extra, **trainer.state_dict(progress)})

    def save_last_state(self, trainer, payload: dict) -> None:
        """What was logged up to this step is made durable first (on_checkpoint: TensorBoard flushes), so a
        run resumed from this last.pt finds every point before its step and supersedes only later ones."""
        trainer.callbacks.fire("on_checkpoint", trainer)
        save_atomic(payload, self.last_path)

    def state_dict(self) -> dict:
        return {"best_value": self.best_value, "best_epoch": self.best_epoch}

    def load_state_dict(self, state: dict) -> None:
        self.best_value, self.best_epoch = state["best_value"], state["best_epoch"]
