"""Batches from a dataset that lives on the device: an index slice per batch, no worker processes.

Shuffling, augmentation and normalization all run batched on the device, drawn from one seeded
torch.Generator per loader, so an epoch costs no host round trip and a run is reproducible.
"""

from __future__ import annotations

import copy
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
    # data parallel (trainlab.distributed): this process's share of every batch, and the generator the
    # epoch's permutation comes from (the same on every rank; augmentation draws from `generator`, per rank)
    rank: int = 0
    ranks: int = 1
    order_generator: Optional[torch.Generator] = None

    def shard(self, rank: int, ranks: int, seed: int) -> None:
        """Give this process part `rank` of `ranks` of every batch (the global batch stays batch_size): the
        ranks draw one permutation from one seeded generator, so together their batches are the epoch one
        process would see; augmentation and mixing draw from a generator of this rank's own."""
        self.rank, self.ranks = rank, ranks
        if ranks > 1:
            self.order_generator = self.generator
            self.generator = torch.Generator(device=self.generator.device).manual_seed(seed + 1_000_003 * (rank + 1))

    def part(self, start: int, stop: int) -> tuple[int, int]:
        """This rank's positions of the batch [start, stop) (as even as can be: torch.tensor_split's sizes)."""
        size, extra = divmod(stop - start, self.ranks)
        first = start + self.rank * size + min(self.rank, extra)
        return first, first + size + (1 if self.rank < extra else 0)

    def batch_count(self, num_samples: int) -> int:
        """Batches per pass. A last partial training batch smaller than the number of ranks is left out when
        training on several (some rank would have no sample to step on)."""
        full, rest = divmod(num_samples, self.batch_size)
        if rest == 0 or self.drop_last or (self.ranks > 1 and self.shuffle and rest < self.ranks):
            return full
        return full + 1

    def global_batch(self, index: int) -> int:
        """Samples of batch `index` over all ranks (the trainer weighs an uneven split of the last one)."""
        return min(self.batch_size, self.num_samples - index * self.batch_size)

    def rng_state(self) -> dict:
        state = {"loader": self.generator.get_state()}
        if self.order_generator is not None:
            state["order"] = self.order_generator.get_state()
        return state

    def set_rng_state(self, state: dict) -> None:
        self.generator.set_state(state["loader"].cpu())
        if self.order_generator is not None and "order" in state:
            self.order_generator.set_state(state["order"].cpu())

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
            orders = self.order_generator if self.order_generator is not None else self.generator
            order = torch.randperm(count, generator=orders, device=device) if self.shuffle else None
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
        return self.batch_count(self.num_samples)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        order, start = self._epoch_start(self.num_samples, self.images.device)
        for i in range(start, len(self)):
            window = slice(*self.part(i * self.batch_size, min((i + 1) * self.batch_size, self.num_samples)))
            if window.start == window.stop:  # an evaluation batch smaller than the number of ranks
                continue
            if order is None:
                images, labels = self.images[window], self.labels[window]
            else:
                index = order[window]
                images, labels = self.images[index], self.labels[index]
            yield self.finish(images), labels

