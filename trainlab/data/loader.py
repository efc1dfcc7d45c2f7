"""Batches from a dataset that lives on the device: an index slice per batch, no worker processes.

Shuffling, augmentation and normalization all run batched on the device, drawn from one seeded
torch.Generator per loader, so an epoch costs no host round trip and a run is reproducible.
"""

from __future__ import annotations

import copy
import math
from typing import Callable, Iterator, Optional

import torch


class BatchFinisher:
    """What happens to a uint8 batch once it is on the device, whichever loader brought it there:
    augmentation, then preprocessing (and the memory format), once per view when TTA asks for views."""

    augment: Optional[Callable]
    views: Optional[Callable]
    normalize: Callable[[torch.Tensor], torch.Tensor]
    channels_last: bool
    generator: torch.Generator
    shuffle: bool
    epoch_order: Optional[torch.Tensor] = None  # the order of the epoch being drawn (None: not shuffled)
    _continue_at: Optional[tuple[Optional[torch.Tensor], int]] = None

    def continue_epoch(self, order: Optional[torch.Tensor], start: int) -> None:
        """Make the next pass continue an epoch a checkpoint stopped inside: the same order, from batch
        `start` (the generator state that goes with it is restored by the caller)."""
        self._continue_at = (order, start)

    def _epoch_start(self, count: int, device) -> tuple[Optional[torch.Tensor], int]:
        """(order, first batch) of the pass beginning: a fresh permutation from the generator (when
        shuffling), or the epoch continue_epoch() named."""
        if self._continue_at is not None:
            order, start = self._continue_at
            self._continue_at = None
            order = order.to(device) if order is not None else None
        else:
            order = torch.randperm(count, generator=self.generator, device=device) if self.shuffle else None
            start = 0
        self.epoch_order = order
        return order, start

    def finish(self, images: torch.Tensor) -> torch.Tensor:
        if self.augment is not None:
            images = self.augment(images, self.generator)
        if self.views is not None:  # [V, N, C, H, W]: the trainer averages over the views
            return torch.stack([self._prepare(view) for view in self.views(images)])
        return self._prepare(images)

    def _prepare(self, images: torch.Tensor) -> torch.Tensor:
        images = self.normalize(images)
        return images.contiguous(memory_format=torch.channels_last) if self.channels_last else images

    def with_views(self, views: Callable):
        """The same data and preprocessing, each batch given as several views (for TTA)."""
        twin = copy.copy(self)
        twin.views = views
        return twin


class DeviceLoader(BatchFinisher):
    def __init__(
        self,
        images: torch.Tensor,
        labels: torch.Tensor,
        batch_size: int,
        *,
        normalize: Callable[[torch.Tensor], torch.Tensor],
        augment: Optional[Callable] = None,
        shuffle: bool = False,
        drop_last: bool = False,
        seed: int = 0,
        channels_last: bool = False,
        views: Optional[Callable] = None,
    ):
        if images.shape[0] != labels.shape[0]:
            raise ValueError(f"{images.shape[0]} images but {labels.shape[0]} labels")
        self.images = images
        self.labels = labels
        self.batch_size = min(batch_size, images.shape[0]) if drop_last else batch_size
        self.normalize = normalize
        self.augment = augment
        self.shuffle = shuffle
        self.drop_last = drop_last
        self.channels_last = channels_last
        self.views = views  # test-time augmentation: uint8 batch -> list of views
        self.generator = torch.Generator(device=images.device).manual_seed(seed)

    @property
    def num_samples(self) -> int:
        return self.images.shape[0]

    def __len__(self) -> int:
        if self.drop_last:
            return self.num_samples // self.batch_size
        return math.ceil(self.num_samples / self.batch_size)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        order, start = self._epoch_start(self.num_samples, self.images.device)
        for i in range(start, len(self)):
            window = slice(i * self.batch_size, (i + 1) * self.batch_size)
            if order is None:
                images, labels = self.images[window], self.labels[window]
            else:
                index = order[window]
                images, labels = self.images[index], self.labels[index]
            yield self.finish(images), labels

