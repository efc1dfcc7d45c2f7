"""trainlab's on-device batched augmentation against torchvision's per-sample PIL transforms.

Same data, same ops (the `standard` recipe: pad-4 random crop + horizontal flip + mean/std
normalization), one process, alternating rounds:

  (a) torchvision: a Dataset that hands out PIL images (as torchvision's CIFAR/MNIST classes do),
      transforms.v2 RandomCrop + RandomHorizontalFlip + ToImage + ToDtype + Normalize per sample,
      through a DataLoader with 2 workers (batch 128, shuffled);
  (b) trainlab: the dataset as one uint8 tensor, DeviceLoader + the ops of configs/augmentation/standard.yaml.

Measured twice: the data path alone (an epoch of batches, nothing done with them) and end to end (a
small CNN trained on the batches for the same number of steps). Prints images/s and the ratios.

    python benchmarks/augmentation_vs_torchvision.py [--images 20000] [--rounds 3] [--dataset fashion_mnist|synthetic]
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import torch
import torch.nn.functional as F

from common import figure, write_record
from trainlab.config import load_option
from PIL import Image
from torchvision.transforms import v2

from trainlab.data import build_augmentation
from trainlab.data.datasets import load_fashion_mnist, make_synthetic
from trainlab.data.loader import DeviceLoader
from trainlab.data.preprocess import MeanStd
from trainlab.models.cnn import CNN

BATCH = 128


class PilDataset(torch.utils.data.Dataset):
    """What torchvision's own dataset classes do: a PIL image per __getitem__, then the transform."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, transform):
        self.arrays = images.permute(0, 2, 3, 1).squeeze(-1).numpy() if images.shape[1] == 1 \
            else images.permute(0, 2, 3, 1).numpy()
        self.labels = labels.tolist()
        self.transform = transform

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index):
        return self.transform(Image.fromarray(np.ascontiguousarray(self.arrays[index]))), self.labels[index]


def torchvision_loader(images, labels, mean, std):
    size = images.shape[-1]
    transform = v2.Compose([
        v2.RandomCrop(size, padding=4), v2.RandomHorizontalFlip(), v2.ToImage(),
        v2.ToDtype(torch.float32, scale=True), v2.Normalize(mean.tolist(), std.tolist()),
    ])
    return torch.utils.data.DataLoader(PilDataset(images, labels, transform), batch_size=BATCH, shuffle=True,
                                       num_workers=2, drop_last=True, persistent_workers=True)


def trainlab_loader(images, labels, preprocess):
    pipeline = build_augmentation(load_option("augmentation", "standard").ops, tuple(images.shape[1:]))
    return DeviceLoader(images, labels, BATCH, normalize=preprocess, augment=pipeline, shuffle=True, drop_last=True)


def data_only(loader) -> float:
    started, seen = time.perf_counter(), 0
    for images, _ in loader:
        seen += images.shape[0]
    return seen / (time.perf_counter() - started)


def end_to_end(loader, model, steps: int) -> float:
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    started, seen = time.perf_counter(), 0
    for step, (images, labels) in enumerate(loader):
        if step == steps:
            break
        loss = F.cross_entropy(model(images), labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        seen += images.shape[0]
    return seen / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="fashion_mnist", choices=["fashion_mnist", "synthetic"])
    parser.add_argument("--images", type=int, default=20000, help="training images used")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=40, help="training steps per end-to-end measurement")
    parser.add_argument("--json", help="where to write the JSON record (default: benchmarks/results/augmentation_vs_torchvision.json)")
    args = parser.parse_args()

    if args.dataset == "fashion_mnist":
        data = load_fashion_mnist("data", download=True)
    else:  # CIFAR-shaped: 3 x 32 x 32
        data = make_synthetic(num_train=args.images, num_test=10, channels=3, image_size=32)
    images, labels = data.train_images[:args.images], data.train_labels[:args.images]
    preprocess = MeanStd().fit(images)
    mean, std = preprocess.state["mean"], preprocess.state["std"]
    ours, theirs = trainlab_loader(images, labels, preprocess), torchvision_loader(images, labels, mean, std)
    print(f"{args.dataset}: {len(labels)} images {list(images.shape[1:])}, batch {BATCH}, "
          f"{torch.get_num_threads()} threads; torchvision DataLoader with 2 workers")

    # warm-up: worker start-up and first-call costs are not what we measure
    data_only(theirs)
    data_only(ours)
    rates = {key: [] for key in ("tv_data", "tl_data", "tv_e2e", "tl_e2e")}
    for round_index in range(args.rounds):
        rates["tv_data"].append(data_only(theirs))
        rates["tl_data"].append(data_only(ours))
        torch.manual_seed(round_index)
        model = CNN(list(images.shape[1:]), data.num_classes, channels=[16, 32])
        state = {k: v.clone() for k, v in model.state_dict().items()}
        rates["tv_e2e"].append(end_to_end(theirs, model, args.steps))
        model.load_state_dict(state)
        rates["tl_e2e"].append(end_to_end(ours, model, args.steps))
        print(f"round {round_index + 1}: data path  torchvision {rates['tv_data'][-1]:8.0f}  trainlab "
              f"{rates['tl_data'][-1]:8.0f} img/s | end to end  torchvision {rates['tv_e2e'][-1]:6.0f}  "
              f"trainlab {rates['tl_e2e'][-1]:6.0f} img/s")
    median = {key: statistics.median(values) for key, values in rates.items()}
    print(f"median data path: torchvision {median['tv_data']:.0f} img/s, trainlab {median['tl_data']:.0f} img/s, "
          f"ratio {median['tl_data'] / median['tv_data']:.1f}x")
    print(f"median end to end: torchvision {median['tv_e2e']:.0f} img/s, trainlab {median['tl_e2e']:.0f} img/s, "
          f"ratio {median['tl_e2e'] / median['tv_e2e']:.2f}x")
    data_ratio, e2e_ratio = median["tl_data"] / median["tv_data"], median["tl_e2e"] / median["tv_e2e"]
    write_record("augmentation_vs_torchvision", [
        figure("on-device augmentation / torchvision DataLoader (2 workers), data path", round(data_ratio, 1), "x",
               ">= 10", data_ratio >= 10, trainlab=round(median["tl_data"]), torchvision=round(median["tv_data"])),
        figure("on-device augmentation / torchvision DataLoader (2 workers), end to end", round(e2e_ratio, 2), "x",
               None, None, trainlab=round(median["tl_e2e"]), torchvision=round(median["tv_e2e"])),
    ], args.json, images_per_s=rates, images=args.images, dataset=args.dataset)


if __name__ == "__main__":
    main()
