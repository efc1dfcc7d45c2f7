"""A person's own images: `root/train/<class>/*.jpg` plus optional `root/val/<class>` and `root/test/<class>`.

Classes are the sorted subfolder names of train/ (val/ and test/ use the same class list). Every image
is resized to `dataset.image_size` with `dataset.channels` (1 or 3) channels. A folder whose decoded
images fit in `dataset.max_memory_mb` is decoded once into a uint8 tensor cache file (in
`dataset.cache_dir`, default `<root>/.trainlab_cache`), keyed by a fingerprint of the files (relative
paths, sizes, mtimes) and the size/channels asked for: reused while nothing changes, rebuilt when
something does, written atomically. A larger folder streams from disk (trainlab.data.stream).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import torch

from trainlab.data.datasets import ImageDataset
from trainlab.data.stream import ImageFiles, StreamedDataset, decode_all
from trainlab.errors import ConfigError, DataNotFoundError

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp")
CACHE_VERSION = 1
DEFAULT_MAX_MEMORY_MB = 2048


# ================================================================ settings


def _whole(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def parse_image_size(value: Any) -> tuple[int, int]:
    """dataset.image_size as (height, width): a whole number (square) or [height, width]."""
    if _whole(value):
        size = (value, value)
    elif not isinstance(value, (str, bytes)) and hasattr(value, "__len__") and len(value) == 2 \
            and all(_whole(v) for v in value):
        size = (value[0], value[1])
    else:
        size = None
    if size is None or min(size) < 1:
        raise ConfigError(f"dataset.image_size={value!r}: must be a whole number >= 1 or [height, width]")
    return int(size[0]), int(size[1])


@dataclass
class FolderSettings:
    """The validated imagefolder keys of a dataset config."""

    root: Path
    image_size: tuple[int, int]
    channels: int = 3
    max_memory_mb: float = DEFAULT_MAX_MEMORY_MB
    cache_dir: Optional[Path] = None  # None: <root>/.trainlab_cache
    num_workers: int = 2

    @classmethod
    def from_cfg(cls, cfg) -> "FolderSettings":
        if str(cfg.get("root", "")) in ("", "???", "None"):
            raise ConfigError("dataset.root: required for an image folder: dataset.root=/path/to/folder "
                              "(the folder holding train/<class name>/<images>)")
        if cfg.get("image_size") is None:
            raise ConfigError("dataset.image_size: required for an image folder (a whole number or [height, width])")
        channels = cfg.get("channels", 3)
        if channels not in (1, 3) or isinstance(channels, bool):
            raise ConfigError(f"dataset.channels={channels!r}: must be 1 (greyscale) or 3 (RGB)")
        memory = cfg.get("max_memory_mb", DEFAULT_MAX_MEMORY_MB)
        if not isinstance(memory, (int, float)) or isinstance(memory, bool) or memory < 0:
            raise ConfigError(f"dataset.max_memory_mb={memory!r}: must be a number >= 0 (0 = always stream)")
        workers = cfg.get("num_workers", 2)
        if not _whole(workers) or workers < 0:
            raise ConfigError(f"dataset.num_workers={workers!r}: must be a whole number >= 0")
        cache_dir = cfg.get("cache_dir")
        if cache_dir is not None and not isinstance(cache_dir, str):
            raise ConfigError(f"dataset.cache_dir={cache_dir!r}: must be a folder path or null")
        return cls(Path(str(cfg.root)).expanduser(), parse_image_size(cfg.get("image_size")), channels, memory,
                   Path(cache_dir).expanduser() if cache_dir else None, workers)

    @property
    def cache_folder(self) -> Path:
        return self.cache_dir if self.cache_dir is not None else self.root / ".trainlab_cache"

    @property
    def bytes_per_image(self) -> int:
        return self.channels * self.image_size[0] * self.image_size[1]


# ================================================================ scanning


@dataclass
class FolderSplit:
    files: list[Path] = field(default_factory=list)
    labels: list[int] = field(default_factory=list)


@dataclass
class FolderIndex:
    """What an image folder holds: the class names and each split's files and labels."""

    root: Path
    classes: list[str]
    splits: dict[str, FolderSplit]  # "train" always; "val" and "test" when their folders exist

    @property
    def total(self) -> int:
        return sum(len(split.files) for split in self.splits.values())


def _visible_subfolders(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))


def _images_in(folder: Path) -> list[Path]:
    """Image files under `folder` (subfolders included), in a stable sorted order; hidden ones skipped."""
    found = []
    for parent, dirs, names in os.walk(folder, followlinks=True):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        found.extend(Path(parent) / n for n in sorted(names)
                     if not n.startswith(".") and n.lower().endswith(IMAGE_EXTENSIONS))
    return found


def _scan_split(folder: Path, classes: list[str]) -> FolderSplit:
    present = _visible_subfolders(folder)
    if not present:
        loose = len(_images_in(folder))
        what = f"{loose} images lie directly in it" if loose else "it holds no class folders"
        raise DataNotFoundError(f"{folder}: {what}; put each class's images in its own subfolder, "
                                f"{folder}/<class name>/*{'|*'.join(IMAGE_EXTENSIONS)}")
    unknown = [name for name in present if name not in classes]
    if unknown:
        raise DataNotFoundError(
            f"{folder}: class folders not in {folder.parent / 'train'}: {', '.join(unknown[:5])}"
            f"{' ...' if len(unknown) > 5 else ''}; val/ and test/ must use the training classes "
            f"({', '.join(classes[:10])}{' ...' if len(classes) > 10 else ''})"
        )
    split = FolderSplit()
    for name in present:
        images = _images_in(folder / name)
        if not images:
            raise DataNotFoundError(f"{folder / name}: empty class folder (no {', '.join(IMAGE_EXTENSIONS)} "
                                    "files); add images or remove the folder")
        split.files.extend(images)
        split.labels.extend([classes.index(name)] * len(images))
    return split


def scan_image_folder(root: str | Path) -> FolderIndex:
    """Find the classes and image files of an image folder, or raise DataNotFoundError saying what is wrong."""
    root = Path(root).expanduser()
    if not root.is_dir():
        raise DataNotFoundError(f"dataset.root={root}: folder not found; an image folder dataset reads "
                                f"{root}/train/<class name>/<images> (plus optional val/ and test/)")
    train = root / "train"
    if not train.is_dir():
        raise DataNotFoundError(f"{root}: has no train/ folder; put the training images in "
                                f"{train}/<class name>/ (one subfolder per class), optionally val/ and test/ alike")
    classes = _visible_subfolders(train)
    splits = {"train": _scan_split(train, classes)}
    for name in ("val", "test"):
        if (root / name).is_dir():
            splits[name] = _scan_split(root / name, classes)
    return FolderIndex(root, classes, splits)


# ================================================================ cache


def fingerprint(index: FolderIndex, image_size: tuple[int, int], channels: int) -> str:
    """A hash of everything the decoded tensors depend on: each file's path relative to the root, size
    and mtime, the classes, the image size and channels (and the cache format's version)."""
    digest = hashlib.sha256(json.dumps([CACHE_VERSION, index.classes, list(image_size), channels]).encode())
    for name in sorted(index.splits):
        for path in index.splits[name].files:
            stat = path.stat()
            digest.update(json.dumps([name, path.relative_to(index.root).as_posix(), stat.st_size,
                                      stat.st_mtime_ns]).encode())
    return digest.hexdigest()


def cache_path(settings: FolderSettings) -> Path:
    height, width = settings.image_size
    return settings.cache_folder / f"images_{height}x{width}_c{settings.channels}.pt"


def _read_cache(path: Path, key: str, index: FolderIndex, shape: tuple[int, int, int]) -> dict | None:
    if not path.is_file():
        return None
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception:  # damaged, cut off or from an incompatible version: decode again
        return None
    if not isinstance(payload, dict) or payload.get("fingerprint") != key:
        return None
    images = payload.get("images")
    if not isinstance(images, dict) or set(images) != set(index.splits):
        return None
    for name, split in index.splits.items():
        tensor = images[name]
        if not isinstance(tensor, torch.Tensor) or tensor.dtype != torch.uint8 or \
                tuple(tensor.shape) != (len(split.files), *shape):
            return None
    return images


def _write_cache(path: Path, payload: dict) -> None:
    """Write next to the target, then rename: a reader sees the old file or the whole new one, never half."""
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.save(payload, temporary)
        os.replace(temporary, path)
    except OSError as error:
        with contextlib.suppress(OSError):
            temporary.unlink(missing_ok=True)
        warnings.warn(f"dataset.cache_dir: cannot write {path} ({error}); the images will be decoded again next "
                      "run (set dataset.cache_dir to a writable folder)", stacklevel=2)


# ================================================================ loading


def _files(split: FolderSplit | None, settings: FolderSettings) -> ImageFiles:
    split = split or FolderSplit()
    return ImageFiles(split.files, split.labels, settings.image_size, settings.channels)


def load_image_folder(cfg) -> ImageDataset | StreamedDataset:
    """An image folder as an ImageDataset (decoded, cached) when it fits in dataset.max_memory_mb, else as
    a StreamedDataset. Its own val/ becomes val_images/val_labels (or .val); no test/ gives an empty test split."""
    settings = FolderSettings.from_cfg(cfg)
    index = scan_image_folder(settings.root)
    if index.total * settings.bytes_per_image > settings.max_memory_mb * 2 ** 20:
        return StreamedDataset(train=_files(index.splits["train"], settings),
                               test=_files(index.splits.get("test"), settings), classes=index.classes,
                               val=_files(index.splits["val"], settings) if "val" in index.splits else None,
                               num_workers=settings.num_workers)
    return _load_in_memory(index, settings)


def _load_in_memory(index: FolderIndex, settings: FolderSettings) -> ImageDataset:
    key = fingerprint(index, settings.image_size, settings.channels)
    path = cache_path(settings)
    shape = (settings.channels, *settings.image_size)
    images = _read_cache(path, key, index, shape)
    if images is None:
        images = {name: decode_all(_files(split, settings), settings.num_workers)
                  for name, split in index.splits.items()}
        _write_cache(path, {"fingerprint": key, "version": CACHE_VERSION, "classes": index.classes,
                            "images": images})

    def labels(name: str) -> torch.Tensor:
        return torch.tensor(index.splits[name].labels if name in index.splits else [], dtype=torch.int64)

    empty = torch.empty((0, *shape), dtype=torch.uint8)
    return ImageDataset(
        train_images=images["train"], train_labels=labels("train"),
        test_images=images.get("test", empty), test_labels=labels("test"),
        classes=list(index.classes),
        val_images=images.get("val"), val_labels=labels("val") if "val" in index.splits else None,
    )
