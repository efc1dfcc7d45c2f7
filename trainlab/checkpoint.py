"""Checkpoints: written atomically, read back with torch.load(weights_only=True).

A checkpoint holds only tensors and plain Python values (no pickled classes), so it loads safely and
outside trainlab. best.pt: the weights that scored best on the monitored metric, with what is needed
to use them (preprocessing statistics, the resolved config). last.pt: everything needed to resume.
"""

from __future__ import annotations

import math
import os
import tempfile
from pathlib import Path
from typing import Any, Callable, Optional

import torch

from trainlab.errors import ConfigError

FORMAT = "trainlab-checkpoint-v1"


def save_atomic(payload: dict, path: Path) -> None:
    """torch.save to a temporary file beside `path`, then rename: a crash never leaves half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    umask = os.umask(0)
    os.umask(umask)
    try:
        os.fchmod(handle, 0o666 & ~umask)  # mkstemp makes 0600; a checkpoint is an ordinary file
        with os.fdopen(handle, "wb") as file:
            torch.save(payload, file)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def resume_path(value: str) -> Path:
    """trainer.resume names a last.pt file or a run folder (whose checkpoints/last.pt is used)."""
    path = Path(value)
    if path.is_dir():
        path = path / "checkpoints" / "last.pt"
    if not path.is_file():
        raise ConfigError(f"trainer.resume={value}: no checkpoint there (give a last.pt file or a run folder)")
    return path


def load(path: Path | str, map_location: Any = "cpu") -> dict:
    """Read a trainlab checkpoint safely (weights_only: no arbitrary code runs)."""
    payload = torch.load(path, map_location=map_location, weights_only=True)
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise ValueError(f"{path}: not a trainlab checkpoint")
    return payload


def cpu_state(state: dict) -> dict:
    """A copy of a model state dict on the CPU (so best weights survive later training steps)."""
    return {key: value.detach().to("cpu", copy=True) for key, value in state.items()}


class Checkpointer:
    """Keeps <dir>/best.pt (by `monitor`, `mode`) and <dir>/last.pt up to date, one call per epoch."""

    def __init__(self, folder: Path, monitor: str, mode: str, extra: Optional[dict] = None):
        self.folder = Path(folder)
        self.monitor = monitor
        self.mode = mode
        self.extra = dict(extra or {})
        self.best_value = -math.inf if mode == "max" else math.inf
        self.best_epoch: Optional[int] = None

    @property
    def best_path(self) -> Path:
        return self.folder / "best.pt"

    @property
    def last_path(self) -> Path:
        return self.folder / "last.pt"

    def improved(self, value: float) -> bool:
        return value > self.best_value if self.mode == "max" else value < self.best_value

    def update(self, epoch: int, metrics: dict[str, float], model_state: dict, resume_state: dict,
               best_state: Optional[Callable[[], dict]] = None) -> bool:
        """Write last.pt, and best.pt when metrics[monitor] improved; return whether it did.

        last.pt holds `model_state` (the trained model, what resuming continues from). best.pt holds the
        same, or `best_state()` when given (the EMA's weights, whose metrics drive a val_ema/* monitor);
        its "weights" entry says which ("model" or "ema")."""
        value = metrics[self.monitor]
        is_best = self.improved(value)
        if is_best:
            self.best_value, self.best_epoch = value, epoch
        common = {"format": FORMAT, "epoch": epoch, "metrics": dict(metrics), "model": model_state,
                  "best": self.best(), **self.extra}
        if is_best:
            weights = {"model": best_state(), "weights": "ema"} if best_state is not None else {"weights": "model"}
            save_atomic({**common, **weights}, self.best_path)
        save_atomic({**common, **resume_state}, self.last_path)
        return is_best

    def restore(self, best: dict, source_folder: Path) -> None:
        """Continue a resumed run's record: its best value, and its best.pt copied into this run's folder."""
        source = Path(source_folder) / "best.pt"
        if best.get("epoch") is None or not source.is_file():
            return  # nothing to carry over: the first epoch after resuming writes best.pt
        self.best_value, self.best_epoch = best["value"], best["epoch"]
        self.folder.mkdir(parents=True, exist_ok=True)
        if source.resolve() != self.best_path.resolve():
            save_atomic(load(source), self.best_path)

    def best(self) -> dict:
        return {"metric": self.monitor, "mode": self.mode, "value": self.best_value, "epoch": self.best_epoch}
