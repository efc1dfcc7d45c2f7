"""Callbacks: what plugs into the Trainer's events (trainlab/callbacks/base.py has the protocol).

Each one is a class plus a YAML in configs/callbacks/; the `callbacks` group is a named dict, so each
can be tuned (`callbacks.ema.decay=0.999`) or dropped (`~callbacks.early_stopping`) from the command line.
"""

from trainlab.callbacks.base import Callback, CallbackList, EpochEnd, RunInfo

__all__ = ["Callback", "CallbackList", "EpochEnd", "RunInfo"]
