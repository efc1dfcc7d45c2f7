"""Held-out validation splits: stratified by class and seeded."""

from __future__ import annotations

import torch

from trainlab.errors import ConfigError


def val_count(val_size: int | float, total: int) -> int:
    """A validation size given as a count or a fraction of `total`, as a count."""
    count = round(val_size * total) if isinstance(val_size, float) else int(val_size)
    if isinstance(val_size, float) and count == 0:
        raise ConfigError(f"dataset.val_size={val_size}: is 0 examples of {total}; hold out at least one")
    if count >= total:
        raise ConfigError(f"dataset.val_size={val_size}: leaves no training examples (the training split has {total})")
    return count


def stratified_split(labels: torch.Tensor, val_size: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Indices (train, val) with `val_size` examples held out, each class in proportion to its size.

    Per-class counts use largest remainders so they add up to exactly `val_size`. Both index sets are
    sorted, so the training examples keep the dataset's own order ("the first N" stays meaningful).
    """
    total = labels.numel()
    classes, counts = torch.unique(labels, return_counts=True)
    quotas = counts.double() * val_size / total
    take = quotas.floor().long()
    shortfall = val_size - int(take.sum())
    if shortfall:
        order = torch.argsort(quotas - take, descending=True, stable=True)
        take[order[:shortfall]] += 1
    gen = torch.Generator().manual_seed(seed)
    held_out = []
    for cls, k in zip(classes.tolist(), take.tolist()):
        members = torch.nonzero(labels == cls).flatten()
        held_out.append(members[torch.randperm(members.numel(), generator=gen)[:k]])
    val_mask = torch.zeros(total, dtype=torch.bool)
    val_mask[torch.cat(held_out)] = True
    return torch.nonzero(~val_mask).flatten(), torch.nonzero(val_mask).flatten()
