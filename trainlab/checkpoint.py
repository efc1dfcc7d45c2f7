"""Checkpoints: written atomically, read back with torch.load(weights_only=True).

A checkpoint holds only tensors and plain Python values (no pickled classes), so it loads safely and
outside trainlab. The callback that writes best.pt and last.pt each epoch is trainlab/callbacks/checkpoint.py.
"""

from __future__ import annotations

import os
import re
import tempfile
from pathlib import Path
from typing import Any

import torch

from trainlab.errors import CannotWrite, ConfigError, first_line

FORMAT = "trainlab-checkpoint-v1"


def save_atomic(payload: dict, path: Path) -> None:
    """torch.save to a temporary file beside `path`, flushed and fsynced, then renamed over it and the folder
    fsynced: a crash never leaves half a file, and the older good file stays until the new one is complete."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as error:
        raise CannotWrite(path, error.strerror or str(error)) from None
    umask = os.umask(0)
    os.umask(umask)
    try:
        os.fchmod(handle, 0o666 & ~umask)  # mkstemp makes 0600; a checkpoint is an ordinary file
        with os.fdopen(handle, "wb") as file:
            torch.save(payload, file)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, path)
    except BaseException as error:
        Path(temporary).unlink(missing_ok=True)
        if isinstance(error, Exception) and not isinstance(error, CannotWrite):
            raise CannotWrite(path, write_failure(error, path.parent)) from error
        raise
    sync_folder(path.parent)


def write_failure(error: Exception, folder: Path) -> str:
    """Why a write failed, in words: torch.save reports a full disk as a RuntimeError of its zip writer
    ("file write failed"), so the folder's free space tells that case apart."""
    import shutil

    if isinstance(error, OSError) and error.strerror:
        return error.strerror
    try:
        if shutil.disk_usage(folder).free < 1 << 20:
            return "no space left on the device"
    except OSError:
        pass
    return first_line(error)


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


def unreadable(error: Exception, path: Path) -> str:
    """Why torch.load(weights_only=True) refused `path`, in words, told by what the file starts with (the
    error texts differ with where a file was cut). PyTorch's own message advises retrying with
    weights_only=False, which would run code from the file: it is never repeated, and never done."""
    found = re.search(r"GLOBAL (\S+)", str(error))
    if found:  # "Unsupported global": a pickled class or function
        return f"it holds a pickled Python object ({found.group(1)}), which is not loaded: it could run code"
    try:
        with open(path, "rb") as file:
            head = file.read(4)
    except OSError as reading:
        return reading.strerror or first_line(reading)
    if not head:
        return "it is empty"
    if head.startswith(b"PK\x03\x04") or head[:1] == b"\x80":  # torch.save's zip, or its older pickle format
        return "it is truncated or damaged"
    return "it is not a PyTorch file"


def read_checkpoint(path: Path, source: str, wanted: str, **load_args: Any) -> Any:
    """torch.load(weights_only=True) of a checkpoint named by the config key `source` (e.g.
    "trainer.resume=run"): a file it cannot read is one line naming the key, the file and why."""
    try:
        try:
            return torch.load(path, map_location="cpu", weights_only=True, **load_args)
        except RuntimeError:
            if not load_args.get("mmap"):
                raise
            return torch.load(path, map_location="cpu", weights_only=True)  # an old, non-zip file cannot be mapped
    except Exception as error:  # truncated, corrupt, or pickled objects: never retried with weights_only=False
        raise ConfigError(f"{source}: {path} is not a readable trainlab checkpoint ({unreadable(error, path)}); "
                          f"give the {wanted} of a trainlab run") from None


def load_for_resume(path: Path, value: str) -> dict:
    """checkpoint.load for trainer.resume: a file that is not a readable trainlab checkpoint is one line."""
    payload = read_checkpoint(path, f"trainer.resume={value}", "last.pt")
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise ConfigError(f"trainer.resume={value}: {path} is a PyTorch file but not a trainlab checkpoint; "
                          "give the last.pt of a trainlab run")
    return payload
