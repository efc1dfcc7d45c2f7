"""Errors a person is meant to read: one line naming the problem and what to do."""


class TrainlabError(Exception):
    """A problem with the user's input or environment (not a bug): printed without a traceback."""


class ConfigError(TrainlabError):
    """A config key has a wrong type, an impossible value, or names something that does not exist."""


class DataNotFoundError(TrainlabError):
    """A dataset's files are nowhere on disk and could not be downloaded."""


class TrainingDiverged(TrainlabError):
    """The training loss became NaN or infinite: the run cannot recover."""
