"""The callback protocol: the few events the Trainer fires, and what each one carries.

The hot loop stays hard-wired. Events per epoch are cheap (a Python call each); `on_step` runs after
every optimizer step, so the Trainer calls it only on callbacks that override it (see `wants_steps`).
`on_log` carries values the Trainer has already read from the device at its log interval, so a callback
never adds a host sync of its own. A callback with state has `state_dict`/`load_state_dict`; last.pt
saves it under the callback's name and resuming restores it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Optional

if TYPE_CHECKING:  # the Trainer imports this module, not the other way round
    from trainlab.train import FitResult, Trainer


@dataclass
class RunInfo:
    """What callbacks need to know about the run they serve, beyond the Trainer itself."""

    run_dir: Optional[Any] = None         # pathlib.Path of the run folder (None: write nothing)
    monitor: str = "val/acc"              # the metric that picks best.pt (val_ema/* with ema.select_best)
    mode: str = "max"
    config: dict = field(default_factory=dict)       # the resolved config, plain
    summary: dict = field(default_factory=dict)      # what the command knows so far (choices, sizes, ...)
    checkpoint_extra: dict = field(default_factory=dict)  # saved in every checkpoint (preprocess, classes)
    input_shape: tuple = ()
    notices: list = field(default_factory=list)      # one-line notes from building (fallbacks and the like)
    data: Optional[Any] = None                       # the DataBundle (loaders, classes, augmentation), if any
    test_confusion: Optional[Any] = None             # [true, predicted] counts of the test pass (after fit)
    val_confusion: Optional[Any] = None              # the same of the validation split (data-parallel runs)


@dataclass
class EpochEnd:
    """One finished epoch: metrics in; callbacks may mark it best or ask to stop (with the reason)."""

    epoch: int
    epochs: int
    metrics: dict[str, float]
    lr: float              # the rate the epoch's last optimizer step used
    seconds: float
    is_best: bool = False
    stop: Optional[str] = None


class Callback:
    """Override the events you need. `order` sorts callbacks (lower first) within every event."""

    order = 50
    # Config keys of this callback that may differ between a run and its resumption (they change what
    # is shown, not what is computed); "*" for all of them.
    resume_free: tuple[str, ...] = ()
    # In a data-parallel run: True for a callback every rank runs (it changes what is trained or when the
    # run stops, from values that are the same on every rank); the others (writers, the console,
    # diagnostics) run on rank 0 alone.
    every_rank = False

    def setup(self, run: RunInfo) -> None:
        """Called once by the build, before fit, with what the run knows."""
        self.run = run

    @property
    def wants_steps(self) -> bool:
        """Whether on_step must be called after every optimizer step (default: when overridden)."""
        return type(self).on_step is not Callback.on_step

    def on_fit_start(self, trainer: "Trainer", start_epoch: int) -> None: ...
    def on_epoch_start(self, trainer: "Trainer", epoch: int, epochs: int) -> None: ...
    def on_step(self, trainer: "Trainer") -> None: ...
    def on_log(self, trainer: "Trainer", scalars: dict[str, float]) -> None: ...
    def on_validation_end(self, trainer: "Trainer", metrics: dict[str, float]) -> None:
        """After the validation pass; a callback may add metrics (the EMA adds val_ema/*)."""
    def on_epoch_end(self, trainer: "Trainer", end: EpochEnd) -> None: ...
    def on_save_point(self, trainer: "Trainer", progress: dict) -> None:
        """Inside an epoch, after a step: every trainer.checkpoint_every_steps, and where a signal stops the
        run. `progress` is the epoch's position and running sums (the checkpoint callback saves them)."""
    def on_checkpoint(self, trainer: "Trainer") -> None:
        """Just before last.pt is written: make what was logged so far durable (TensorBoard flushes)."""
    def on_fit_end(self, trainer: "Trainer", result: "FitResult", error: Optional[BaseException]) -> None:
        """Always called, also when fit ends by an exception (`error`)."""
    def on_test_end(self, trainer: "Trainer", summary: dict) -> None:
        """After the command has scored the best weights on the test split; `summary` is summary.json."""

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None: ...


class CallbackList:
    """The callbacks of one fit, by name, sorted by `order`; each event goes to each in turn."""

    def __init__(self, callbacks: Optional[dict[str, Callback]] = None):
        items = sorted((callbacks or {}).items(), key=lambda item: item[1].order)
        self.named = dict(items)
        self.stepping = [cb for cb in self.named.values() if cb.wants_steps]

    def __iter__(self):
        return iter(self.named.values())

    def __getitem__(self, name: str) -> Callback:
        return self.named[name]

    def get(self, name: str) -> Optional[Callback]:
        return self.named.get(name)

    def find(self, kind: type) -> Optional[Callback]:
        """The first callback of class `kind` (e.g. the TensorBoard one, for its writer), or None."""
        return next((cb for cb in self.named.values() if isinstance(cb, kind)), None)

    def fire(self, event: str, *args: Any) -> None:
        for callback in self.named.values():
            getattr(callback, event)(*args)

    def state_dict(self) -> dict[str, dict]:
        return {name: cb.state_dict() for name, cb in self.named.items()}

    def load_state_dict(self, states: dict[str, dict]) -> None:
        for name, cb in self.named.items():
            if name in states:
                cb.load_state_dict(states[name])
