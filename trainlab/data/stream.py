"""Images decoded from files batch by batch, for image folders too large to hold in memory.

`ImageFiles` is a torch Dataset over a file list that returns uint8 [C, H, W] tensors of one fixed
size; `StreamLoader` feeds it through a DataLoader with worker processes and a uint8 collate, then
does what DeviceLoader does on the device: augmentation (per sample, from its own seeded generator)
and normalization. Shuffling draws from that same generator, on the device, exactly as DeviceLoader
does, so the two loaders give the same batches for the same data and seed, and saving/restoring
`generator` (what resume does) continues the same order and augmentation.
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass
from typing import Callable, Iterator, Optional, Sequence

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from trainlab.data.loader import BatchFinisher
from trainlab.errors import DataNotFoundError


class UnreadableImageError(DataNotFoundError):
    """An image file that cannot be decoded; the message names the file.

    Raised in a DataLoader worker, torch re-raises it in the main process as
    UnreadableImageError("Caught ... Original Traceback ...: <message>"); keep just the message, so a
    person reads the same one line with workers or without.
    """

    def __init__(self, message: str):
        if "Original Traceback" in message:
            last = message.strip().splitlines()[-1]
            message = last.split(": ", 1)[1] if ": " in last else last
        super().__init__(message)


def _decode_with_pillow(path: str, channels: int) -> torch.Tensor:
    from PIL import Image

    with Image.open(path) as image:
        array = np.array(image.convert("L" if channels == 1 else "RGB"))
    tensor = torch.from_numpy(array)
    return tensor[None] if channels == 1 else tensor.permute(2, 0, 1).contiguous()


def _decode_with_torchvision(path: str, channels: int) -> torch.Tensor:
    from torchvision.io import ImageReadMode, decode_image, read_file

    with warnings.catch_warnings():  # torchvision 0.29 deprecates its decoders (for TorchCodec); still the fastest here
        warnings.filterwarnings("ignore", "The image decoding and encoding capabilities of TorchVision",
                                DeprecationWarning)
        return decode_image(read_file(path), mode=ImageReadMode.GRAY if channels == 1 else ImageReadMode.RGB,
                            apply_exif_orientation=True)


def _to_channels(image: torch.Tensor, channels: int) -> torch.Tensor:
    from torchvision.transforms.v2.functional import rgb_to_grayscale

    if image.shape[0] in (2, 4):  # drop alpha
        image = image[:-1]
    if image.shape[0] == channels:
        return image
    return rgb_to_grayscale(image) if channels == 1 else image.expand(3, -1, -1)


def decode_image_file(path: str, image_size: tuple[int, int], channels: int) -> torch.Tensor:
    """uint8 [channels, H, W] of an image file: greyscale, RGB or RGBA become `channels` (1 or 3) and
    the image is resized (antialiased) to `image_size` (H, W) unless it already has that size.

    torchvision decodes JPEG, PNG, WebP and GIF; Pillow takes what it cannot (BMP), and everything
    once torchvision drops its decoders."""
    from torchvision.transforms.v2.functional import resize, to_dtype

    try:
        try:
            image = _decode_with_torchvision(path, channels)
        except (RuntimeError, ImportError):  # a format torchvision does not decode, or a damaged file
            image = _decode_with_pillow(path, channels)
    except Exception as error:
        raise UnreadableImageError(f"{path}: cannot decode this image ({type(error).__name__}: {error}); "
                                   "remove or replace the file") from None
    if image.dtype != torch.uint8:  # 16-bit PNG
        image = to_dtype(image, torch.uint8, scale=True)
    if image.shape[0] != channels:  # torchvision keeps WebP's colours whatever mode asks for
        image = _to_channels(image, channels)
    if tuple(image.shape[-2:]) != tuple(image_size):
        image = resize(image, list(image_size), antialias=True)
    return image.contiguous()


def _import_decoders() -> None:
    """Import the decoders in this process before workers fork, so that each does not import them again
    (torchvision takes seconds to import)."""
    import torchvision.io  # noqa: F401
    import torchvision.transforms.v2.functional  # noqa: F401


def _iterate(loader: DataLoader) -> Iterator:
    """The batches of `loader`. An error from a worker is re-raised without the DataLoader's frames:
    torch's re-raise leaves the exception in a reference cycle with them, which keeps the workers'
    iterator alive until the garbage collector runs (in a later forked worker, say, where shutting it
    down hangs for 10 s); without the frames it goes away, and its workers with it, at once."""
    iterator = iter(loader)
    while True:
        try:
            batch = next(iterator)
        except StopIteration:
            return
        except Exception as error:
            del iterator, loader
            raise error.with_traceback(None) from None
        yield batch


class _Paths:
    """File paths as one byte array plus offsets: a DataLoader worker reads them without touching
    Python refcounts (a list of str gets copied into each forked worker, page by page, as it is read)."""

    def __init__(self, paths: Sequence):
        encoded = [os.fsencode(p) for p in paths]
        self._offsets = np.cumsum([0] + [len(e) for e in encoded], dtype=np.int64)
        self._blob = np.frombuffer(b"".join(encoded), dtype=np.uint8).copy()

    def __len__(self) -> int:
        return len(self._offsets) - 1

    def __getitem__(self, index: int) -> str:
        return os.fsdecode(self._blob[self._offsets[index]:self._offsets[index + 1]].tobytes())


class ImageFiles(Dataset):
    """A torch Dataset over image files: item i is (uint8 [C, H, W] of paths[i], labels[i])."""

    def __init__(self, paths: Sequence, labels, image_size: tuple[int, int], channels: int):
        self.paths = paths if isinstance(paths, _Paths) else _Paths(paths)
        self.labels = torch.as_tensor(labels, dtype=torch.int64).reshape(-1)
        if len(self.paths) != self.labels.numel():
            raise ValueError(f"{len(self.paths)} files but {self.labels.numel()} labels")
        self.image_size = (int(image_size[0]), int(image_size[1]))
        self.channels = int(channels)

    @property
    def shape(self) -> tuple[int, int, int]:
        return (self.channels, *self.image_size)

    def __len__(self) -> int:
        return self.labels.numel()

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        return decode_image_file(self.paths[index], self.image_size, self.channels), int(self.labels[index])

    def path(self, index: int) -> str:
        return self.paths[index]

    def subset(self, indices) -> "ImageFiles":
        """The files at `indices` (a sequence or an index tensor), in that order."""
        indices = torch.as_tensor(indices, dtype=torch.int64).reshape(-1)
        return ImageFiles([self.paths[i] for i in indices.tolist()], self.labels[indices], self.image_size,
                          self.channels)


def collate_uint8(batch: list[tuple[torch.Tensor, int]]) -> tuple[torch.Tensor, torch.Tensor]:
    """Stack a list of (uint8 image, label) into uint8 [N, C, H, W] and int64 [N]: no float copy on the host."""
    images, labels = zip(*batch)
    return torch.stack(images), torch.tensor(labels, dtype=torch.int64)


def decode_all(files: ImageFiles, num_workers: int = 0, batch_size: int = 64) -> torch.Tensor:
    """Every image of `files` as one uint8 [N, C, H, W] tensor (decoded by `num_workers` processes)."""
    out = torch.empty((len(files), *files.shape), dtype=torch.uint8)
    if len(files) == 0:
        return out
    if num_workers > 0:
        _import_decoders()
    loader = DataLoader(files, batch_size=batch_size, num_workers=num_workers, collate_fn=collate_uint8)
    start = 0
    for images, _ in _iterate(loader):
        out[start:start + images.shape[0]] = images
        start += images.shape[0]
    return out


def sample_images(files: ImageFiles, count: int, seed: int, num_workers: int = 0) -> torch.Tensor:
    """A seeded random sample of up to `count` images as uint8 [n, C, H, W]: enough for normalization
    statistics and for augmentation ops that learn from the data, without decoding a whole large set."""
    if len(files) > count:
        pick = torch.randperm(len(files), generator=torch.Generator().manual_seed(seed))[:count]
        files = files.subset(pick.sort().values)
    return decode_all(files, num_workers)


@dataclass
class StreamedDataset:
    """A dataset whose splits stay on disk as image files (the streaming twin of ImageDataset)."""

    train: ImageFiles
    test: ImageFiles
    classes: list[str]
    val: Optional[ImageFiles] = None  # the dataset's own validation split (an image folder's val/)
    num_workers: int = 2              # DataLoader workers for decoding

    @property
    def input_shape(self) -> tuple[int, int, int]:
        return self.train.shape

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def train_labels(self) -> torch.Tensor:
        return self.train.labels

    @property
    def val_labels(self) -> Optional[torch.Tensor]:
        return None if self.val is None else self.val.labels


def split_streamed(dataset: StreamedDataset, val_size, train_size, seed: int, folds: Optional[int] = None,
                   fold: Optional[int] = 0) -> tuple[ImageFiles, ImageFiles]:
    """(train files, val files), chosen exactly as splits.split_train_val chooses them for tensors."""
    from trainlab.data.splits import train_val_indices

    own_val = dataset.val is not None
    train_idx, val_idx = train_val_indices(dataset.train.labels, val_size, train_size, seed, folds, fold, own_val)
    return dataset.train.subset(train_idx), dataset.val if own_val else dataset.train.subset(val_idx)


class _EpochBatches(Sampler):
    """The batch sampler a StreamLoader hands its DataLoader: this epoch's batches, set before each epoch
    (one DataLoader per StreamLoader, so its worker processes persist across epochs)."""

    def __init__(self):
        self.batches: list[list[int]] = []

    def __iter__(self):
        return iter(self.batches)

    def __len__(self) -> int:
        return len(self.batches)


class StreamLoader(BatchFinisher):
    """DeviceLoader's interface over an ImageFiles dataset: yields (normalized float images, labels) on
    `device`, decoding in `num_workers` DataLoader processes (pinned memory and non-blocking copies on
    CUDA) and augmenting/normalizing batched on the device."""

    def __init__(
        self,
        dataset: Dataset,
        batch_size: int,
        *,
        normalize: Callable[[torch.Tensor], torch.Tensor],
        augment: Optional[Callable] = None,
        shuffle: bool = False,
        drop_last: bool = False,
        seed: int = 0,
        device: torch.device | str = "cpu",
        num_workers: int = 0,
        channels_last: bool = False,
        views: Optional[Callable] = None,
        prefetch_factor: int = 2,
    ):
        if batch_size < 1 or num_workers < 0:
            raise ValueError(f"batch_size={batch_size} must be >= 1 and num_workers={num_workers} >= 0")
        self.dataset = dataset
        self.batch_size = max(1, min(batch_size, len(dataset))) if drop_last else batch_size
        self.normalize = normalize
        self.augment = augment
        self.shuffle = shuffle
        self.drop_last = drop_last
        self.device = torch.device(device)
        self.num_workers = num_workers
        self.channels_last = channels_last
        self.views = views  # test-time augmentation: uint8 batch -> list of views
        self.prefetch_factor = prefetch_factor
        self.generator = torch.Generator(device=self.device).manual_seed(seed)
        self._batches = _EpochBatches()
        self._loader: Optional[DataLoader] = None  # made on first use: no worker starts before then

    @property
    def num_samples(self) -> int:
        return len(self.dataset)

    def __len__(self) -> int:
        return self.batch_count(self.num_samples)

    def _data_loader(self) -> DataLoader:
        if self._loader is None:
            workers = self.num_workers
            if workers > 0:
                _import_decoders()
            self._loader = DataLoader(
                self.dataset, batch_sampler=self._batches, num_workers=workers, collate_fn=collate_uint8,
                pin_memory=self.device.type == "cuda", persistent_workers=workers > 0,
                prefetch_factor=self.prefetch_factor if workers > 0 else None,
            )
        return self._loader

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        n = self.num_samples
        order, start = self._epoch_start(n, self.device)  # drawn like DeviceLoader's, from the same generator
        order = order.cpu() if order is not None else torch.arange(n)
        # each rank its part of every batch, as DeviceLoader does (not torch's DistributedSampler: it pads
        # the epoch with repeated samples, so the ranks' union would not be the single-process epoch)
        self._batches.batches = [order[slice(*self.part(i * self.batch_size, min((i + 1) * self.batch_size, n)))]
                                 .tolist() for i in range(start, len(self))]
        self._batches.batches = [batch for batch in self._batches.batches if batch]  # (see DeviceLoader)
        if not self._batches.batches:
            return
        try:
            for images, labels in _iterate(self._data_loader()):
                images = images.to(self.device, non_blocking=True)
                labels = labels.to(self.device, non_blocking=True)
                yield self.finish(images), labels
        except Exception:
            self._loader = None  # its workers shut down now (see _iterate); a next epoch starts new ones
            raise

    def with_views(self, views: Callable) -> "StreamLoader":
        twin = super().with_views(views)
        twin._batches, twin._loader = _EpochBatches(), None  # its own DataLoader and workers
        return twin
