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
