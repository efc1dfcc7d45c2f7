"""Checkpoints: written atomically, read back with torch.load(weights_only=True).

A checkpoint holds only tensors and plain Python values (no pickled classes), so it loads safely and
outside trainlab. The callback that writes best.pt and last.pt each epoch is trainlab/callbacks/checkpoint.py.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import torch

from trainlab.errors import ConfigError

FORMAT = "trainlab-checkpoint-v1"


def save_atomic(payload: dict, path: Path) -> None:
    """torch.save to a temporary file beside `path`, flushed and fsynced, then renamed over it and the folder
    fsynced: a crash never leaves half a file, and the older good file stays until the new one is complete."""
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
    sync_folder(path.parent)


def sync_folder(folder: Path) -> None:
    """fsync a folder, so a rename in it survives a power cut (POSIX; Windows cannot open a folder)."""
    try:
        handle = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(handle)
    except OSError:
        pass
    finally:
        os.close(handle)


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


def load_for_resume(path: Path, value: str) -> dict:
    """checkpoint.load for trainer.resume: a file that is not a readable trainlab checkpoint is one line."""
    try:
        return load(path)
    except Exception as error:  # truncated, corrupt, or not ours: never retried with weights_only=False
        first = (str(error).strip().splitlines() or [type(error).__name__])[0]
        raise ConfigError(f"trainer.resume={value}: {path} is not a readable trainlab checkpoint ({first[:200]}); "
                          "give the last.pt of a trainlab run") from None
