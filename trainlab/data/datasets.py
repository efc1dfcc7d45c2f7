"""Datasets as whole uint8 tensors: images [N, C, H, W], labels int64 [N].

Small datasets are read once into memory (and later moved to the device as one tensor), which is
what makes batching an index slice and augmentation a batched op on the device.

Each reader parses its files' own format (IDX for the MNIST family, CIFAR's pickled batches, SVHN's
.mat files), so it reads whatever is on disk, small test files included. torchvision's dataset
classes are used only to download (they check MD5 sums); what they download is then read here.
Search order for every dataset: `dataset.root` (offline) -> a system folder where one exists ->
torchvision's download into `dataset.root` when `dataset.download` is true -> one DataNotFoundError
saying where we looked and how to get the files.
"""

from __future__ import annotations

import gzip
import pickle
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

import numpy as np
import torch

from trainlab.errors import ConfigError, DataNotFoundError

DATASET_NAMES = ("fashion_mnist", "mnist", "mnist_m", "cifar10", "cifar100", "svhn", "imagefolder", "synthetic",
                 "gaussian")

SYSTEM_FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")
FASHION_MNIST_CLASSES = [
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
]
MNIST_CLASSES = ["0 - zero", "1 - one", "2 - two", "3 - three", "4 - four",
                 "5 - five", "6 - six", "7 - seven", "8 - eight", "9 - nine"]  # torchvision's names
SVHN_CLASSES = [str(digit) for digit in range(10)]
# The four IDX files of every MNIST-family dataset (MNIST and Fashion-MNIST use the same names).
FASHION_MNIST_FILES = {
    "train_x": "train-images-idx3-ubyte",
    "train_y": "train-labels-idx1-ubyte",
    "test_x": "t10k-images-idx3-ubyte",
    "test_y": "t10k-labels-idx1-ubyte",
}
MNIST_FAMILY_FILES = FASHION_MNIST_FILES


@dataclass
class ImageDataset:
    """A dataset's official training and test splits, held as uint8 images and int64 labels.

    `val_images`/`val_labels` hold a validation split the dataset brings itself (an image folder's
    val/); when they are None the validation split is held out of the training split.
    """

    train_images: torch.Tensor
    train_labels: torch.Tensor
    test_images: torch.Tensor
    test_labels: torch.Tensor
    classes: list[str]
    val_images: Optional[torch.Tensor] = None
    val_labels: Optional[torch.Tensor] = None

    @property
    def input_shape(self) -> tuple[int, int, int]:
        return tuple(self.train_images.shape[1:])

    @property
    def num_classes(self) -> int:
        return len(self.classes)


def _as_tensors(images: np.ndarray, labels: np.ndarray, num_classes: int, where: str):
    """uint8 [N, C, H, W] and int64 [N] tensors, after checking that the two agree and the labels fit."""
    if images.shape[0] != labels.shape[0]:
        raise DataNotFoundError(f"{where}: {images.shape[0]} images but {labels.shape[0]} labels "
                                "(corrupt or mismatched files?)")
    labels = labels.astype(np.int64).reshape(-1)
    if labels.size and (labels.min() < 0 or labels.max() >= num_classes):
        raise DataNotFoundError(f"{where}: labels must be in 0..{num_classes - 1} but range over "
                                f"{labels.min()}..{labels.max()} (wrong or corrupt file?)")
    images = np.require(images, dtype=np.uint8, requirements=["C", "W"])  # writable: torch warns otherwise
    return torch.from_numpy(images), torch.from_numpy(labels)


def _not_found(title: str, folders: list[Path], download: bool, how: str) -> DataNotFoundError:
    looked = ", ".join(str(f) for f in folders)
    return DataNotFoundError(
        f"{title} not found (looked in {looked}; download={'on' if download else 'off'}). "
        f"{how}, or allow the download (dataset.download=true) on a machine with internet."
    )


def _try_download(fetch: Callable) -> bool:
    """Call fetch(torchvision.datasets); False when the download fails (no network, a mirror refused)."""
    import torchvision

    try:
        fetch(torchvision.datasets)
    except (OSError, RuntimeError):  # URLError is an OSError; torchvision raises RuntimeError on MD5 mismatch
        return False
    return True


def _first_folder_with(folders: list[Path], names: list[str]) -> Path | None:
    return next((f for f in folders if all((f / n).is_file() for n in names)), None)


# ================================================================ MNIST family (IDX files)


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


@dataclass(frozen=True)
class MnistFamily:
    """What differs between the MNIST-family datasets: names, classes and how to get the files."""

    title: str             # for messages
    torchvision_name: str  # torchvision's class, and its folder: <root>/<name>/raw
    classes: tuple[str, ...]
    how_to_get: str        # the message's advice, before "or allow the download ..."


FASHION_MNIST = MnistFamily(
    "Fashion-MNIST", "FashionMNIST", tuple(FASHION_MNIST_CLASSES),
    "Install it with `sudo apt-get install dataset-fashion-mnist`, put the four IDX files in dataset.root",
)
MNIST = MnistFamily(
    "MNIST", "MNIST", tuple(MNIST_CLASSES),
    "Put its four IDX files (" + ", ".join(FASHION_MNIST_FILES.values()) + "; gzipped or not) in dataset.root",
)


def _find_idx(folder: Path, stem: str) -> Path | None:
    for name in (stem, stem + ".gz"):
        if (folder / name).is_file():
            return folder / name
    return None


def _mnist_family_folders(root: Path, torchvision_name: str, system_folder: Path | None = None) -> list[Path]:
    # torchvision keeps raw files in <root>/<Name>/raw; people also unpack them straight into root.
    folders = [root / torchvision_name / "raw", root]
    return folders + [system_folder] if system_folder is not None else folders


def _mnist_family_paths(folders: list[Path]) -> dict[str, Path] | None:
    """The four IDX files in the first folder that holds them all (names only: nothing is read)."""
    for folder in folders:
        paths = {key: _find_idx(folder, stem) for key, stem in MNIST_FAMILY_FILES.items()}
        if all(paths.values()):
            return paths
    return None


def _read_mnist_family(folders: list[Path]) -> tuple[Path, dict[str, np.ndarray]] | None:
    paths = _mnist_family_paths(folders)
    if paths is None:
        return None
    return paths["train_x"].parent, {key: read_idx(path) for key, path in paths.items()}


def load_mnist_family(family: MnistFamily, root: str, download: bool,
                      system_folder: str | Path | None = None) -> ImageDataset:
    """An MNIST-family dataset from `root`, else `system_folder`, else torchvision's download into `root`."""
    folders = _mnist_family_folders(Path(root), family.torchvision_name,
                                    Path(system_folder) if system_folder else None)
    found = _read_mnist_family(folders)
    if found is None and download and _try_download(
            lambda datasets: getattr(datasets, family.torchvision_name)(str(root), train=True, download=True)):
        found = _read_mnist_family(folders)
    if found is None:
        raise _not_found(family.title, folders, download, family.how_to_get)
    folder, arrays = found
    for key in ("train_x", "test_x"):
        if arrays[key].ndim != 3:
            raise DataNotFoundError(f"{folder / MNIST_FAMILY_FILES[key]}: expected images [N, H, W], "
                                    f"found an array of shape {arrays[key].shape}")
    splits = [_as_tensors(arrays[f"{split}_x"][:, None], arrays[f"{split}_y"], len(family.classes),
                          str(folder / MNIST_FAMILY_FILES[f"{split}_y"])) for split in ("train", "test")]
    (train_x, train_y), (test_x, test_y) = splits
    return ImageDataset(train_x, train_y, test_x, test_y, classes=list(family.classes))


def load_fashion_mnist(root: str, download: bool, system_root: str | Path | None = None) -> ImageDataset:
    """Fashion-MNIST from `root`, else Debian's system folder, else torchvision's download into `root`."""
    return load_mnist_family(FASHION_MNIST, root, download, system_root or SYSTEM_FASHION_MNIST)


def load_mnist(root: str, download: bool) -> ImageDataset:
    """MNIST from `root` (or `root`/MNIST/raw), else torchvision's download into `root`."""
    return load_mnist_family(MNIST, root, download)


# ================================================================ CIFAR-10 / CIFAR-100 (pickled batches)


@dataclass(frozen=True)
class CifarLayout:
    title: str
    torchvision_name: str
    folder: str  # what the archive unpacks to, under root
    train_files: tuple[str, ...]
    test_files: tuple[str, ...]
    meta_file: str
    archive: str

    @property
    def files(self) -> list[str]:
        return [*self.train_files, *self.test_files, self.meta_file]


CIFAR_LAYOUTS = {
    "cifar10": CifarLayout("CIFAR-10", "CIFAR10", "cifar-10-batches-py",
                           tuple(f"data_batch_{i}" for i in range(1, 6)), ("test_batch",), "batches.meta",
                           "cifar-10-python.tar.gz"),
    "cifar100": CifarLayout("CIFAR-100", "CIFAR100", "cifar-100-python", ("train",), ("test",), "meta",
                            "cifar-100-python.tar.gz"),
}


def _unpickle(path: Path) -> dict:
    # CIFAR's batches were pickled by Python 2; latin1 maps its byte strings to str losslessly.
    # Like torchvision, this trusts the file: a pickle can run code, so read only files you trust.
    try:
        with open(path, "rb") as handle:
            entry = pickle.load(handle, encoding="latin1")
    except Exception as error:  # a damaged pickle can raise almost anything
        raise DataNotFoundError(f"{path}: cannot read it as a pickled CIFAR batch ({type(error).__name__}: "
                                f"{error}); corrupt or incomplete file?") from None
    if not isinstance(entry, dict):
        raise DataNotFoundError(f"{path}: holds a {type(entry).__name__}, not a CIFAR batch (a dict)")
    return entry


def _entry(entry: dict, key: str, path: Path):
    if key not in entry:
        raise DataNotFoundError(f"{path}: has no {key!r} entry (keys: {', '.join(map(str, entry))}); "
                                "wrong file for this dataset?")
    return entry[key]


def _read_cifar_batches(folder: Path, names: tuple[str, ...], label_key: str,
                        num_classes: int) -> tuple[torch.Tensor, torch.Tensor]:
    images, labels = [], []
    for name in names:
        path = folder / name
        entry = _unpickle(path)
        data = np.asarray(_entry(entry, "data", path))
        targets = np.asarray(_entry(entry, label_key, path))
        if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3 * 32 * 32:
            raise DataNotFoundError(f"{path}: 'data' must be uint8 [N, 3072], found {data.dtype} {list(data.shape)}")
        checked = _as_tensors(data.reshape(-1, 3, 32, 32), targets, num_classes, str(path))
        images.append(checked[0])
        labels.append(checked[1])
    return torch.cat(images), torch.cat(labels)


def cifar_advice(layout) -> str:
    return f"Unpack {layout.archive} into dataset.root (it holds {layout.folder}/ with {', '.join(layout.files)})"


def load_cifar(name: str, root: str, download: bool, label_mode: str = "fine") -> ImageDataset:
    """CIFAR-10 or CIFAR-100 (`label_mode` fine: 100 classes, coarse: 20 superclasses) from the python
    batches under `root`/cifar-10-batches-py or `root`/cifar-100-python, else torchvision's download."""
    layout = CIFAR_LAYOUTS[name]
    if name == "cifar100" and label_mode not in ("fine", "coarse"):
        raise ConfigError(f"dataset.label_mode={label_mode!r}: must be fine or coarse")
    label_key, names_key = ("labels", "label_names") if name == "cifar10" else \
        (f"{label_mode}_labels", f"{label_mode}_label_names")
    folders = [Path(root) / layout.folder, Path(root)]
    folder = _first_folder_with(folders, layout.files)
    if folder is None and download and _try_download(
            lambda datasets: getattr(datasets, layout.torchvision_name)(str(root), train=True, download=True)):
        folder = _first_folder_with(folders, layout.files)
    if folder is None:
        raise _not_found(layout.title, folders, download, cifar_advice(layout))
    meta_path = folder / layout.meta_file
    classes = [str(c) for c in _entry(_unpickle(meta_path), names_key, meta_path)]
    train_x, train_y = _read_cifar_batches(folder, layout.train_files, label_key, len(classes))
    test_x, test_y = _read_cifar_batches(folder, layout.test_files, label_key, len(classes))
    return ImageDataset(train_x, train_y, test_x, test_y, classes=classes)


# ================================================================ SVHN (.mat files)

SVHN_FILES = {"train": "train_32x32.mat", "test": "test_32x32.mat", "extra": "extra_32x32.mat"}


def _read_svhn_mat(path: Path, loadmat: Callable) -> tuple[torch.Tensor, torch.Tensor]:
    try:
        mat = loadmat(str(path))
        images, labels = np.asarray(mat["X"]), np.asarray(mat["y"])
    except Exception as error:  # scipy raises ValueError, TypeError, MatReadError, KeyError, ...
        raise DataNotFoundError(f"{path}: cannot read it as an SVHN .mat file ({type(error).__name__}: {error}); "
                                "corrupt or incomplete file?") from None
    if images.dtype != np.uint8 or images.ndim != 4 or images.shape[2] != 3:
        raise DataNotFoundError(f"{path}: 'X' must be uint8 [H, W, 3, N], found {images.dtype} {list(images.shape)}")
    labels = labels.astype(np.int64).reshape(-1)
    labels[labels == 10] = 0  # SVHN labels the digit 0 as 10; torchvision maps it to 0 as well
    return _as_tensors(np.transpose(images, (3, 2, 0, 1)), labels, 10, str(path))


def svhn_advice(names: list[str]) -> str:
    return f"Put {', '.join(names)} (the 'cropped digits' format) in dataset.root"


def load_svhn(root: str, download: bool, extra: bool = False) -> ImageDataset:
    """SVHN (cropped digits, 32x32) from `root`/svhn or `root`; `extra` adds the 531k extra images to
    the training split. Else torchvision's download into `root`/svhn."""
    if not isinstance(extra, bool):
        raise ConfigError(f"dataset.extra={extra!r}: must be true or false")
    try:
        from scipy.io import loadmat
    except ImportError:
        raise ConfigError("dataset=svhn reads .mat files with scipy, which is not installed: "
                          "pip install scipy") from None
    splits = ["train", "test"] + (["extra"] if extra else [])
    names = [SVHN_FILES[s] for s in splits]
    folders = [Path(root) / "svhn", Path(root)]
    folder = _first_folder_with(folders, names)
    if folder is None and download and all(
            _try_download(lambda datasets, split=split: datasets.SVHN(str(folders[0]), split=split, download=True))
            for split in splits):
        folder = _first_folder_with(folders, names)
    if folder is None:
        raise _not_found("SVHN", folders, download, svhn_advice(names))
    train_x, train_y = _read_svhn_mat(folder / SVHN_FILES["train"], loadmat)
    test_x, test_y = _read_svhn_mat(folder / SVHN_FILES["test"], loadmat)
    if extra:
        extra_x, extra_y = _read_svhn_mat(folder / SVHN_FILES["extra"], loadmat)
        train_x, train_y = torch.cat([train_x, extra_x]), torch.cat([train_y, extra_y])
    return ImageDataset(train_x, train_y, test_x, test_y, classes=list(SVHN_CLASSES))


# ================================================================ synthetic


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


def load_dataset(cfg):
    """Build the dataset named by `dataset.name` from its config section.

    Returns an ImageDataset, or for an image folder too large for memory a StreamedDataset
    (trainlab.data.stream) whose splits are decoded from disk batch by batch.
    """
    name = cfg.name
    if name == "fashion_mnist":
        return load_fashion_mnist(cfg.root, cfg.download, cfg.get("system_root"))
    if name == "mnist":
        return load_mnist(cfg.root, cfg.download)
    if name == "mnist_m":
        from trainlab.data.mnist_m import load_mnist_m

        return load_mnist_m(cfg.root)
    if name in CIFAR_LAYOUTS:
        return load_cifar(name, cfg.root, cfg.download, cfg.get("label_mode", "fine"))
    if name == "svhn":
        return load_svhn(cfg.root, cfg.download, cfg.get("extra", False))
    if name == "imagefolder":
        from trainlab.data.imagefolder import load_image_folder

        return load_image_folder(cfg)
    if name == "synthetic":
        keys = ("num_train", "num_test", "num_classes", "channels", "image_size", "noise", "generator_seed")
        return make_synthetic(**{k: cfg[k] for k in keys if k in cfg})
    if name == "gaussian":  # float inputs, not uint8 images: trainlab.commands.activations builds them itself
        raise gaussian_only()
    raise ConfigError(f"dataset.name={name!r}: unknown dataset; choose one of {', '.join(DATASET_NAMES)}")


def check_files(cfg) -> None:
    """Before a run folder is made: the files the dataset reads are where the loader will look (only names
    are looked at; a file's contents are checked when it is read). With dataset.download on, files that are
    missing are left to the download."""
    name, root = cfg.get("name"), Path(str(cfg.get("root", "data"))).expanduser()
    download = bool(cfg.get("download", False))
    if name in ("fashion_mnist", "mnist"):
        family = FASHION_MNIST if name == "fashion_mnist" else MNIST
        system = (cfg.get("system_root") or SYSTEM_FASHION_MNIST) if name == "fashion_mnist" else None
        folders = _mnist_family_folders(root, family.torchvision_name, Path(system) if system else None)
        if _mnist_family_paths(folders) is None and not download:
            raise _not_found(family.title, folders, download, family.how_to_get)
    elif name == "mnist_m":
        from trainlab.data import mnist_m

        if mnist_m.find(root) is None:
            raise mnist_m.not_found(root)
    elif name in CIFAR_LAYOUTS:
        layout = CIFAR_LAYOUTS[name]
        folders = [root / layout.folder, root]
        if _first_folder_with(folders, layout.files) is None and not download:
            raise _not_found(layout.title, folders, download, cifar_advice(layout))
    elif name == "svhn":
        names = [SVHN_FILES[s] for s in ["train", "test"] + (["extra"] if cfg.get("extra", False) is True else [])]
        folders = [root / "svhn", root]
        if _first_folder_with(folders, names) is None and not download:
            raise _not_found("SVHN", folders, download, svhn_advice(names))
    elif name == "imagefolder" and not root.is_dir():
        from trainlab.data.imagefolder import scan_image_folder

        scan_image_folder(root)  # its own message for a missing folder


@dataclass
class DatasetShape:
    """What a dataset config says about its data before any file is read: enough for dry builds."""

    input_shape: tuple[int, int, int]
    num_classes: int               # for an image folder, unknown until scanned: 2 stands in
    train_examples: Optional[int]  # the official training split's size, when known


# dataset=gaussian: unit-Gaussian float vectors (not images), made by `trainlab activations` for its own use.
def gaussian_only() -> ConfigError:
    return ConfigError("dataset=gaussian: unit-Gaussian inputs for `trainlab activations` only (no images to "
                       "train, augment or evaluate on); use it there, or choose another dataset, "
                       "e.g. dataset=synthetic")


KNOWN_SHAPES = {"fashion_mnist": ((1, 28, 28), 10, 60000), "mnist": ((1, 28, 28), 10, 60000),
                "mnist_m": ((3, 28, 28), 10, 59001),
                "cifar10": ((3, 32, 32), 10, 50000), "svhn": ((3, 32, 32), 10, 73257)}


def describe(cfg) -> DatasetShape:
    """The image shape, class count and training-split size that `cfg` (a dataset section) will give,
    checked from its keys alone (no file is read)."""
    name = cfg.name
    if name in KNOWN_SHAPES:
        shape, classes, train = KNOWN_SHAPES[name]
        if name == "svhn" and cfg.get("extra", False):
            train += 531131
        return DatasetShape(shape, classes, train)
    if name == "cifar100":
        mode = cfg.get("label_mode", "fine")
        if mode not in ("fine", "coarse"):
            raise ConfigError(f"dataset.label_mode={mode!r}: must be fine (100 classes) or coarse (20)")
        return DatasetShape((3, 32, 32), 100 if mode == "fine" else 20, 50000)
    if name == "imagefolder":
        from trainlab.data.imagefolder import FolderSettings

        settings = FolderSettings.from_cfg(cfg)
        return DatasetShape((settings.channels, *settings.image_size), 2, None)
    if name == "synthetic":
        size, channels = cfg.get("image_size", 28), cfg.get("channels", 1)
        classes, train = cfg.get("num_classes", 10), cfg.get("num_train", 2000)
        for key, value in (("image_size", size), ("channels", channels), ("num_classes", classes), ("num_train", train)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"dataset.{key}={value!r}: must be a whole number >= 1")
        return DatasetShape((channels, size, size), classes, train)
    if name == "gaussian":  # configs/dataset/gaussian.yaml: its `command` is `activations` in that command only
        if cfg.get("command") != "activations":
            raise gaussian_only()
        dim, samples, classes = cfg.get("dim", 500), cfg.get("samples", 1000), cfg.get("num_classes", 10)
        for key, value in (("dim", dim), ("samples", samples), ("num_classes", classes)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"dataset.{key}={value!r}: must be a whole number >= 1")
        seed = cfg.get("generator_seed", 0)
        if isinstance(seed, bool) or not isinstance(seed, int):
            raise ConfigError(f"dataset.generator_seed={seed!r}: must be a whole number")
        return DatasetShape((1, 1, dim), classes, samples)
    raise ConfigError(f"dataset.name={name!r}: unknown dataset; choose one of {', '.join(DATASET_NAMES)}")
