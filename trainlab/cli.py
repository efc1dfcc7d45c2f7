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
    args = sys.argv[1:] if argv is None else list(argv)
    if not args or args[0] in ("-h", "--help", "help"):
        print(USAGE, end="")
        return
    if args[0] == "--version":
        from trainlab import __version__

        print(f"trainlab {__version__}")
        return
    if args[0] not in commands():
        print(f"trainlab: error: unknown command {args[0]!r}; commands: {', '.join(commands())}"
              " (see trainlab --help)", file=sys.stderr)
        sys.exit(2)
    import importlib

    module = importlib.import_module(f"trainlab.commands.{args[0].replace('-', '_')}")
    if hasattr(module, "main"):  # a command that takes paths and flags, not Hydra overrides (report)
        sys.exit(module.main(args[1:]))
    from trainlab.commands import run_command

    run_command(args[0], args[1:])
