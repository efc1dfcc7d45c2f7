"""The figures behind each `auto` of configs/trainer/default.yaml, measured on the device `auto` picks here.

For the default model (model=cnn, batch 128) and the speed-run model (model=airbench, batch 256), the
training throughput with each setting switched one way and the other, all else as `auto` resolves it:
channels_last, amp (bf16 autocast), compile, the thread count (1 against torch's default); and the
evaluation throughput at several eval batch sizes. Each choice's figure is auto's throughput over the
best measured alternative's: >= 1 (within this machine's noise, 0.95) means auto picks the fastest.
Alternating rounds; medians.

    python benchmarks/auto_choices.py [--steps 20] [--rounds 3]
"""

from __future__ import annotations

import argparse
import time
from contextlib import contextmanager

import torch
import torch.nn.functional as F

from common import figure, median, write_record
from trainlab.models.airbench import Airbench
from trainlab.models.cnn import CNN
from trainlab.runtime import (autocast, resolve_amp, resolve_channels_last, resolve_compile, resolve_device,
                              resolve_eval_batch_size)

MODELS = {"cnn": (lambda: CNN([1, 28, 28], 10), 128), "airbench": (lambda: Airbench([1, 28, 28], 10, channels=[32, 64, 128]), 256)}  # as model=airbench
EVAL_BATCHES = (256, 1024, 4096)


@contextmanager
def threads(count: int):
    before = torch.get_num_threads()
    torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def train_rate(make, batch: int, device, steps: int, channels_last: bool, amp, compiled: bool) -> float:
    torch.manual_seed(0)
    model = make().to(device)
    images = torch.randn(batch, 1, 28, 28, device=device)
    if channels_last:
        model, images = model.to(memory_format=torch.channels_last), images.contiguous(memory_format=torch.channels_last)
    labels = torch.randint(0, 10, (batch,), device=device)
    forward = torch.compile(model) if compiled else model
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, nesterov=True)
    for step in range(steps + 3):  # 3 warm-up steps (compilation, allocator, kernel choice)
        if step == 3:
            sync(device)
            started = time.perf_counter()
        with autocast(device, amp):
            loss = F.cross_entropy(forward(images), labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    sync(device)
    return batch * steps / (time.perf_counter() - started)


@torch.inference_mode()
def eval_rate(make, batch: int, device, channels_last: bool, amp, total: int = 8192) -> float:
    model = make().to(device).eval()
    images = torch.randn(total, 1, 28, 28, device=device)
    if channels_last:
        model, images = model.to(memory_format=torch.channels_last), images.contiguous(memory_format=torch.channels_last)
    for rounds in range(2):  # the first pass warms up
        sync(device)
        started = time.perf_counter()
        for start in range(0, total, batch):
            with autocast(device, amp):
                model(images[start:start + batch]).float().softmax(1)
        sync(device)
    return total / (time.perf_counter() - started)


def judged(rates: dict, picked, key: str, setting: str, model: str, device, what: str, measured: dict) -> dict:
    """The figure of one choice: the median rate of auto's pick over the best other value measured."""
    rate = {str(value): median(r) for value, r in rates.items()}
    best_other = max(v for k, v in rate.items() if k != str(picked))
    ratio = rate.get(str(picked), 0.0) / best_other if best_other else float("inf")
    measured[key] = rate
    print(f"{model:9s} {key.split('/')[1]:16s} " + "  ".join(f"{k}: {v:7.0f}/s" for k, v in rate.items())
          + f"   auto {setting}: {ratio:.2f}x the best alternative")
    return figure(f"auto {setting} on {device.type}, model={model}: {what} samples/s over the best alternative",
                  round(ratio, 2), "x", ">= 0.95", ratio >= 0.95, samples_per_s=rate)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--json", help="where to write the JSON record (default: benchmarks/results/auto_choices.json)")
    args = parser.parse_args()
    device = resolve_device("auto")
    auto = {"channels_last": resolve_channels_last("auto", device), "amp": resolve_amp("auto", "bf16", device)[0],
            "compile": resolve_compile("auto", device), "threads": torch.get_num_threads()}
    auto_eval = resolve_eval_batch_size("auto", device)
    print(f"device {device}; auto: channels_last={auto['channels_last']}, amp={auto['amp']}, "
          f"compile={auto['compile']}, threads={auto['threads']}, eval_batch_size={auto_eval}")
    alternatives = {
        "channels_last": [True, False],
        "amp": [None, torch.bfloat16],
        "compile": [False, True],
        "threads": sorted({1, torch.get_num_threads()}),
    }
    figures, measured = [], {}
    for name, (make, batch) in MODELS.items():
        for choice, values in alternatives.items():
            rates = {value: [] for value in values}
            # torch.compile takes tens of seconds per fresh model on a CPU: one round of it is enough to rank it
            for _ in range(1 if choice == "compile" else args.rounds):
                for value in values:
                    setting = {**auto, choice: value}
                    try:
                        with threads(setting["threads"]):
                            rates[value].append(train_rate(make, batch, device, args.steps, setting["channels_last"],
                                                           setting["amp"], setting["compile"]))
                    except Exception as error:  # e.g. torch.compile without a C++ compiler: that choice cannot win
                        print(f"{name} {choice}={value}: failed ({type(error).__name__}: {str(error)[:120]})")
                        rates[value].append(0.0)
            figures.append(judged(rates, auto[choice], f"{name}/{choice}", f"{choice}={auto[choice]}", name,
                                  device, "training", measured))
        rates = {b: [] for b in EVAL_BATCHES}
        for _ in range(args.rounds):
            for b in EVAL_BATCHES:
                rates[b].append(eval_rate(make, b, device, auto["channels_last"], auto["amp"]))
        figures.append(judged(rates, auto_eval, f"{name}/eval_batch_size", f"eval_batch_size={auto_eval}", name,
                              device, "evaluation", measured))
    write_record("auto_choices", figures, args.json, device=device.type, steps=args.steps, measured=measured,
                 auto={**{k: str(v) for k, v in auto.items()}, "eval_batch_size": auto_eval})


if __name__ == "__main__":
    main()
