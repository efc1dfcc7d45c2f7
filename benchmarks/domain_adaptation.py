"""Source only against DANN on the target domain, over seeds: the figures README's domain-adaptation table reports.

For each seed and each method, `trainlab train experiment=dann adaptation=none|dann` on the same budget (source
Fashion-MNIST, target domain=fashion_mnist_m or another shift of it); the target test accuracy (labels never used
in training or selection) and the source test accuracy from each run's summary.json, mean +- std over the seeds.
Then the picture: `trainlab eval split=target compare=<source-only run>` on the first seed's DANN run, drawing
both models' features side by side (features.png).

    python benchmarks/domain_adaptation.py [--seeds 0 1 2] [--shift textured] [--train-size 20000] [--epochs 3]
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from common import figure, write_record

TRAINLAB = str(Path(sys.executable).with_name("trainlab"))


def train(folder: Path, method: str, seed: int, args) -> dict:
    run = folder / f"{method}_{seed}"
    command = [TRAINLAB, "train", "experiment=dann", "dataset=fashion_mnist", "domain=fashion_mnist_m",
               f"adaptation={method}", f"seed={seed}", f"domain.shift={args.shift}",
               f"dataset.train_size={args.train_size}", f"domain.data.train_size={args.train_size}",
               f"trainer.epochs={args.epochs}", f"optimizer.lr={args.lr}", "callbacks.images.features=0",
               f"hydra.run.dir={run}"]
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
    summary = json.loads((run / "summary.json").read_text())
    print(f"{method:>5} seed {seed}: source test {summary['test']['acc']:.4f}  target test "
          f"{summary['target_test']['acc']:.4f}  ({summary['time']['total_s']:.0f} s)", flush=True)
    return {"run": str(run), "source": summary["test"]["acc"], "target": summary["target_test"]["acc"],
            "seconds": summary["time"]["total_s"]}


def spread(values: list[float]) -> tuple[float, float]:
    return statistics.mean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--shift", default="textured")
    parser.add_argument("--train-size", type=int, default=20000)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--lr", type=float, default=0.05)
    parser.add_argument("--picture", default=None, help="copy the side-by-side features.png here")
    args = parser.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="trainlab-dann-"))
    runs = {method: [train(folder, method, seed, args) for seed in args.seeds] for method in ("none", "dann")}
    figures, rows = [], []
    for method, label in (("none", "source only"), ("dann", "DANN")):
        target, source = spread([r["target"] for r in runs[method]]), spread([r["source"] for r in runs[method]])
        figures.append(figure(f"{label}: target test accuracy ({args.shift})", target[0], "", std=target[1]))
        figures.append(figure(f"{label}: source test accuracy", source[0], "", std=source[1]))
        rows.append(f"| {label} | {100 * target[0]:.1f} ± {100 * target[1]:.1f} | "
                    f"{100 * source[0]:.1f} ± {100 * source[1]:.1f} |")
    print("| method | target test acc (%) | source test acc (%) |\n|---|---|---|\n" + "\n".join(rows))
    eval_dir = folder / "eval"
    subprocess.run([TRAINLAB, "eval", f"checkpoint={runs['dann'][0]['run']}", "split=target",
                    f"compare={runs['none'][0]['run']}", f"hydra.run.dir={eval_dir}"], check=True,
                   stdout=subprocess.DEVNULL)
    if args.picture:
        shutil.copy(eval_dir / "features.png", args.picture)
        print(f"picture: {args.picture}")
    write_record(f"domain_adaptation_{args.shift}", figures, runs=runs, settings=vars(args))


if __name__ == "__main__":
    main()
