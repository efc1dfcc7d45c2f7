"""The default experiment written as a plain PyTorch loop: the yardstick of benchmarks/peak_memory.py.

The same Fashion-MNIST tensors (trainlab's reader of the IDX files), mean/std normalization, a held-out
validation split of 5000, the default CNN, Adam + per-step cosine, batch 128, a validation pass per epoch,
the test pass at the end and the weights saved once. Nothing else: no callbacks, no logging.

    python benchmarks/plain_default.py [--epochs 1]
"""

from __future__ import annotations

import argparse
import tempfile

import torch
import torch.nn.functional as F

from trainlab.data.datasets import load_fashion_mnist
from trainlab.models.cnn import CNN


@torch.inference_mode()
def accuracy(model, images, labels, batch: int = 1024) -> float:
    model.eval()
    correct = sum((model(images[i:i + batch]).argmax(1) == labels[i:i + batch]).sum().item()
                  for i in range(0, len(labels), batch))
    model.train()
    return correct / len(labels)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--batch-size", type=int, default=128)
    args = parser.parse_args()
    torch.manual_seed(0)
    data = load_fashion_mnist("data", download=True)
    order = torch.randperm(len(data.train_labels))
    val, train = order[:5000], order[5000:]
    images = data.train_images.float() / 255
    mean, std = images[train].mean(), images[train].std()
    normalize = lambda x: ((x.float() / 255 - mean) / std).contiguous(memory_format=torch.channels_last)  # noqa: E731
    train_x, train_y = normalize(data.train_images[train]), data.train_labels[train]
    val_x, val_y = normalize(data.train_images[val]), data.train_labels[val]
    model = CNN(list(data.input_shape), data.num_classes).to(memory_format=torch.channels_last)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    steps = args.epochs * -(-len(train_y) // args.batch_size)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=steps)
    for epoch in range(args.epochs):
        for index in torch.randperm(len(train_y)).split(args.batch_size):
            loss = F.cross_entropy(model(train_x[index]), train_y[index])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
        print(f"epoch {epoch + 1}: val acc {accuracy(model, val_x, val_y):.4f}")
    print(f"test acc {accuracy(model, normalize(data.test_images), data.test_labels):.4f}")
    with tempfile.TemporaryDirectory() as folder:
        torch.save(model.state_dict(), f"{folder}/weights.pt")


if __name__ == "__main__":
    main()
