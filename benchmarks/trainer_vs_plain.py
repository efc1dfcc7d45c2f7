"""trainlab's Trainer against a plain hand-written PyTorch loop: same CNN, same tensors, same steps.

Both run in this one process, alternating round by round so that machine noise hits both alike.
The trainlab side is the real thing: DeviceLoader (index slices, uint8 -> normalized float per batch),
Trainer.fit for one epoch with the default callbacks of configs/callbacks/default.yaml (checkpoint:
best.pt + last.pt; TensorBoard; console line; EMA and early stopping stay off as by default), a per-step
cosine schedule and one validation batch. The plain side trains, scores the same validation batch and
torch.saves its weights once; it gets its data pre-normalized as float, which only favours it.

    python benchmarks/trainer_vs_plain.py [--steps 60] [--rounds 3] [--dataset fashion_mnist|synthetic]

Prints samples/s of each and the ratio trainlab / plain (>= 0.97 is the target) and writes a JSON record.
"""

from __future__ import annotations

import argparse
import copy
import statistics
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F
import yaml

from common import figure, write_record
from trainlab.build import build_callbacks
from trainlab.callbacks.base import RunInfo
from trainlab.config import load_option
from trainlab.data.datasets import load_fashion_mnist, make_synthetic
from trainlab.data.loader import DeviceLoader
from trainlab.data.preprocess import MeanStd
from trainlab.models.cnn import CNN
from trainlab.optim import cosine_schedule
from trainlab.train import Trainer


def plain_loop(model, images, labels, batch_size, steps, generator, val, folder, amp=None):
    """The reference: what one writes by hand for in-memory data."""
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=steps)
    model.train()
    order = torch.randperm(images.shape[0], generator=generator).to(images.device)
    for step in range(steps):
        index = order[step * batch_size:(step + 1) * batch_size]
        with torch.autocast(images.device.type, dtype=amp or torch.bfloat16, enabled=amp is not None):
            loss = F.cross_entropy(model(images[index]), labels[index])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        scheduler.step()
    model.eval()
    with torch.inference_mode():
        accuracy = (model(val[0]).argmax(1) == val[1]).float().mean().item()
    torch.save(model.state_dict(), f"{folder}/plain.pt")
    return loss.item(), accuracy


def default_callbacks(folder, model, train_size, val_size, extra=(), settings=(), device="cpu"):
    """The callbacks `trainlab train` builds by default (plus `extra` options of configs/callbacks),
    writing into `folder`."""
    from omegaconf import OmegaConf

    named = OmegaConf.to_container(load_option("callbacks", "default"))
    for name in extra:
        named.update(OmegaConf.to_container(load_option("callbacks", name)))
    cfg = OmegaConf.create({"callbacks": named})
    for setting in settings:  # e.g. histograms.every=20
        key, _, value = setting.partition("=")
        OmegaConf.update(cfg, f"callbacks.{key}", yaml.safe_load(value))
    cfg.callbacks.console.model_summary = False  # the table costs a forward pass at start, not per step
    run = RunInfo(run_dir=Path(folder), monitor="val/acc", mode="max",
                  config={"optimizer": {"lr": 1e-3}, "trainer": {"batch_size": 128, "epochs": 1}, "seed": 0},
                  summary={"params": sum(p.numel() for p in model.parameters()), "device": str(device),
                           "train_size": train_size, "val_size": val_size, "test_size": 0})
    return build_callbacks(cfg, run)


def trainlab_epoch(model, loader, val_loader, steps, folder, extra=(), settings=(), device=torch.device("cpu"),
                   amp=None):
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    scheduler = cosine_schedule(optimizer, steps_per_epoch=steps, total_steps=steps)
    trainer = Trainer(model, optimizer, scheduler, device, log_every=50, amp_dtype=amp,
                      callbacks=default_callbacks(folder, model, loader.num_samples, val_loader.num_samples, extra,
                                                   settings, device))
    result = trainer.fit(loader, val_loader, epochs=1)
    trainer.callbacks["tensorboard"].close()
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="fashion_mnist", choices=["fashion_mnist", "synthetic"])
    parser.add_argument("--steps", type=int, default=60, help="optimizer steps per round and side")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--with", dest="extra", action="append", default=[],
                        help="an extra callback option of configs/callbacks (e.g. histograms), repeatable")
    parser.add_argument("--set", dest="settings", action="append", default=[],
                        help="a callback key, e.g. histograms.every=20 or update_ratio.every=10, repeatable")
    parser.add_argument("--device", default="cpu", help="cpu | cuda (benchmarks/cuda_check.sh)")
    parser.add_argument("--bf16", action="store_true", help="bf16 autocast on both sides")
    parser.add_argument("--channels-last", action="store_true", help="NHWC model and batches on both sides")
    parser.add_argument("--json", help="where to write the JSON record (default: benchmarks/results/trainer_vs_plain.json)")
    args = parser.parse_args()

    if args.dataset == "fashion_mnist":
        data = load_fashion_mnist("data", download=True)
    else:
        data = make_synthetic(num_train=args.steps * args.batch_size)
    count = args.steps * args.batch_size
    device, amp = torch.device(args.device), torch.bfloat16 if args.bf16 else None
    images, labels = data.train_images[:count].to(device), data.train_labels[:count].to(device)
    normalize = MeanStd().fit(images)
    pre_normalized = normalize(images)  # the plain loop's data: already float
    if args.channels_last:
        pre_normalized = pre_normalized.contiguous(memory_format=torch.channels_last)

    torch.manual_seed(0)
    reference = CNN(list(data.input_shape), data.num_classes).to(device)
    if args.channels_last:
        reference = reference.to(memory_format=torch.channels_last)
    layout = dict(normalize=normalize, channels_last=args.channels_last)
    loader = DeviceLoader(images, labels, args.batch_size, shuffle=True, drop_last=True, **layout)
    val_images = data.test_images[:args.batch_size].to(device)
    val_labels = data.test_labels[:args.batch_size].to(device)
    val_loader = DeviceLoader(val_images, val_labels, args.batch_size, **layout)
    val = (normalize(val_images), val_labels)
    print(f"callbacks: default{''.join(' + ' + e for e in args.extra)}"
          + (f" ({', '.join(args.settings)})" if args.settings else ""))
    print(f"{args.dataset}: {count} images, batch {args.batch_size}, {args.steps} steps per side and round, "
          f"{torch.get_num_threads()} threads, torch {torch.__version__}, {device}"
          + (", bf16" if amp else "") + (", channels_last" if args.channels_last else ""))

    with tempfile.TemporaryDirectory() as folder:
        # one warm-up round each (allocator, kernels, the TensorBoard import), not timed
        plain_loop(copy.deepcopy(reference), pre_normalized, labels, args.batch_size, 5,
                   torch.Generator().manual_seed(0), val, folder, amp)
        warm = DeviceLoader(images[:5 * args.batch_size], labels[:5 * args.batch_size], args.batch_size, **layout)
        trainlab_epoch(copy.deepcopy(reference), warm, val_loader, 5, f"{folder}/warm", args.extra, args.settings,
                       device, amp)
        rates = {"plain": [], "trainlab": []}
        for round_index in range(args.rounds):
            started = time.perf_counter()
            plain_loop(copy.deepcopy(reference), pre_normalized, labels, args.batch_size, args.steps,
                       torch.Generator().manual_seed(round_index), val, folder, amp)
            rates["plain"].append(count / (time.perf_counter() - started))
            started = time.perf_counter()
            trainlab_epoch(copy.deepcopy(reference), loader, val_loader, args.steps, f"{folder}/round{round_index}",
                           args.extra, args.settings, device, amp)
            rates["trainlab"].append(count / (time.perf_counter() - started))
            print(f"round {round_index + 1}: plain {rates['plain'][-1]:8.0f} samples/s   "
                  f"trainlab {rates['trainlab'][-1]:8.0f} samples/s")
    plain, ours = statistics.median(rates["plain"]), statistics.median(rates["trainlab"])
    print(f"median: plain {plain:.0f} samples/s, trainlab {ours:.0f} samples/s, ratio trainlab/plain = {ours / plain:.3f}")
    callbacks = "default" + "".join(f" + {extra}" for extra in args.extra)
    write_record("trainer_vs_plain", [
        figure(f"Trainer / plain loop, training throughput on {device.type} ({callbacks} callbacks)", round(ours / plain, 3), "x",
               ">= 0.97", ours / plain >= 0.97, trainlab=round(ours), plain=round(plain)),
    ], args.json, samples_per_s=rates, steps=args.steps, batch_size=args.batch_size, dataset=args.dataset,
       device=str(device), bf16=args.bf16, channels_last=args.channels_last)


if __name__ == "__main__":
    main()
