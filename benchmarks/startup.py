"""Start-up: how long trainlab's commands take before (and beside) any real work, against the imports.

Each command runs as a fresh process, as a user would type it, in alternating rounds (this machine is
shared and noisy), in a temporary folder; the figure is the median wall time of the rounds:

  python -c "import torch"                          the floor every PyTorch tool pays
  python -c "import torch, torchvision, hydra, ..."  the heavy libraries trainlab's train imports
                                                    (matplotlib's Agg figure too: the pictures)
  trainlab --help                                   dispatch only (no torch)
  trainlab train --cfg job                          compose and print the config (no torch)
  trainlab train <1 epoch, 128 synthetic images>    the whole path: compose, check, build, train, test,
                                                    summary.json, with the default callbacks

Prints a table and writes a JSON record (benchmarks/results/startup.json, with the machine it ran on).

    python benchmarks/startup.py [--rounds 5]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import cpu_name, figure, write_record

# what a run imports beyond trainlab itself (matplotlib for the confusion pictures: a long run imports it on a
# background thread while it trains, a 1-epoch run waits for it at the end)
HEAVY = ("import torch, torchvision, hydra, omegaconf, rich; from torch.utils import tensorboard; "
         "from matplotlib.figure import Figure; from matplotlib.backends.backend_agg import FigureCanvasAgg")
TINY_RUN = ["train", "dataset=synthetic", "dataset.num_train=160", "dataset.val_size=32", "dataset.num_test=32",
            "trainer.epochs=1", "model.channels=[8,16]", "trainer.batch_size=32"]


def commands() -> dict[str, list[str]]:
    trainlab = str(Path(sys.executable).with_name("trainlab"))
    return {
        "python -c 'import torch'": [sys.executable, "-c", "import torch"],
        "import the heavy libraries": [sys.executable, "-c", HEAVY],
        "trainlab --help": [trainlab, "--help"],
        "trainlab train --cfg job": [trainlab, "train", "--cfg", "job"],
        "trainlab train (1 epoch, 128 synthetic images)": [trainlab, *TINY_RUN],
    }


def timed(command: list[str], cwd: Path) -> float:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HYDRA_", "TRAINLAB_"))}
    started = time.perf_counter()
    result = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - started
    if result.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed:\n{result.stderr[-2000:]}")
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--json", help="where to write the JSON record (default: benchmarks/results/startup.json)")
    args = parser.parse_args()
    runs = commands()
    seconds: dict[str, list[float]] = {name: [] for name in runs}
    with tempfile.TemporaryDirectory() as folder:
        for name, command in runs.items():  # a warm-up round: the page cache, .pyc files
            timed(command, Path(folder))
        for _ in range(args.rounds):
            for name, command in runs.items():
                seconds[name].append(timed(command, Path(folder)))
    median = {name: statistics.median(values) for name, values in seconds.items()}
    heavy = median["import the heavy libraries"]
    print(f"start-up on {cpu_name()}, {os.cpu_count()} cores, "
          f"median of {args.rounds} rounds")
    print(f"{'command':<50} {'seconds':>8} {'beyond the heavy imports':>26}")
    for name, value in median.items():
        beyond = f"{value - heavy:+.2f}" if name.startswith("trainlab train (") else ""
        print(f"{name:<50} {value:8.2f} {beyond:>26}")
    tiny = median["trainlab train (1 epoch, 128 synthetic images)"] - heavy
    write_record("startup", [
        figure("start-up: trainlab train --cfg job", round(median["trainlab train --cfg job"], 2), "s", "< 0.5",
               median["trainlab train --cfg job"] < 0.5),
        figure("start-up: trainlab --help", round(median["trainlab --help"], 2), "s"),
        figure("start-up: python -c 'import torch'", round(median["python -c 'import torch'"], 2), "s"),
        figure("start-up: 1-epoch run on 128 synthetic images, beyond the heavy imports", round(tiny, 2), "s",
               "< 1", tiny < 1, heavy_imports=round(heavy, 2)),
    ], args.json, rounds=args.rounds, seconds=seconds, median=median)

if __name__ == "__main__":
    main()
