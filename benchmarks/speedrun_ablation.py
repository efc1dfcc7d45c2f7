"""The speed-run recipe's ablation: each row one change to experiment=fmnist_speedrun, over seeds.

The rows start from airbench as published (its augmentation and test-time augmentation on, 5 epochs) and
from the recipe as shipped, which dropped them (and an epoch) after the first rows of this table.

Every row is one trainlab sweep (`trainlab train -m experiment=fmnist_speedrun seed=0,1 <change>`), its
jobs two at a time (hydra/launcher=joblib, one torch thread each); the table gives each row's test
accuracy with the recipe's test-time augmentation (test_tta) and without (test), mean and range over the
seeds, and the mean training time. Times are of one thread with another job beside it: about twice a
lone run's (benchmarks/time_to_accuracy.py measures that).

    python benchmarks/speedrun_ablation.py [--seeds 0 1] [--rows recipe no_whitening ...]

Writes benchmarks/results/speedrun_ablation.json and .md (the table of README's Performance section).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from common import RESULTS, machine

# airbench as published: flips + 2-pixel translations in training, flip + translate views at test time
AIRBENCH = ["augmentation=flip_crop", "tta=crops_flip", "trainer.epochs=5"]
ROWS = {  # name -> (label, overrides of experiment=fmnist_speedrun)
    "airbench": ("airbench as published (flips, translations, TTA), 5 epochs", AIRBENCH),
    "no_whitening": ("airbench, first conv trained, not whitening", [*AIRBENCH, "model.whiten=false"]),
    "no_label_smoothing": ("airbench, no label smoothing (0.2 -> 0)", [*AIRBENCH, "trainer.label_smoothing=0"]),
    "airbench_4_epochs": ("airbench, 4 epochs", [*AIRBENCH, "trainer.epochs=4"]),
    "no_augmentation_5_epochs": ("no flips, translations or TTA, 5 epochs", ["trainer.epochs=5"]),
    "recipe": ("the recipe: no flips, translations or TTA, 4 epochs", []),
    "recipe_3_epochs": ("the recipe, 3 epochs", ["trainer.epochs=3"]),
}


def sweep(change: list[str], seeds: list[int], folder: Path) -> list[dict]:
    trainlab = str(Path(sys.executable).with_name("trainlab"))
    command = [trainlab, "train", "-m", "experiment=fmnist_speedrun", "seed=" + ",".join(map(str, seeds)), *change,
               "hydra/launcher=joblib", "hydra.launcher.n_jobs=2", f"hydra.sweep.dir={folder}"]
    if subprocess.run(command, stdout=subprocess.DEVNULL).returncode != 0:
        raise SystemExit(f"failed: {' '.join(command)}")
    jobs = []
    for summary_path in sorted(folder.glob("*/summary.json")):
        summary = json.loads(summary_path.read_text())
        jobs.append({"test": summary["test"]["acc"], "test_tta": (summary.get("test_tta") or summary["test"])["acc"],
                     "train_s": summary["time"]["train_s"]})
    return jobs


def spread(values: list[float]) -> str:
    return f"{statistics.mean(values):.2%} ({min(values):.2%}–{max(values):.2%})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--rows", nargs="+", choices=list(ROWS), default=list(ROWS))
    args = parser.parse_args()
    results = {}
    with tempfile.TemporaryDirectory() as folder:
        for name in args.rows:
            label, change = ROWS[name]
            results[name] = {"label": label, "change": change, "jobs": sweep(change, args.seeds, Path(folder) / name)}
            jobs = results[name]["jobs"]
            print(f"{label:40s} test_tta {spread([j['test_tta'] for j in jobs])}  test {spread([j['test'] for j in jobs])}"
                  f"  train {statistics.mean(j['train_s'] for j in jobs):.0f} s", flush=True)
    lines = [f"| overrides of `experiment=fmnist_speedrun` | test acc, with TTA (if on) | test acc, no TTA | "
             f"train time* |", "|---|---|---|---|"]
    for name, row in results.items():
        jobs = row["jobs"]
        override = f" (`{' '.join(row['change'])}`)" if row["change"] else ""
        lines.append(f"| {row['label']}{override} | {spread([j['test_tta'] for j in jobs])} | "
                     f"{spread([j['test'] for j in jobs])} | {statistics.mean(j['train_s'] for j in jobs):.0f} s |")
    table = "\n".join(lines) + f"\n\nMean (lowest–highest) over seeds {', '.join(map(str, args.seeds))}. " \
                               "*One torch thread, two jobs side by side.\n"
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "speedrun_ablation.json").write_text(json.dumps({"machine": machine(), "seeds": args.seeds,
                                                                "rows": results}, indent=2) + "\n")
    (RESULTS / "speedrun_ablation.md").write_text(table)
    print("\n" + table)


if __name__ == "__main__":
    main()
