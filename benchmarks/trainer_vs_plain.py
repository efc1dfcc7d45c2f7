"""trainlab's Trainer against a plain hand-written PyTorch loop: same CNN, same tensors, same steps.

Both run in this one process, alternating round by round so that machine noise hits both alike.
The trainlab side is the real thing: DeviceLoader (index slices, uint8 -> normalized float per batch),
Trainer.train_epoch (running sums on the device, per-step schedule, TensorBoard writer, progress bar
handle). The plain side gets its data pre-normalized as float, which only favours it.

    python benchmarks/trainer_vs_plain.py [--steps 60] [--rounds 3] [--dataset fashion_mnist|synthetic]

Prints samples/s of each and the ratio trainlab / plain (>= 0.95 is the target).
"""

from __future__ import annotations

import argparse
import copy
import statistics
import tempfile
import time

import torch
import torch.nn.functional as F
from torch.utils.tensorboard import SummaryWriter

from trainlab.data.datasets import load_fashion_mnist, make_synthetic
from trainlab.data.loader import DeviceLoader
from trainlab.data.preprocess import MeanStd
from trainlab.models.cnn import CNN
from trainlab.monitor.console import EpochBar
from trainlab.optim import cosine_schedule
from trainlab.train import Trainer


def plain_loop(model, images, labels, batch_size, steps, generator):
    """The reference: what one writes by hand for in-memory data."""
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    model.train()
    order = torch.randperm(images.shape[0], generator=generator)
    for step in range(steps):
        index = order[step * batch_size:(step + 1) * batch_size]
        loss = F.cross_entropy(model(images[index]), labels[index])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    return loss.item()


def trainlab_epoch(model, loader, steps, writer):
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    scheduler = cosine_schedule(optimizer, steps_per_epoch=steps, total_steps=steps)
    trainer = Trainer(model, optimizer, scheduler, torch.device("cpu"), log_every=50, writer=writer)
    return trainer.train_epoch(loader, EpochBar(None, None))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="fashion_mnist", choices=["fashion_mnist", "synthetic"])
    parser.add_argument("--steps", type=int, default=60, help="optimizer steps per round and side")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=128)
    args = parser.parse_args()

    if args.dataset == "fashion_mnist":
        data = load_fashion_mnist("data", download=True)
    else:
        data = make_synthetic(num_train=args.steps * args.batch_size)
    count = args.steps * args.batch_size
    images, labels = data.train_images[:count], data.train_labels[:count]
    normalize = MeanStd().fit(images)
    pre_normalized = normalize(images)  # the plain loop's data: already float

    torch.manual_seed(0)
    reference = CNN(list(data.input_shape), data.num_classes)
    loader = DeviceLoader(images, labels, args.batch_size, normalize=normalize, shuffle=True, drop_last=True)
    print(f"{args.dataset}: {count} images, batch {args.batch_size}, {args.steps} steps per side and round, "
          f"{torch.get_num_threads()} threads, torch {torch.__version__}")

    # one warm-up round each (allocator, kernels), not timed
    plain_loop(copy.deepcopy(reference), pre_normalized, labels, args.batch_size, 5, torch.Generator().manual_seed(0))
    with tempfile.TemporaryDirectory() as logdir:
        writer = SummaryWriter(logdir)
        trainlab_epoch(copy.deepcopy(reference), DeviceLoader(images[:5 * args.batch_size], labels[:5 * args.batch_size],
                                                             args.batch_size, normalize=normalize), 5, writer)
        rates = {"plain": [], "trainlab": []}
        for round_index in range(args.rounds):
            started = time.perf_counter()
            plain_loop(copy.deepcopy(reference), pre_normalized, labels, args.batch_size, args.steps,
                       torch.Generator().manual_seed(round_index))
            rates["plain"].append(count / (time.perf_counter() - started))
            started = time.perf_counter()
            trainlab_epoch(copy.deepcopy(reference), loader, args.steps, writer)
            rates["trainlab"].append(count / (time.perf_counter() - started))
            print(f"round {round_index + 1}: plain {rates['plain'][-1]:8.0f} samples/s   "
                  f"trainlab {rates['trainlab'][-1]:8.0f} samples/s")
        writer.close()
    plain, ours = statistics.median(rates["plain"]), statistics.median(rates["trainlab"])
    print(f"median: plain {plain:.0f} samples/s, trainlab {ours:.0f} samples/s, ratio trainlab/plain = {ours / plain:.3f}")


if __name__ == "__main__":
    main()
