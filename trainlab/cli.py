"""`trainlab <command> [overrides]`: dispatch only.

Nothing heavy is imported here: `trainlab --help` and `trainlab train --cfg job` never load torch.
"""

from __future__ import annotations

import sys
from datetime import datetime
from pathlib import Path
from typing import Callable

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

Runs land in outputs/train/<date>/<time>/ (sweeps in outputs/multirun/...);
look at them with: tensorboard --logdir outputs
"""

# Hydra flags that only show information: no run folder is made for them.
INFO_FLAGS = {"--help", "-h", "--hydra-help", "--cfg", "-c", "--info", "-i", "--version",
              "--shell-completion", "-sc", "--resolve"}


def config_dir() -> Path:
    """The shipped configs: inside the installed package (wheel), else the repository's top level."""
    package = Path(__file__).resolve().parent
    for candidate in (package / "configs", package.parent / "configs"):
        if (candidate / "train.yaml").is_file():
            return candidate
    raise SystemExit("trainlab: error: the configs folder is missing from the installation; reinstall trainlab")


def claim_run_dir(root: Path, now: datetime) -> Path:
    """A new folder root/<date>/<time>, made here so two runs started in the same second never share one."""
    base = root / now.strftime("%Y-%m-%d") / now.strftime("%H-%M-%S")
    base.parent.mkdir(parents=True, exist_ok=True)
    for attempt in range(1000):
        candidate = base if attempt == 0 else base.with_name(f"{base.name}-{attempt}")
        try:
            candidate.mkdir()  # atomic: exactly one process gets each name
            return candidate
        except FileExistsError:
            continue
    raise SystemExit(f"trainlab: error: could not make a new run folder under {base.parent}")


def _overrides_key(args: list[str], key: str) -> bool:
    return any(arg.split("=", 1)[0].lstrip("+~") == key for arg in args)


def hydra_argv(args: list[str], cwd: Path, now: datetime, command: str = "train") -> list[str]:
    """Hydra's argv for `trainlab COMMAND ARGS`: the user's ./configs on the search path, a claimed run folder."""
    argv = list(args)
    user_configs = cwd / "configs"
    if user_configs.is_dir() and user_configs.resolve() != config_dir().resolve() \
            and not any(a in ("--config-dir", "-cd") or a.startswith("--config-dir=") for a in args):
        argv = ["--config-dir", str(user_configs)] + argv
    if any(a.split("=", 1)[0] in INFO_FLAGS for a in args):
        return argv
    multirun = "-m" in args or "--multirun" in args
    key, sub = ("hydra.sweep.dir", "multirun") if multirun else ("hydra.run.dir", command)
    if not _overrides_key(args, key):
        argv.append(f"{key}={claim_run_dir(cwd / 'outputs' / sub, now).as_posix()}")
    return argv


def _train(cfg, run_dir: Path) -> None:
    from trainlab.run import train  # torch is imported here, not before

    train(cfg, run_dir)


def _augment(cfg, run_dir: Path) -> None:
    from trainlab.show import augment_grid

    augment_grid(cfg, run_dir)


def _schedule(cfg, run_dir: Path) -> None:
    from trainlab.schedule_plot import plot_schedule

    plot_schedule(cfg, run_dir)


def guarded(work: Callable, command: str) -> Callable:
    """The Hydra task for `work(cfg, run_dir)`: config checked first, errors as one line, Ctrl-C explained."""

    def task(cfg) -> None:
        from hydra.core.hydra_config import HydraConfig
        from hydra.types import RunMode

        from trainlab.config import validate
        from trainlab.errors import TrainingDiverged, TrainlabError

        run_dir = Path(HydraConfig.get().runtime.output_dir)
        try:
            work(validate(cfg), run_dir)  # validate before torch is imported: bad values fail at once
        except TrainingDiverged as error:
            print(f"trainlab: error: {error}", file=sys.stderr)
            if HydraConfig.get().mode != RunMode.MULTIRUN:
                sys.exit(2)
            # in a sweep, a diverging learning rate is a result (summary.json says "diverged"): go on
        except TrainlabError as error:
            print(f"trainlab: error: {error}", file=sys.stderr)
            sys.exit(2)
        except KeyboardInterrupt:
            if command == "train":
                print("trainlab: interrupted; continue with: trainlab train <same overrides> "
                      f"trainer.resume={run_dir}", file=sys.stderr)
            sys.exit(130)

    return task


def hydra_command(command: str, config_name: str, work: Callable) -> Callable[[list[str]], None]:
    def run(args: list[str]) -> None:
        import hydra

        sys.argv = [f"trainlab {command}"] + hydra_argv(args, Path.cwd(), datetime.now(), command)
        hydra.main(version_base="1.3", config_path=str(config_dir()), config_name=config_name)(
            guarded(work, command))()

    return run


COMMANDS = {
    "train": hydra_command("train", "train", _train),
    "augment": hydra_command("augment", "augment", _augment),
    "schedule": hydra_command("schedule", "schedule_plot", _schedule),
}


def main(argv: list[str] | None = None) -> None:
    args = sys.argv[1:] if argv is None else list(argv)
    if not args or args[0] in ("-h", "--help", "help"):
        print(USAGE, end="")
        return
    if args[0] == "--version":
        from trainlab import __version__

        print(f"trainlab {__version__}")
        return
    command = COMMANDS.get(args[0])
    if command is None:
        print(f"trainlab: error: unknown command {args[0]!r}; commands: {', '.join(COMMANDS)}"
              " (see trainlab --help)", file=sys.stderr)
        sys.exit(2)
    command(args[1:])
