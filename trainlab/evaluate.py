"""Scoring a model on a loader: mean cross-entropy and accuracy, a plain function (no Trainer needed)."""

from __future__ import annotations

from typing import Callable, Optional

import torch
import torch.nn.functional as F
from torch import nn

from trainlab.distributed import World
from trainlab.runtime import autocast


@torch.inference_mode()
def evaluate(model: Callable, loader, device: torch.device, amp_dtype: Optional[torch.dtype] = None,
             keep_outputs: bool = False, confusion_classes: Optional[int] = None,
             world: Optional[World] = None) -> dict:
    """{"loss", "acc"} of `model` over `loader` (no label smoothing). A batch of TTA views [V, N, ...]
    is scored on the views' averaged predicted probabilities (their log is the logits). Two host syncs, at
    the end. `keep_outputs`: also "logits" [N, C] (float32) and "labels" [N], on the CPU, in the loader's
    order (for eval's top-5, confusion matrix and ensembles, from the very pass that gave loss and acc).
    `confusion_classes`: also "confusion", the [true, predicted] counts over that many classes (on the CPU),
    counted on the device as the batches go (the confusion pictures reuse the test pass this way).
    `world`: the processes of a data-parallel run (trainlab.distributed.World), each of which scored its part
    of the split: the figures are then the whole split's, from the ranks' summed sums and counts."""
    modules = [m for m in (model, getattr(model, "_orig_mod", None)) if isinstance(m, nn.Module)]
    modes = [m.training for m in modules]
    for module in modules:
        module.eval()
    loss_sum = torch.zeros((), device=device)
    correct = torch.zeros((), device=device, dtype=torch.long)
    classes = confusion_classes or 0
    counts = torch.zeros(classes * classes, device=device, dtype=torch.long) if confusion_classes else None
    seen = 0
    outputs: list[torch.Tensor] = []
    targets: list[torch.Tensor] = []
    try:
        for images, labels in loader:
            with autocast(device, amp_dtype):
                if images.dim() == 5:  # TTA views [V, N, ...]: average the predicted probabilities
                    probs = torch.stack([model(view).float().softmax(dim=1) for view in images]).mean(dim=0)
                    logits = probs.clamp_min(1e-12).log()  # log-probabilities: cross-entropy is their NLL
                else:
                    logits = model(images)
            loss_sum += F.cross_entropy(logits.float(), labels, reduction="sum")
            predicted = logits.argmax(dim=1)
            correct += (predicted == labels).sum()
            if counts is not None:
                counts += torch.bincount(labels * classes + predicted, minlength=classes * classes)
            seen += labels.shape[0]
            if keep_outputs:
                outputs.append(logits.float())
                targets.append(labels)
    finally:
        for module, mode in zip(modules, modes):
            module.train(mode)
    if world is not None and world.active:
        loss_total, right, seen = world.totals(loss_sum, correct, seen)
        if counts is not None:
            world.sum(counts)
        figures = {"loss": loss_total / max(seen, 1), "acc": right / max(seen, 1)}
    else:
        figures = {"loss": (loss_sum / max(seen, 1)).item(), "acc": correct.item() / max(seen, 1)}
    if keep_outputs:
        figures["logits"] = torch.cat(outputs).cpu() if outputs else torch.zeros(0, 0)
        figures["labels"] = torch.cat(targets).cpu() if targets else torch.zeros(0, dtype=torch.long)
    if counts is not None:
        figures["confusion"] = counts.view(classes, classes).cpu()
    return figures


def confusion_matrix(model: Callable, loader, device: torch.device, num_classes: int,
                     amp_dtype: Optional[torch.dtype] = None) -> torch.Tensor:
    """[true class, predicted class] counts of `model` over `loader` (on the CPU; one transfer at the end)."""
    return evaluate(model, loader, device, amp_dtype, confusion_classes=num_classes)["confusion"]
