"""Pictures of a run in TensorBoard (and as PNG files in the run folder): the augmented training batch
as the model sees it (first epoch) and confusion matrices of the validation and test splits."""

from __future__ import annotations

from typing import Optional

import torch

from trainlab.callbacks.base import Callback, EpochEnd
from trainlab.checks import is_int, require

CONFUSION_WHEN = ("end", "epoch", "never")


def confusion_figure(counts: torch.Tensor, classes: list[str], title: str):
    """A matplotlib figure of a confusion matrix: rows (true) normalised to 1, counts written in the cells."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = len(classes)
    rates = counts.float() / counts.sum(dim=1, keepdim=True).clamp_min(1)
    size = min(12.0, 2.0 + 0.55 * n)
    figure, axes = plt.subplots(figsize=(size, size * 0.9), dpi=100)
    image = axes.imshow(rates.numpy(), cmap="Blues", vmin=0.0, vmax=1.0)
    ticks = range(n)
    labels = [c if len(c) <= 14 else c[:13] + "…" for c in classes]
    axes.set_xticks(list(ticks), labels, rotation=60, ha="right", fontsize=8)
    axes.set_yticks(list(ticks), labels, fontsize=8)
    axes.set_xlabel("predicted")
    axes.set_ylabel("true")
    if n <= 20:
        for i in range(n):
            for j in range(n):
                axes.text(j, i, str(int(counts[i, j])), ha="center", va="center", fontsize=7,
                          color="white" if rates[i, j] > 0.5 else "black")
    accuracy = counts.diagonal().sum().item() / max(1, counts.sum().item())
    axes.set_title(f"{title}: accuracy {100 * accuracy:.2f}%", fontsize=10)
    figure.colorbar(image, ax=axes, fraction=0.046, pad=0.04)
    figure.tight_layout()
    return figure


class Images(Callback):
    order = 36
    resume_free = ("*",)

    def __init__(self, augmented_batch: int = 32, confusion: str = "end"):
        self.augmented_batch = require("augmented_batch", augmented_batch, lambda v: is_int(v) and v >= 0,
                                       "a whole number >= 0 (0: no grid of the augmented batch)")
        self.confusion = require("confusion", confusion, lambda v: v in CONFUSION_WHEN, " | ".join(CONFUSION_WHEN))
        self.board = None

    def on_fit_start(self, trainer, start_epoch: int) -> None:
        from trainlab.callbacks.tensorboard import TensorBoard

        self.board = trainer.callbacks.find(TensorBoard)
        data = self.run.data
        if self.augmented_batch and trainer.step == 0 and data is not None and self.writer is not None:
            self.writer.add_image("images/augmented_batch", augmented_grid(data, self.augmented_batch), 0)

    @property
    def writer(self):
        return self.board.writer if self.board is not None else None

    def _confusion(self, trainer, loader, split: str, step: int) -> None:
        data = self.run.data
        if data is None or loader is None or loader.num_samples == 0:
            return
        counts = confusion_matrix_of(trainer, loader, len(data.classes))
        figure = confusion_figure(counts, data.classes, f"{split} confusion")
        if self.run.run_dir is not None:
            figure.savefig(self.run.run_dir / f"confusion_{split}.png")
        if self.writer is not None:
            self.writer.add_figure(f"confusion/{split}", figure, step)  # closes the figure
        else:
            import matplotlib.pyplot as plt

            plt.close(figure)

    def on_epoch_end(self, trainer, end: EpochEnd) -> None:
        if self.confusion == "epoch":
            self._confusion(trainer, trainer.val_loader, "val", trainer.step)

    def on_test_end(self, trainer, summary: dict) -> None:
        if self.confusion == "never" or self.run.data is None:
            return
        self._confusion(trainer, self.run.data.val, "val", trainer.step)  # the weights tested: best.pt's
        self._confusion(trainer, self.run.data.test, "test", trainer.step)


def confusion_matrix_of(trainer, loader, num_classes: int) -> torch.Tensor:
    from trainlab.evaluate import confusion_matrix

    return confusion_matrix(trainer.forward, loader, trainer.device, num_classes, trainer.amp_dtype)


def augmented_grid(data, count: int) -> torch.Tensor:
    """A grid of `count` training images after the run's augmentation (its own seeded draws: the run's
    random streams are not touched), as a float [3 or 1, H, W] image."""
    from torchvision.utils import make_grid

    images = data.training_images()
    pick = torch.randperm(images.shape[0], generator=torch.Generator().manual_seed(0))[:count].to(images.device)
    batch = images[pick]
    if data.augment is not None and len(data.augment):
        batch = data.augment(batch, torch.Generator(device=batch.device).manual_seed(0))
    if data.mix is not None:
        mixed, _ = data.mix(batch.float(), torch.zeros(len(batch), dtype=torch.long, device=batch.device),
                            torch.Generator(device=batch.device).manual_seed(0))
        batch = mixed.round().clamp(0, 255).to(torch.uint8)
    return make_grid(batch.cpu().float() / 255.0, nrow=8, padding=2, pad_value=1.0)
