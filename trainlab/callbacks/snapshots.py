"""Snapshot ensembles (Huang et al. 2017, "Snapshot Ensembles: Train 1, get M for free"): keep the weights
at the end of each learning-rate cycle, checkpoints/snapshot_<k>.pt, for `trainlab ensemble members=[<run>]`.

With every_epochs null (the default) a snapshot is taken where a cycle of the schedule ends: for
schedule=cosine_restarts at each restart (after cycle_epochs, then cycle_epochs * cycle_mult, ... of steps,
after any warmup), for schedule=cyclic at each trough (every 2 * half_cycle_epochs), computed from the
schedule's keys as trainlab.optim builds it. For a schedule of your own, where the learning rate, after
falling, rises again at the next optimizer step (a restart; the rate is a Python float read after each
step: no host sync). The weights are copied to the CPU only at a cycle's end. A cycle that ends on an
epoch's last step (the usual set-up: whole-epoch cycles) gets that epoch's validation metrics in its file;
one that ends mid-epoch is written at the epoch's end with `metrics` empty and its `step`.
With every_epochs=N a snapshot is kept at the end of every N-th epoch instead, whatever the schedule.

Each file is in best.pt's format (trainlab.checkpoint.FORMAT; format, epoch, metrics, model, best,
weights, preprocess, config, classes) plus `snapshot` (k, from 1) and `step`, so `trainlab eval` and
`trainlab ensemble` read it like any checkpoint. Switch it on with callbacks=[default,snapshots].
"""

from __future__ import annotations

import math
from typing import Optional

from trainlab.callbacks.base import Callback, EpochEnd, RunInfo
from trainlab.checkpoint import FORMAT, cpu_state, save_atomic
from trainlab.checks import bad, is_int, require

# trainlab's schedules whose learning rate never restarts: with them a snapshot needs every_epochs
WITHOUT_CYCLES = {f"trainlab.optim.{name}_schedule" for name in (
    "constant", "step", "multistep", "exponential", "inverse_time", "inverse_sqrt", "linear", "cosine", "onecycle",
    "plateau")}


COSINE_RESTARTS = "trainlab.optim.cosine_restarts_schedule"
CYCLIC = "trainlab.optim.cyclic_schedule"


def cycle_ends(schedule: dict, steps_per_epoch: int, total_steps: int) -> Optional[set[int]]:
    """The optimizer steps (counted from the start of training) after which a cycle of trainlab's cyclic
    schedules ends, as trainlab.optim builds them (lengths in epochs rounded to whole steps, after the
    warmup); None for any other schedule."""
    target = schedule.get("_target_")
    if target not in (COSINE_RESTARTS, CYCLIC):
        return None
    start = round((schedule.get("warmup_epochs") or 0) * steps_per_epoch)
    ends: set[int] = set()
    if target == COSINE_RESTARTS:
        length, mult = max(1, round(schedule.get("cycle_epochs", 10) * steps_per_epoch)), schedule.get("cycle_mult", 1)
        end = start + length
        while end <= total_steps:
            ends.add(end)
            length *= max(1, int(mult))
            end += length
    else:  # a triangle up and down: a trough every two half cycles
        period = 2 * max(1, round(schedule.get("half_cycle_epochs", 2) * steps_per_epoch))
        ends = set(range(start + period, total_steps + 1, period))
    return ends


class Snapshots(Callback):
    order = 22  # after the checkpoint callback (its best() goes into each file)
    resume_free = ("*",)  # what is kept, not what is computed: may be switched on when resuming

    def __init__(self, every_epochs: Optional[int] = None):
        self.every_epochs = require("every_epochs", every_epochs, lambda v: v is None or (is_int(v) and v >= 1),
                                    "null (at the end of each cycle of the schedule) or a whole number >= 1")
        self.count = 0                    # snapshots written so far (k of the last one)
        self.next_lr: Optional[float] = None  # the rate the next optimizer step will use
        self.falling = False              # whether the rate fell into the step just taken
        self.pending: list[tuple[int, dict]] = []  # (step, CPU weights) of cycle ends not yet written
        self.folder = None
        self.ends: Optional[set[int]] = None  # the cycle ends of a known cyclic schedule (else: detected)

    @property
    def wants_steps(self) -> bool:
        return self.every_epochs is None

    def setup(self, run: RunInfo) -> None:
        super().setup(run)
        self.folder = run.run_dir / "checkpoints" if run.run_dir is not None else None
        schedule = (run.config.get("schedule") or {}).get("_target_") if run.config else None
        if self.every_epochs is None and schedule in WITHOUT_CYCLES:
            name = schedule.rsplit(".", 1)[-1].removesuffix("_schedule")
            raise bad("callbacks.snapshots.every_epochs", None,
                      f"schedule={name} has no cycles, so no snapshot would be kept",
                      "use schedule=cosine_restarts or schedule=cyclic, or keep one every N epochs: "
                      "callbacks.snapshots.every_epochs=N")

    def on_fit_start(self, trainer, start_epoch: int) -> None:
        if self.next_lr is None:  # (a resumed run has it from last.pt)
            self.next_lr = trainer.lr
        config = self.run.config or {}
        epochs = (config.get("trainer") or {}).get("epochs")
        loader = getattr(trainer, "train_loader", None)
        if config.get("schedule") and epochs and loader is not None:
            steps_per_epoch = math.ceil(len(loader) / trainer.settings.accumulate)
            self.ends = cycle_ends(config["schedule"], steps_per_epoch, epochs * steps_per_epoch)

    def on_step(self, trainer) -> None:
        used, upcoming = self.next_lr, trainer.lr  # the schedule has stepped: `upcoming` is the next step's
        if self.ends is not None:
            if trainer.step in self.ends:
                self.pending.append((trainer.step, cpu_state(trainer.model.state_dict())))
        elif used is not None:
            if self.falling and upcoming > used:  # a trough (cyclic) or a restart (cosine_restarts)
                self.pending.append((trainer.step, cpu_state(trainer.model.state_dict())))
            if upcoming != used:
                self.falling = upcoming < used
        self.next_lr = upcoming

    def on_epoch_end(self, trainer, end: EpochEnd) -> None:
        if self.every_epochs is not None:
            if end.epoch % self.every_epochs == 0:
                self.write(trainer, end, trainer.step, cpu_state(trainer.model.state_dict()), dict(end.metrics))
            return
        for step, weights in self.pending:  # the epoch's metrics only for a cycle that ended on its last step
            self.write(trainer, end, step, weights, dict(end.metrics) if step == trainer.step else {})
        self.pending = []

    def write(self, trainer, end: EpochEnd, step: int, weights: dict, metrics: dict) -> None:
        self.count += 1
        if self.folder is None:
            return
        saver = next((cb for cb in trainer.callbacks if hasattr(cb, "best_path") and hasattr(cb, "best")), None)
        payload = {"format": FORMAT, "epoch": end.epoch, "step": step, "metrics": metrics, "model": weights,
                   "best": saver.best() if saver is not None else {}, "weights": "model", "snapshot": self.count,
                   **self.run.checkpoint_extra}
        save_atomic(payload, self.folder / f"snapshot_{self.count}.pt")

    def state_dict(self) -> dict:
        return {"count": self.count, "next_lr": self.next_lr, "falling": self.falling}

    def load_state_dict(self, state: dict) -> None:
        self.count = int(state.get("count", 0))
        self.next_lr = state.get("next_lr")
        self.falling = bool(state.get("falling", False))
