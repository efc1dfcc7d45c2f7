"""The one-GPU check (run by benchmarks/cuda_check.sh): CUDA paths end to end, one table of figures.

1. experiment=fmnist_speedrun on cuda with bf16 autocast, channels_last and torch.compile, all forced on
   (trainer.device=cuda fails when CUDA is missing: no CPU fallback): accuracy, wall time, samples/s,
   peak GPU memory, from its summary.json;
2. benchmarks/trainer_vs_plain.py --device cuda --bf16 --channels-last: the Trainer / plain loop ratio.
3. data parallel on nccl: with 2 GPUs or more, `trainlab train trainer.devices=2` on cuda (2 processes, one
   run folder, summary.json devices 2); with one GPU, a world of one nccl process training a DDP model (the
   process group, DDP and an all-reduce on the GPU; trainlab itself needs 2 GPUs to spawn ranks on cuda).
Any failure exits non-zero.

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


def nccl_world_of_one() -> float:
    """One nccl process: DDP over a small model on cuda:0, 20 steps and an all-reduce; its step time in ms."""
    import os

    import torch.distributed as dist
    import torch.nn.functional as F

    from trainlab.distributed import free_port

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(free_port()))
    torch.cuda.set_device(0)
    dist.init_process_group("nccl", rank=0, world_size=1, device_id=torch.device("cuda", 0))
    model = torch.nn.parallel.DistributedDataParallel(torch.nn.Linear(256, 10).cuda(), device_ids=[0])
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    images, labels = torch.randn(128, 256, device="cuda"), torch.randint(0, 10, (128,), device="cuda")
    torch.cuda.synchronize()
    started = time.perf_counter()
    for _ in range(20):
        optimizer.zero_grad(set_to_none=True)
        F.cross_entropy(model(images), labels).backward()
        optimizer.step()
    total = torch.ones(1, device="cuda")
    dist.all_reduce(total)
    torch.cuda.synchronize()
    if total.item() != 1.0:
        fail(f"nccl all_reduce over a world of one gave {total.item()}")
    seconds = (time.perf_counter() - started) / 20
    del model
    import gc

    gc.collect()
    dist.destroy_process_group()
    return 1000 * seconds


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
        if torch.cuda.device_count() >= 2:
            command = [trainlab, "train", "dataset=synthetic", "trainer.epochs=2", "trainer.device=cuda",
                       "trainer.devices=2", f"hydra.run.dir={folder}/ddp"]
            started = time.perf_counter()
            if subprocess.run(command).returncode != 0:
                fail(" ".join(command))
            ddp = json.loads((Path(folder) / "ddp" / "summary.json").read_text())
            if ddp.get("devices") != 2 or ddp.get("status") != "completed":
                fail(f"trainer.devices=2 on cuda: summary says devices {ddp.get('devices')}, {ddp.get('status')}")
            rows.append(("trainer.devices=2 on cuda (nccl): samples/s, wall time",
                         f"{ddp['train_samples_per_s']:,.0f}, {time.perf_counter() - started:.1f} s"))
        else:
            rows.append(("nccl world of one (DDP step, small model)", f"{nccl_world_of_one():.2f} ms per step"))
    host = machine()
    print(f"\ncuda_check on {host.get('gpu')}, torch {host['torch']}")
    width = max(len(name) for name, _ in rows)
    for name, value in rows:
        print(f"{name:<{width}}  {value}")
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "cuda_check.json").write_text(json.dumps({"machine": host, "rows": rows}, indent=2) + "\n")


if __name__ == "__main__":
    main()
