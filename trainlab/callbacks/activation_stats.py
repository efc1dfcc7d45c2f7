"""Per-layer activation statistics of a training batch every `every` steps: mean, std, and the fraction of
dead units (ReLU family) or saturated outputs (tanh/sigmoid), as TensorBoard scalars.

Hooks (trainlab.diagnostics.activations.ActivationRecorder) are on the model for one training forward pass
per interval only; they keep their statistics on the device, read at the next log interval, where the
Trainer syncs anyway. A compiled forward (trainer.compile) may not run module hooks: then nothing is logged.
"""

from __future__ import annotations

from typing import Optional

from trainlab.callbacks.base import Callback
from trainlab.checks import is_int, require


class ActivationStats(Callback):
    order = 46
    resume_free = ("*",)

    def __init__(self, every: int = 50):
        self.every = require("every", every, lambda v: is_int(v) and v >= 1, "a whole number >= 1 (optimizer steps)")
        self.recorder = None
        self.measured: Optional[tuple[int, object]] = None  # (step, recorder) waiting to be read

    def on_fit_start(self, trainer, start_epoch: int) -> None:
        from trainlab.callbacks.tensorboard import TensorBoard

        self.board = trainer.callbacks.find(TensorBoard)

    def arm(self, trainer, keep_outputs: bool = False) -> None:
        from trainlab.diagnostics.activations import ActivationRecorder

        self.recorder = ActivationRecorder(trainer.model, keep_outputs=keep_outputs).__enter__()

    def disarm(self, trainer) -> None:
        self.recorder.__exit__(None, None, None)
        self.measured, self.recorder = (trainer.step, self.recorder), None

    def on_step(self, trainer) -> None:
        if self.recorder is not None:  # the forward pass of the step just taken was recorded
            self.disarm(trainer)
        if (trainer.step + 1) % self.every == 0:
            self.arm(trainer)

    def on_log(self, trainer, scalars: dict[str, float]) -> None:
        if self.measured is None:
            return
        step, recorder = self.measured
        self.measured = None
        if self.board is None:
            return
        values = {}
        for row in recorder.read():  # one transfer
            for stat in ("mean", "std", "dead", "saturated"):
                if row[stat] is not None:
                    values[f"activations/{row['name']}/{stat}"] = row[stat]
        self.board.scalars(values, step)

    def on_fit_end(self, trainer, result, error) -> None:
        if self.recorder is not None:
            self.recorder.__exit__(None, None, None)
            self.recorder = None
