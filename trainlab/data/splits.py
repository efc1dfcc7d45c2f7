"""Held-out validation splits: stratified by class and seeded; or k-fold cross-validation folds."""

from __future__ import annotations

from typing import Optional

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


def check_folds(folds: Optional[int], fold: Optional[int], total: Optional[int] = None) -> None:
    """ConfigError unless folds is null or a whole number in [2, total] and fold is in 0..folds-1."""
    def whole(value) -> bool:
        return isinstance(value, int) and not isinstance(value, bool)

    if folds is None:
        if fold not in (None, 0):
            raise ConfigError(f"dataset.fold={fold!r}: only means something with dataset.folds=k (k >= 2)")
        return
    if not whole(folds) or folds < 2:
        raise ConfigError(f"dataset.folds={folds!r}: must be null (no cross-validation) or a whole number >= 2")
    if total is not None and folds > total:
        raise ConfigError(f"dataset.folds={folds}: more folds than training examples ({total})")
    if not whole(fold) or not 0 <= fold < folds:
        raise ConfigError(f"dataset.fold={fold!r}: must be a whole number in 0..{folds - 1} (dataset.folds={folds})")


def fold_assignment(labels: torch.Tensor, folds: int, seed: int) -> torch.Tensor:
    """The fold (0..folds-1) of every example: stratified, seeded, fold sizes within one of each other.

    Each class's members are shuffled and the classes laid end to end; position j goes to fold j mod k.
    A class is then one contiguous run, so each fold gets floor or ceil(n_class / k) of every class.
    """
    gen = torch.Generator().manual_seed(seed)
    runs = []
    for cls in torch.unique(labels).tolist():
        members = torch.nonzero(labels == cls).flatten()
        runs.append(members[torch.randperm(members.numel(), generator=gen)])
    order = torch.cat(runs) if runs else torch.zeros(0, dtype=torch.long)
    assignment = torch.empty(labels.numel(), dtype=torch.long)
    assignment[order] = torch.arange(order.numel()) % folds
    return assignment


def kfold_split(labels: torch.Tensor, folds: int, fold: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Indices (train, val) for fold `fold` of a stratified `folds`-fold cross-validation.

    Over fold = 0..folds-1 (same seed) every example is in exactly one validation split. Both index
    sets are sorted, like stratified_split's.
    """
    check_folds(folds, fold, labels.numel())
    in_val = fold_assignment(labels.flatten(), folds, seed) == fold
    return torch.nonzero(~in_val).flatten(), torch.nonzero(in_val).flatten()


def train_val_indices(
    labels: torch.Tensor,
    val_size: int | float,
    train_size: Optional[int],
    seed: int,
    folds: Optional[int] = None,
    fold: Optional[int] = 0,
    own_val: bool = False,
) -> tuple[torch.Tensor, Optional[torch.Tensor]]:
    """Indices into the training split: (train, val); val is None when the dataset has its own.

    The validation split is chosen first, then `train_size` keeps the first N of the rest, so the
    validation examples do not depend on train_size. With `folds` set, fold `fold` of a stratified
    k-fold split is the validation split (val_size is then not used); otherwise `val_size` examples
    are held out, stratified. `own_val` (an image folder's val/): the whole training split trains.
    """
    check_folds(folds, fold)
    if own_val:
        if folds is not None:
            raise ConfigError(f"dataset.folds={folds}: this dataset has its own validation split (val/), while "
                              "cross-validation folds come from the training split; remove val/ or set "
                              "dataset.folds=null")
        train_idx, val_idx = torch.arange(labels.numel()), None
    elif folds is not None:
        train_idx, val_idx = kfold_split(labels, folds, fold, seed)
    else:
        train_idx, val_idx = stratified_split(labels, val_count(val_size, labels.numel()), seed)
    if train_size is not None:
        train_idx = train_idx[:train_size]
    return train_idx, val_idx


def split_train_val(dataset, val_size, train_size, seed: int, folds: Optional[int] = None, fold: Optional[int] = 0):
    """(train images, train labels, val images, val labels) of an ImageDataset, as train_val_indices picks
    them; a dataset with its own validation split (val_images set) keeps it."""
    own_val = getattr(dataset, "val_labels", None) is not None
    train_idx, val_idx = train_val_indices(dataset.train_labels, val_size, train_size, seed, folds, fold, own_val)
    train = (dataset.train_images[train_idx], dataset.train_labels[train_idx])
    if own_val:
        return (*train, dataset.val_images, dataset.val_labels)
    return (*train, dataset.train_images[val_idx], dataset.train_labels[val_idx])
