"""The one-GPU check (run by benchmarks/cuda_check.sh): CUDA paths end to end, one table of figures.

1. experiment=fmnist_speedrun on cuda with bf16 autocast, channels_last and torch.compile, all forced on
   (trainer.device=cuda fails when CUDA is missing: no CPU fallback): accuracy, wall time, samples/s,
   peak GPU memory, from its summary.json;
2. benchmarks/trainer_vs_plain.py --device cuda --bf16 --channels-last: the Trainer / plain loop ratio.
A distributed (nccl) job joins this list when trainer.devices lands (issue 13). Any failure exits non-zero.

    python benchmarks/cuda_check.py [--seed 0]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from common import RESULTS, machine

HERE = Path(__file__).parent
SPEEDRUN = ["experiment=fmnist_speedrun", "trainer.device=cuda", "trainer.amp=true", "trainer.amp_dtype=bf16",
            "trainer.channels_last=true", "trainer.compile=true"]


def fail(message: str) -> None:
    raise SystemExit(f"cuda_check: FAILED: {message}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    if not torch.cuda.is_available():
        fail("CUDA is not available here; this check does not fall back to the CPU")
    rows = []
    trainlab = str(Path(sys.executable).with_name("trainlab"))
    with tempfile.TemporaryDirectory() as folder:
        command = [trainlab, "train", *SPEEDRUN, f"seed={args.seed}", f"hydra.run.dir={folder}/speedrun"]
        started = time.perf_counter()
        if subprocess.run(command).returncode != 0:
            fail(" ".join(command))
        wall = time.perf_counter() - started
        summary = json.loads((Path(folder) / "speedrun" / "summary.json").read_text())
        if summary.get("device", "").split(":")[0] != "cuda":
            fail(f"the speed run ran on {summary.get('device')}, not cuda")
        runtime = summary["runtime"]
        if not (runtime["compiled"] and runtime["amp"] == "bfloat16" and runtime["channels_last"]):
            fail(f"the speed run did not use compile + bf16 + channels_last: {runtime}; {summary['notices']}")
        tested = summary.get("test_tta") or summary["test"]
        rows += [("speed run: test accuracy (flip + translate TTA)", f"{tested['acc']:.2%}"),
                 ("speed run: wall time, process start to summary.json", f"{wall:.1f} s"),
                 ("speed run: training samples/s", f"{summary['train_samples_per_s']:,.0f}"),
                 ("speed run: peak GPU memory", f"{summary.get('peak_gpu_memory_mib', float('nan')):.0f} MiB")]
        out = Path(folder) / "trainer_vs_plain.json"
        command = [sys.executable, str(HERE / "trainer_vs_plain.py"), "--device", "cuda", "--bf16", "--channels-last",
                   "--steps", "200", "--json", str(out)]
        if subprocess.run(command).returncode != 0:
            fail(" ".join(command))
        ratio = json.loads(out.read_text())["figures"][0]
        rows.append(("Trainer / plain loop on cuda (bf16, channels_last)",
                     f"{ratio['value']}x ({ratio['trainlab']:,} vs {ratio['plain']:,} samples/s)"))
    host = machine()
    print(f"\ncuda_check on {host.get('gpu')}, torch {host['torch']}")
    width = max(len(name) for name, _ in rows)
    for name, value in rows:
        print(f"{name:<{width}}  {value}")
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "cuda_check.json").write_text(json.dumps({"machine": host, "rows": rows}, indent=2) + "\n")


if __name__ == "__main__":
    main()
