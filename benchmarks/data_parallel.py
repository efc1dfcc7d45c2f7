"""Data parallel on this CPU: 1 process x 2 threads against 2 processes x 1 thread (gloo), and what the
gradient all-reduce costs per step.

Two measurements, in alternating rounds (this machine is shared and noisy):
1. A plain PyTorch loop, the default CNN (model=cnn, batch 128 global, bf16 autocast and channels_last as
   `auto` resolves them here), on random tensors: one process with 2 threads, then 2 spawned processes
   with 1 thread each under DistributedDataParallel (64 samples each per step). Samples/s of the steps.
   In the 2-process loop, the all-reduce of one gradient-sized float32 tensor is timed alone, as a share of
   the step: an upper bound of the communication cost (DDP overlaps its buckets with the backward pass).
2. trainlab itself: `trainlab train` on Fashion-MNIST (1 epoch of 20,000 images, the default experiment)
   with trainer.devices=1 and trainer.devices=2 (threads auto: 2, then 1 per process); its samples/s
   (summary.json train_samples_per_s: the training steps, not the start-up).

    python benchmarks/data_parallel.py [--rounds 3] [--steps 40]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from common import figure, median, write_record

BATCH = 128


def plain_steps(rank: int, size: int, steps: int, threads: int, port: int, results) -> None:
    """One process of the plain loop (size 1: no DDP); puts (rank, samples/s, all-reduce s, step s)."""
    import torch.distributed as dist
    import torch.nn.functional as F

    from trainlab.models.cnn import CNN
    from trainlab.runtime import autocast, resolve_amp, resolve_channels_last

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    device = torch.device("cpu")
    channels_last = resolve_channels_last("auto", device)
    amp, _ = resolve_amp("auto", "bf16", device)
    model = CNN([1, 28, 28], 10)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    forward = model
    if size > 1:
        os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
        dist.init_process_group("gloo", rank=rank, world_size=size)
        forward = torch.nn.parallel.DistributedDataParallel(model)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, nesterov=True)
    local = BATCH // size
    images = torch.randn(local, 1, 28, 28)
    if channels_last:
        images = images.contiguous(memory_format=torch.channels_last)
    labels = torch.randint(0, 10, (local,))

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        with autocast(device, amp):
            loss = F.cross_entropy(forward(images), labels)
        loss.backward()
        optimizer.step()

    for _ in range(5):
        step()
    if size > 1:
        dist.barrier()
    started = time.perf_counter()
    for _ in range(steps):
        step()
    step_seconds = (time.perf_counter() - started) / steps
    reduce_seconds = 0.0
    if size > 1:
        grads = torch.zeros(sum(p.numel() for p in model.parameters()))
        dist.barrier()
        started = time.perf_counter()
        for _ in range(steps):
            dist.all_reduce(grads)
        reduce_seconds = (time.perf_counter() - started) / steps
        del forward  # DDP's reducer before its process group (see trainlab.distributed.leave)
        import gc

        gc.collect()
        dist.destroy_process_group()
    results.put((rank, BATCH / step_seconds, reduce_seconds, step_seconds))


def plain_round(size: int, steps: int) -> dict:
    import torch.multiprocessing as mp

    from trainlab.distributed import free_port

    context = mp.get_context("spawn")
    results = context.SimpleQueue()
    threads = max(1, 2 // size)
    mp.start_processes(plain_steps, args=(size, steps, threads, free_port(), results), nprocs=size,
                       start_method="spawn")
    rows = [results.get() for _ in range(size)]
    rank0 = next(row for row in rows if row[0] == 0)
    return {"samples_per_s": rank0[1], "allreduce_s": rank0[2], "step_s": rank0[3]}


def trainlab_round(devices: int, folder: Path, train_size: int) -> float:
    run = folder / f"devices{devices}_{time.monotonic_ns()}"
    command = [str(Path(sys.executable).with_name("trainlab")), "train", "trainer.epochs=1",
               f"dataset.train_size={train_size}", f"trainer.devices={devices}", f"hydra.run.dir={run}",
               "callbacks.console.model_summary=false"]
    done = subprocess.run(command, cwd=folder, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"trainlab failed: {done.stderr[-2000:]}")
    return json.loads((run / "summary.json").read_text())["train_samples_per_s"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--train-size", type=int, default=20000)
    parser.add_argument("--json", help="the JSON record's path (default: benchmarks/results/data_parallel.json)")
    args = parser.parse_args()
    from trainlab.models.cnn import CNN

    params = sum(p.numel() for p in CNN([1, 28, 28], 10).parameters())
    plain = {1: [], 2: []}
    ours = {1: [], 2: []}
    with tempfile.TemporaryDirectory() as scratch:
        for _ in range(args.rounds):
            for size in (1, 2):
                plain[size].append(plain_round(size, args.steps))
            for devices in (1, 2):
                ours[devices].append(trainlab_round(devices, Path(scratch), args.train_size))
    one, two = (median([r["samples_per_s"] for r in plain[size]]) for size in (1, 2))
    share = median([r["allreduce_s"] / r["step_s"] for r in plain[2]])
    reduce_ms = 1000 * median([r["allreduce_s"] for r in plain[2]])
    ours_one, ours_two = median(ours[1]), median(ours[2])
    print(f"plain loop, default CNN ({params:,} parameters), global batch {BATCH}, median of {args.rounds} rounds")
    print(f"  1 process x 2 threads: {one:8.0f} samples/s")
    print(f"  2 processes x 1 thread: {two:8.0f} samples/s   ({two / one:.2f}x)")
    print(f"  all-reduce of the gradients ({4 * params / 2**20:.2f} MiB fp32): {reduce_ms:.2f} ms, "
          f"{100 * share:.1f}% of a step")
    print(f"trainlab train (Fashion-MNIST, {args.train_size} images, 1 epoch): devices=1 {ours_one:.0f} samples/s, "
          f"devices=2 {ours_two:.0f} samples/s ({ours_two / ours_one:.2f}x)")
    write_record("data_parallel", [
        figure("plain loop: 2 processes x 1 thread / 1 process x 2 threads, samples/s (gloo, DDP)",
               round(two / one, 3), "x"),
        figure("plain loop, 2 processes: gradient all-reduce alone, share of a step (upper bound)",
               round(100 * share, 1), "%"),
        figure("trainlab train: trainer.devices=2 / trainer.devices=1, samples/s", round(ours_two / ours_one, 3), "x"),
    ], args.json, rounds=args.rounds, params=params, plain=plain, trainlab=ours, allreduce_ms=reduce_ms)


if __name__ == "__main__":
    main()
