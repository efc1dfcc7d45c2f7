"""The console as a callback: the header and model table at start, a progress bar and one line per
epoch, the closing table. Everything it prints also goes to <run>/train.log."""

from __future__ import annotations

import contextlib
import math
from typing import Optional

from trainlab.callbacks.base import Callback, EpochEnd
from trainlab.checks import require
from trainlab.monitor.console import ConsoleReporter


def transfer_lines(transfer: dict, params: int) -> list[str]:
    """What transfer learning did: what was loaded, what is new, what is frozen."""
    lines = []
    if transfer.get("loaded"):
        lines.append(f"loaded {transfer['loaded']} tensors from {transfer['pretrained']}; newly initialised: "
                     f"{', '.join(transfer['new']) or 'none'}")
    if transfer.get("freeze", "none") != "none":
        lines.append(f"frozen: model.freeze={transfer['freeze']} ({transfer['frozen']} tensors); "
                     f"trainable parameters {transfer['trainable_params']:,} of {params:,}")
        if not transfer["pretrained"]:
            lines.append("note: model.freeze without model.pretrained: the frozen layers keep their random init")
    return lines


class Console(Callback):
    order = 40  # last: it shows what the others decided (best epoch, early stop)
    resume_free = ("*",)

    def __init__(self, progress: bool = True, model_summary: bool = True):
        self.progress = require("progress", progress, lambda v: isinstance(v, bool), "true or false")
        self.model_summary = require("model_summary", model_summary, lambda v: isinstance(v, bool), "true or false")
        self.reporter = ConsoleReporter(progress=progress)
        self._stack: Optional[contextlib.ExitStack] = None
        self._bar_scope: Optional[contextlib.ExitStack] = None
        self._bar = None

    @property
    def wants_steps(self) -> bool:
        return self.reporter.show_progress  # a live bar only on a terminal: no per-step call otherwise

    def info(self, message: str) -> None:
        self.reporter.info(message)

    def on_fit_start(self, trainer, start_epoch: int) -> None:
        summary = self.run.summary
        for notice in self.run.notices:
            self.info(notice)
        if self.model_summary:
            from trainlab.monitor.model_summary import summarize

            rows = summarize(trainer.model, self.run.input_shape, trainer.device)
            self.reporter.model_table(rows, summary["params"], summary["trainable_params"])
        choices = " ".join(f"{k}={v}" for k, v in summary.get("choices", {}).items())
        devices = summary.get("devices", 1)
        where = f"{summary['device']}, {devices} processes (data parallel)" if devices > 1 else summary["device"]
        self.info(f"trainlab: {choices} on {where}; {summary['params']:,} parameters; "
                  f"train {summary['train_size']:,} / val {summary['val_size']:,} / test {summary['test_size']:,}")
        for line in transfer_lines(summary.get("transfer", {}), summary["params"]):
            self.info(line)
        if summary.get("resumed_from"):
            inside = trainer.resume_progress
            where = f" (inside it: batch {inside['batch'] + 1}, step {trainer.step + 1})" if inside else ""
            self.info(f"resuming {summary['resumed_from']} at epoch {start_epoch}{where}")
        self._stack = contextlib.ExitStack()
        self._stack.enter_context(self.reporter.fitting())

    def on_epoch_start(self, trainer, epoch: int, epochs: int) -> None:
        steps = math.ceil(len(trainer.train_loader) / trainer.settings.accumulate)
        self._bar_scope = contextlib.ExitStack()
        self._bar = self._bar_scope.enter_context(self.reporter.epoch(epoch, epochs, steps))

    def on_step(self, trainer) -> None:
        self._bar.advance()

    def on_log(self, trainer, scalars: dict[str, float]) -> None:
        if self._bar is not None:
            self._bar.loss(scalars["train/loss"])

    def _close_bar(self) -> None:
        if self._bar_scope is not None:
            self._bar_scope.close()
        self._bar_scope = self._bar = None

    def on_epoch_end(self, trainer, end: EpochEnd) -> None:
        self._close_bar()
        self.reporter.epoch_line(end.epoch, end.epochs, end.metrics, end.lr, end.seconds, end.is_best)
        if end.stop is not None:
            self.info(f"early stopping after epoch {end.epoch}: {end.stop}")

    def on_fit_end(self, trainer, result, error: Optional[BaseException]) -> None:
        self._close_bar()
        if self._stack is not None:
            self._stack.close()
            self._stack = None

    def on_test_end(self, trainer, summary: dict) -> None:
        self.reporter.closing_table(summary)
