"""Peak resident memory of `trainlab train` (the default experiment) against a plain PyTorch loop.

The plain loop (benchmarks/plain_default.py) is the default experiment written by hand: the same
Fashion-MNIST tensors, CNN, Adam + cosine, batch, validation split and test pass, no callbacks. Each runs
as its own fresh process, alternating, for `--epochs` epochs (peak memory is reached in the first);
the figure is the median of the kernel's peak RSS of each process (wait4), and trainlab's over the plain
loop's.

    python benchmarks/peak_memory.py [--epochs 1] [--rounds 2]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

from common import figure, median, peak_rss_of, write_record

HERE = Path(__file__).parent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--json", help="where to write the JSON record (default: benchmarks/results/peak_memory.json)")
    args = parser.parse_args()
    trainlab = str(Path(sys.executable).with_name("trainlab"))
    mib = {"trainlab": [], "plain": []}
    with tempfile.TemporaryDirectory() as folder:
        commands = {
            "trainlab": [trainlab, "train", f"trainer.epochs={args.epochs}", f"hydra.run.dir={folder}/run",
                         "hydra.job.chdir=false"],
            "plain": [sys.executable, str(HERE / "plain_default.py"), "--epochs", str(args.epochs)],
        }
        for round_index in range(args.rounds):
            for name, command in commands.items():
                if name == "trainlab":
                    command = [*command[:-2], f"hydra.run.dir={folder}/run{round_index}", command[-1]]
                code, peak = peak_rss_of(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
                if code != 0:
                    raise SystemExit(f"{' '.join(command)} failed with exit code {code}")
                mib[name].append(peak)
                print(f"round {round_index + 1}: {name:8s} peak RSS {peak:7.0f} MiB", flush=True)
    ours, plain = median(mib["trainlab"]), median(mib["plain"])
    print(f"median peak RSS: trainlab {ours:.0f} MiB, plain loop {plain:.0f} MiB, ratio {ours / plain:.2f}")
    write_record("peak_memory", [
        figure("peak resident memory, default run / plain loop", round(ours / plain, 2), "x", None, None,
               trainlab_mib=round(ours), plain_mib=round(plain)),
    ], args.json, mib=mib, epochs=args.epochs)


if __name__ == "__main__":
    main()
