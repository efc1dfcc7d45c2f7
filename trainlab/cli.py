"""`trainlab <command> [overrides]`: dispatch only.

Nothing heavy is imported here: `trainlab --help` and `trainlab train --cfg job` never load torch.
"""

from __future__ import annotations

import sys

USAGE = """usage: trainlab <command> [options] [overrides]

commands:
  train     train a classifier from the composed configs (Hydra overrides: group=option key=value)
            trainlab train optimizer=sgd optimizer.lr=0.05 schedule=step trainer.epochs=3
            trainlab train -m optimizer=sgd,adam        a sweep: one run folder per job
            trainlab train -m --fail-fast ...           a sweep that stops at its first failed job
            trainlab train --help                       config groups and their options
            trainlab train --cfg job                    print the composed config
  augment   write a PNG grid of augmented training images (and log it to TensorBoard)
            trainlab augment augmentation=strong
  schedule  write a PNG of the learning-rate curve a config gives (and print its path)
            trainlab schedule schedule=cosine_restarts trainer.epochs=90
  check     sanity checks before a long run: the initial loss against log(C), overfitting a few
            batches, the loss falling within ~100 steps (exit 1 when one fails, with advice)
            trainlab check optimizer=sgd optimizer.lr=0.05
  lr-find   the learning-rate range test: loss against an exponentially growing lr, a suggestion
            trainlab lr-find optimizer=sgd
  activations  per-layer activation statistics of one batch (at init, or checkpoint=<run folder>)
            trainlab activations dataset=gaussian model=mlp_deep model.activation=tanh init=normal
  report    the runs of a sweep (or any outputs folder) best first, grouped over seeds/folds, as
            tables, summary.csv/json and plots; --html for one self-contained page
            trainlab report outputs/multirun/2026-12-01/10-00-00 --html
  eval      a checkpoint's loss, top-1/top-5, per-class accuracy and confusion matrix, rebuilt
            from the checkpoint's own config and statistics (split=test|val, tta=, dataset=)
            trainlab eval checkpoint=outputs/train/2026-12-01/10-00-00
  ensemble  the test accuracy of several checkpoints' averaged probabilities beside each member's
            (run folders, a sweep folder's top_k runs, or one run's snapshots)
            trainlab ensemble members=[outputs/multirun/2026-12-01/10-00-00] top_k=3

Runs land in outputs/train/<date>/<time>/ (sweeps in outputs/multirun/...);
look at them with: tensorboard --logdir outputs
"""

def commands() -> list[str]:
    """The commands: one module each in trainlab/commands/ (found by name, nothing imported)."""
    import pkgutil

    import trainlab.commands

    return sorted(m.name.replace("_", "-") for m in pkgutil.iter_modules(trainlab.commands.__path__))


def main(argv: list[str] | None = None) -> None:
    """Dispatch, with every error that reaches here as one line and a non-zero exit (a traceback only with
    TRAINLAB_DEBUG=1); Ctrl-C before a run has started exits 130 without one."""
    import os

    from trainlab.errors import debugging, explain

    if os.environ.get("HYDRA_FULL_ERROR") == "1":  # the user asked Hydra for tracebacks: they get ours too
        os.environ["TRAINLAB_DEBUG"] = "1"
    # Hydra then re-raises a job's or its own error (instead of printing a shortened traceback and
    # exiting 1), so it reaches the one place below that turns errors into one line.
    os.environ["HYDRA_FULL_ERROR"] = "1"
    try:
        dispatch(sys.argv[1:] if argv is None else list(argv))
    except KeyboardInterrupt:
        if debugging():
            raise
        import signal

        signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C while exiting adds no traceback
        print("trainlab: interrupted (before the run started: nothing to continue)", file=sys.stderr)
        sys.exit(130)
    except Exception as error:
        if debugging():
            raise
        from hydra.errors import HydraException

        if isinstance(error, HydraException):  # a composition error Hydra raised itself
            from trainlab.commands import composition_message

            message, status = composition_message(error, []), 2
        else:
            message, status = explain(error)
        print(f"trainlab: error: {message}", file=sys.stderr)
        sys.exit(status)


def dispatch(args: list[str]) -> None:
    if not args or args[0] in ("-h", "--help", "help"):
        print(USAGE, end="")
        return
    if args[0] == "--version":
        from trainlab import __version__

        print(f"trainlab {__version__}")
        return
    if args[0] not in commands():
        import difflib

        close = difflib.get_close_matches(args[0], commands(), n=1)
        print(f"trainlab: error: unknown command {args[0]!r}; {f'did you mean {close[0]}? ' if close else ''}"
              f"commands: {', '.join(commands())} (see trainlab --help)", file=sys.stderr)
        sys.exit(2)
    import importlib

    module = importlib.import_module(f"trainlab.commands.{args[0].replace('-', '_')}")
    if hasattr(module, "main"):  # a command that takes paths and flags, not Hydra overrides (report)
        sys.exit(module.main(args[1:]))
    from trainlab.commands import run_command

    run_command(args[0], args[1:])
