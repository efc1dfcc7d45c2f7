"""Histograms of every weight tensor, its gradient and each layer's activations, every `every` steps.

Off by default: each interval moves every weight and gradient to the host (the cost is in README's
Speed section). Turn on with `callbacks=[default,histograms]`.
"""

from __future__ import annotations

from trainlab.callbacks.activation_stats import ActivationStats
from trainlab.checks import is_int, require


class Histograms(ActivationStats):
    order = 47

    def __init__(self, every: int = 200, activations: bool = True, sample: int = 100_000):
        super().__init__(every)
        self.activations = require("activations", activations, lambda v: isinstance(v, bool), "true or false")
        self.sample = require("sample", sample, lambda v: is_int(v) and v >= 100, "a whole number >= 100")

    def on_step(self, trainer) -> None:
        if self.recorder is not None:
            self.disarm(trainer)
        if trainer.step % self.every == 0 and self.writer is not None:  # grads of this step are still there
            for name, parameter in trainer.model.named_parameters():
                if not parameter.requires_grad:
                    continue
                self.writer.add_histogram(f"weights/{name}", parameter.detach().float().cpu(), trainer.step)
                if parameter.grad is not None:
                    self.writer.add_histogram(f"gradients/{name}", parameter.grad.detach().float().cpu(), trainer.step)
        if self.activations and (trainer.step + 1) % self.every == 0:
            self.arm(trainer, keep_outputs=True)

    @property
    def writer(self):
        return self.board.writer if getattr(self, "board", None) is not None else None

    def on_log(self, trainer, scalars: dict[str, float]) -> None:
        if self.measured is None:
            return
        step, recorder = self.measured
        self.measured = None
        if self.writer is not None:
            for name, values in recorder.outputs():  # one transfer
                self.writer.add_histogram(f"activations/{name}", values, step)
