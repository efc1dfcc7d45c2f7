"""Datasets as whole uint8 tensors: images [N, C, H, W], labels int64 [N].

Small datasets are read once into memory (and later moved to the device as one tensor), which is
what makes batching an index slice and augmentation a batched op on the device.
"""

from __future__ import annotations

import gzip
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from trainlab.errors import ConfigError, DataNotFoundError

SYSTEM_FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")
FASHION_MNIST_CLASSES = [
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
]
FASHION_MNIST_FILES = {
    "train_x": "train-images-idx3-ubyte",
    "train_y": "train-labels-idx1-ubyte",
    "test_x": "t10k-images-idx3-ubyte",
    "test_y": "t10k-labels-idx1-ubyte",
}


@dataclass
class ImageDataset:
    """A dataset's official training and test splits, held as uint8 images and int64 labels."""

    train_images: torch.Tensor
    train_labels: torch.Tensor
    test_images: torch.Tensor
    test_labels: torch.Tensor
    classes: list[str]

    @property
    def input_shape(self) -> tuple[int, int, int]:
        return tuple(self.train_images.shape[1:])

    @property
    def num_classes(self) -> int:
        return len(self.classes)


def read_idx(path: Path) -> np.ndarray:
    """Read an IDX file (the MNIST family's format), gzipped or not."""
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as handle:
            data = handle.read()
    except (OSError, EOFError) as error:  # BadGzipFile is an OSError; a cut-off .gz raises EOFError
        raise DataNotFoundError(f"{path}: cannot read it ({error}); corrupt or incomplete file?") from None
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] != 0x08 or len(data) < 4 + 4 * data[3]:
        raise DataNotFoundError(f"{path}: not an unsigned-byte IDX file (corrupt or wrong file?)")
    ndim = data[3]
    shape = tuple(int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))
    body = np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim)
    if body.size != int(np.prod(shape)):
        raise DataNotFoundError(f"{path}: truncated IDX file ({body.size} values, header says {shape})")
    return body.reshape(shape)


def _find_idx(folder: Path, stem: str) -> Path | None:
    for name in (stem, stem + ".gz"):
        if (folder / name).is_file():
            return folder / name
    return None


def _mnist_family_folders(root: Path, torchvision_name: str, system_folder: Path) -> list[Path]:
    # torchvision keeps raw files in <root>/<Name>/raw; people also unpack them straight into root.
    return [root / torchvision_name / "raw", root, system_folder]


def _read_mnist_family(folders: list[Path]) -> dict[str, np.ndarray] | None:
    for folder in folders:
        paths = {key: _find_idx(folder, stem) for key, stem in FASHION_MNIST_FILES.items()}
        if all(paths.values()):
            return {key: read_idx(path) for key, path in paths.items()}
    return None


def load_fashion_mnist(root: str, download: bool, system_root: str | Path | None = None) -> ImageDataset:
    """Fashion-MNIST from `root`, else Debian's system folder, else torchvision's download into `root`."""
    folders = _mnist_family_folders(Path(root), "FashionMNIST", Path(system_root or SYSTEM_FASHION_MNIST))
    arrays = _read_mnist_family(folders)
    if arrays is None and download:
        arrays = _download_fashion_mnist(Path(root), folders)
    if arrays is None:
        looked = ", ".join(str(f) for f in folders)
        raise DataNotFoundError(
            f"Fashion-MNIST not found (looked in {looked}; download={'on' if download else 'off'}). "
            "Install it with `sudo apt-get install dataset-fashion-mnist`, put the four IDX files in "
            "dataset.root, or allow the download (dataset.download=true) on a machine with internet."
        )
    return ImageDataset(
        train_images=torch.from_numpy(arrays["train_x"].copy()).unsqueeze(1),
        train_labels=torch.from_numpy(arrays["train_y"].astype(np.int64)),
        test_images=torch.from_numpy(arrays["test_x"].copy()).unsqueeze(1),
        test_labels=torch.from_numpy(arrays["test_y"].astype(np.int64)),
        classes=list(FASHION_MNIST_CLASSES),
    )


def _download_fashion_mnist(root: Path, folders: list[Path]) -> dict[str, np.ndarray] | None:
    import torchvision

    try:
        torchvision.datasets.FashionMNIST(str(root), train=True, download=True)
    except (OSError, RuntimeError):  # no network, or a mirror refused: report where we looked
        return None
    return _read_mnist_family(folders)


def make_synthetic(
    num_train: int = 2000,
    num_test: int = 500,
    num_classes: int = 10,
    channels: int = 1,
    image_size: int = 28,
    noise: float = 0.35,
    generator_seed: int = 0,
) -> ImageDataset:
    """A learnable image dataset made in memory, with a signal for both MLPs and convnets.

    Each class has a smooth random layout (found by dense layers) plus an oriented stripe texture of
    its own angle and frequency (found by convolutions whatever the shift). Samples are noisy,
    shifted copies. The data depend only on `generator_seed`, like a real dataset on disk.
    """
    if min(num_train, num_test, num_classes, channels, image_size) < 1 or noise < 0:
        raise ConfigError("dataset: synthetic sizes must be >= 1 and noise >= 0")
    gen = torch.Generator().manual_seed(generator_seed)
    coarse = torch.rand(num_classes, channels, 7, 7, generator=gen)
    layouts = torch.nn.functional.interpolate(coarse, size=(image_size, image_size), mode="bilinear")
    grid = torch.arange(image_size, dtype=torch.float32)
    angles = torch.arange(num_classes) * torch.pi / num_classes
    periods = 3.0 + 2.0 * (torch.arange(num_classes) % 3)

    def sample(count: int) -> tuple[torch.Tensor, torch.Tensor]:
        labels = torch.arange(count) % num_classes
        labels = labels[torch.randperm(count, generator=gen)]
        phase = 2 * torch.pi * torch.rand(count, 1, 1, generator=gen)
        direction = (torch.cos(angles[labels])[:, None, None] * grid[None, :, None]
                     + torch.sin(angles[labels])[:, None, None] * grid[None, None, :])
        stripes = 0.5 + 0.5 * torch.sin(2 * torch.pi * direction / periods[labels][:, None, None] + phase)
        images = 0.5 * layouts[labels] + 0.5 * stripes[:, None]
        images = images + noise * torch.randn(count, channels, image_size, image_size, generator=gen)
        shifts = torch.randint(-2, 3, (count, 2), generator=gen)
        for i, (dy, dx) in enumerate(shifts.tolist()):
            images[i] = torch.roll(images[i], shifts=(dy, dx), dims=(1, 2))
        pixels = (images.clamp(0, 1) * 255).round().to(torch.uint8)
        return pixels, labels

    train_images, train_labels = sample(num_train)
    test_images, test_labels = sample(num_test)
    return ImageDataset(train_images, train_labels, test_images, test_labels,
                        classes=[f"class_{k}" for k in range(num_classes)])


def load_dataset(cfg) -> ImageDataset:
    """Build the dataset named by `dataset.name` from its config section."""
    if cfg.name == "fashion_mnist":
        return load_fashion_mnist(cfg.root, cfg.download, cfg.get("system_root"))
    if cfg.name == "synthetic":
        keys = ("num_train", "num_test", "num_classes", "channels", "image_size", "noise", "generator_seed")
        return make_synthetic(**{k: cfg[k] for k in keys if k in cfg})
    raise ConfigError(f"dataset.name={cfg.name!r}: unknown dataset; choose fashion_mnist or synthetic")
