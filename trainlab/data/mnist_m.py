"""MNIST-M (Ganin et al. 2016: MNIST digits blended with BSDS500 photo patches; 28x28 RGB, 10 classes).

Two layouts are read, both from `root`/mnist_m or `root`:
- Ganin's archive mnist_m.tar.gz unpacked: mnist_m_train/ and mnist_m_test/ (PNG files) with
  mnist_m_train_labels.txt / mnist_m_test_labels.txt (lines "00000000.png 5");
- the torch files several PyTorch ports save: mnist_m_train.pt / mnist_m_test.pt, each a pair
  (uint8 images [N, 28, 28, 3], labels [N]), read with weights_only=True.
There is no official download URL that torchvision knows, so nothing is downloaded.
"""

from __future__ import annotations

from pathlib import Path

import torch

from trainlab.data.datasets import MNIST_CLASSES, ImageDataset
from trainlab.errors import DataNotFoundError

ARCHIVE = {"train": ("mnist_m_train", "mnist_m_train_labels.txt"), "test": ("mnist_m_test", "mnist_m_test_labels.txt")}
TORCH_FILES = {"train": "mnist_m_train.pt", "test": "mnist_m_test.pt"}
HOW = ("Unpack Ganin's mnist_m.tar.gz into dataset.root (it holds mnist_m/ with mnist_m_train/, mnist_m_test/ and "
       "their _labels.txt files), or put mnist_m_train.pt and mnist_m_test.pt there")


def folders(root: str | Path) -> list[Path]:
    root = Path(str(root)).expanduser()
    return [root / "mnist_m", root]


def find(root: str | Path) -> tuple[str, Path] | None:
    """("archive" | "torch", the folder) of the first layout found under `root`, or None."""
    for folder in folders(root):
        if all((folder / d).is_dir() and (folder / t).is_file() for d, t in ARCHIVE.values()):
            return "archive", folder
        if all((folder / name).is_file() for name in TORCH_FILES.values()):
            return "torch", folder
    return None


def not_found(root) -> DataNotFoundError:
    looked = ", ".join(str(f) for f in folders(root))
    return DataNotFoundError(f"MNIST-M not found (looked in {looked}). {HOW}.")


def _check_labels(labels: torch.Tensor, where: str) -> torch.Tensor:
    labels = labels.to(torch.int64).reshape(-1)
    if labels.numel() and (labels.min() < 0 or labels.max() > 9):
        raise DataNotFoundError(f"{where}: labels must be in 0..9 but range over {labels.min()}..{labels.max()}")
    return labels


def _read_archive_split(folder: Path, split: str) -> tuple[torch.Tensor, torch.Tensor]:
    from trainlab.data.stream import ImageFiles, decode_all

    images_dir, labels_file = ARCHIVE[split]
    names, labels = [], []
    for number, line in enumerate((folder / labels_file).read_text().splitlines(), start=1):
        if not line.strip():
            continue
        parts = line.split()
        if len(parts) != 2 or not parts[1].lstrip("-").isdigit():
            raise DataNotFoundError(f"{folder / labels_file}, line {number}: expected '<file name> <label>', "
                                    f"found {line.strip()[:60]!r}")
        names.append(str(folder / images_dir / parts[0]))
        labels.append(int(parts[1]))
    missing = next((name for name in names if not Path(name).is_file()), None)
    if missing is not None:
        raise DataNotFoundError(f"{missing}: listed in {folder / labels_file} but not on disk; unpack the whole "
                                "archive again")
    labels = _check_labels(torch.tensor(labels, dtype=torch.int64), str(folder / labels_file))
    return decode_all(ImageFiles(names, labels, (28, 28), 3), num_workers=2 if len(names) > 2000 else 0), labels


def _read_torch_split(folder: Path, split: str) -> tuple[torch.Tensor, torch.Tensor]:
    path = folder / TORCH_FILES[split]
    try:
        entry = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # a damaged or foreign file: one line naming it
        raise DataNotFoundError(f"{path}: cannot read it ({type(error).__name__}: {error}); corrupt file?") from None
    if not (isinstance(entry, (tuple, list)) and len(entry) == 2 and all(torch.is_tensor(t) for t in entry)):
        raise DataNotFoundError(f"{path}: expected a pair (images, labels) of tensors")
    images, labels = entry
    if images.dtype != torch.uint8 or images.dim() != 4 or images.shape[-1] != 3:
        raise DataNotFoundError(f"{path}: images must be uint8 [N, H, W, 3], found {images.dtype} {list(images.shape)}")
    if images.shape[0] != labels.numel():
        raise DataNotFoundError(f"{path}: {images.shape[0]} images but {labels.numel()} labels")
    return images.permute(0, 3, 1, 2).contiguous(), _check_labels(labels, str(path))


def load_mnist_m(root: str | Path) -> ImageDataset:
    found = find(root)
    if found is None:
        raise not_found(root)
    layout, folder = found
    read = _read_archive_split if layout == "archive" else _read_torch_split
    train_x, train_y = read(folder, "train")
    test_x, test_y = read(folder, "test")
    return ImageDataset(train_x, train_y, test_x, test_y, classes=list(MNIST_CLASSES))
