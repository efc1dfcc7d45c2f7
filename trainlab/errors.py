"""Errors a person is meant to read: one line naming the problem and what to do."""

from __future__ import annotations


class TrainlabError(Exception):
    """A problem with the user's input or environment (not a bug): printed without a traceback."""


class ConfigError(TrainlabError):
    """A config key has a wrong type, an impossible value, or names something that does not exist."""


class DataNotFoundError(TrainlabError):
    """A dataset's files are nowhere on disk and could not be downloaded."""


class TrainingDiverged(TrainlabError):
    """The training loss became NaN or infinite: the run cannot recover. `details` holds the figures
    (step, epoch, lr, the first non-finite layer) that summary.json records."""

    def __init__(self, message: str, details: dict | None = None):
        super().__init__(message)
        self.details = dict(details or {})


class CannotWrite(TrainlabError):
    """A file of the run could not be written (the disk is full, the folder read-only or in the way)."""

    def __init__(self, path, reason: str):
        super().__init__(f"could not write {path}: {reason}; {WRITE_ADVICE}")
        self.path = path


WRITE_ADVICE = "free some space or choose another output folder (hydra.run.dir=..., hydra.sweep.dir=...)"
MODEL_ADVICE = "make the model smaller (model.channels, model.hidden, model.width, or a smaller model=)"
MEMORY_ADVICE = f"make trainer.batch_size smaller, or {MODEL_ADVICE.replace('make ', '', 1)}"
DEBUG_HINT = "TRAINLAB_DEBUG=1 shows the traceback"


def is_out_of_memory(error: BaseException) -> bool:
    """torch.OutOfMemoryError (CUDA, MPS) or the CPU allocator's refusal (a RuntimeError), or MemoryError."""
    text = str(error)
    return (isinstance(error, MemoryError) or type(error).__name__ == "OutOfMemoryError"
            or (isinstance(error, RuntimeError) and ("can't allocate memory" in text or "out of memory" in text)))


def memory_asked(error: BaseException) -> str:
    """'it asks for 3725.3 GiB' from an allocator's message, else the message's first line."""
    import re

    found = re.search(r"allocate (\d+) bytes|Tried to allocate ([\d.]+ [KMGT]i?B)", str(error))
    if not found:
        return first_line(error, 160)
    return f"it asks for {int(found.group(1)) / 2**30:.1f} GiB" if found.group(1) else f"it asks for {found.group(2)}"


def first_line(error: BaseException, limit: int = 300) -> str:
    lines = [line.strip() for line in str(error).strip().splitlines() if line.strip()]
    return (lines[0] if lines else type(error).__name__)[:limit]


def explain(error: BaseException) -> tuple[str, int]:
    """An exception that reached the command line as (one line for a person, exit status). Our own errors
    (exit 2) say what to do already; a full disk, a read-only folder and running out of memory get advice
    (exit 1); anything else is a bug or a library's failure, named in one line (exit 1)."""
    import errno

    if isinstance(error, TrainlabError):
        return str(error), 2
    if is_out_of_memory(error):
        return f"out of memory ({memory_asked(error)}); {MEMORY_ADVICE}", 1
    if isinstance(error, OSError):
        where = error.filename or "a file"
        reason = error.strerror or first_line(error)
        if error.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EROFS, errno.EACCES, errno.EPERM,
                           errno.ENOTDIR, errno.EEXIST, errno.EISDIR):
            return f"could not write {where}: {reason}; {WRITE_ADVICE}", 1
        return f"{where}: {reason}", 1
    return f"unexpected {type(error).__name__}: {first_line(error)} ({DEBUG_HINT})", 1


def one_line(error: BaseException) -> tuple[str, int]:
    """explain(), with an unexpected error named plainly (its type and first line) for a place that keeps
    or shows no traceback beside it; (line, exit status)."""
    message, status = explain(error)
    if message.startswith("unexpected "):
        message = f"{type(error).__name__}: {first_line(error)}"
    return message, status


def debugging() -> bool:
    """TRAINLAB_DEBUG=1 (the command line also sets it when the user set Hydra's HYDRA_FULL_ERROR=1): let
    tracebacks through instead of one line."""
    import os

    return os.environ.get("TRAINLAB_DEBUG", "") not in ("", "0")
