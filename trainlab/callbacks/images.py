"""Pictures of a run in TensorBoard (and as PNG files in the run folder): the augmented training batch
as the model sees it (first epoch) and confusion matrices of the validation and test splits."""

from __future__ import annotations

from typing import Optional

import torch

from trainlab.callbacks.base import Callback, EpochEnd
from trainlab.checks import is_int, require

CONFUSION_WHEN = ("end", "epoch", "never")


def confusion_figure(counts: torch.Tensor, classes: list[str], title: str):
    """A matplotlib figure of a confusion matrix: rows (true) normalised to 1, counts written in the cells.

    Built without pyplot (no global figure registry to close, nothing to import but the Agg canvas) and
    with fixed margins (tight_layout measured ~0.2 s per figure): start-up of short runs pays for it."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    n = len(classes)
    rates = counts.float() / counts.sum(dim=1, keepdim=True).clamp_min(1)
    size = min(12.0, 2.0 + 0.55 * n)
    figure = Figure(figsize=(size, size * 0.9), dpi=100)
    FigureCanvasAgg(figure)
    axes = figure.add_axes((0.2, 0.2, 0.62, 0.7))
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
    figure.colorbar(image, cax=figure.add_axes((0.85, 0.2, 0.03, 0.7)))
    return figure


def rendered(figure) -> "numpy.ndarray":  # noqa: F821
    """The figure drawn once, as an RGB array [H, W, 3] (uint8): the PNG and TensorBoard both use it."""
    import numpy as np

    figure.canvas.draw()
    return np.asarray(figure.canvas.buffer_rgba())[..., :3].copy()


def save_png(pixels, path) -> None:
    """The picture as a PNG file; a failed write names the file (PIL's own error does not)."""
    from PIL import Image

    from trainlab.errors import CannotWrite

    try:
        Image.fromarray(pixels).save(path)
    except OSError as error:
        raise CannotWrite(path, error.strerror or str(error)) from None


def import_matplotlib_meanwhile() -> None:
    """Import matplotlib's figure machinery on a background thread while training runs, so the pictures at
    the end do not wait the ~0.7 s of its first import (short runs: half their time beyond torch)."""
    import threading

    def load() -> None:
        import matplotlib.backends.backend_agg  # noqa: F401
        import matplotlib.figure  # noqa: F401

    threading.Thread(target=load, name="trainlab-import-matplotlib", daemon=True).start()


class Images(Callback):
    order = 36
    resume_free = ("*",)

    def __init__(self, augmented_batch: int = 32, confusion: str = "end", features: int = 500,
                 features_projection: str = "auto"):
        from trainlab.adaptation.features import PROJECTIONS

        self.augmented_batch = require("augmented_batch", augmented_batch, lambda v: is_int(v) and v >= 0,
                                       "a whole number >= 0 (0: no grid of the augmented batch)")
        self.confusion = require("confusion", confusion, lambda v: v in CONFUSION_WHEN, " | ".join(CONFUSION_WHEN))
        self.features = require("features", features, lambda v: is_int(v) and v >= 0,
                                "a whole number >= 0 (test images per domain in the feature picture; 0: none)")
        self.features_projection = require("features_projection", features_projection, lambda v: v in PROJECTIONS,
                                           " | ".join(PROJECTIONS))
        self.board = None

    def on_fit_start(self, trainer, start_epoch: int) -> None:
        from trainlab.callbacks.tensorboard import TensorBoard

        self.board = trainer.callbacks.find(TensorBoard)
        if self.confusion != "never":
            import_matplotlib_meanwhile()
        data = self.run.data
        if self.augmented_batch and trainer.step == 0 and data is not None and self.writer is not None:
            self.writer.add_image("images/augmented_batch", augmented_grid(data, self.augmented_batch), 0)

    @property
    def writer(self):
        return self.board.writer if self.board is not None else None

    def _confusion(self, trainer, loader, split: str, step: int, counts=None) -> None:
        data = self.run.data
        if data is None or loader is None or loader.num_samples == 0:
            return
        if counts is None:
            counts = confusion_matrix_of(trainer, loader, len(data.classes))
        pixels = rendered(confusion_figure(counts, data.classes, f"{split} confusion"))
        if self.run.run_dir is not None:
            save_png(pixels, self.run.run_dir / f"confusion_{split}.png")
        if self.writer is not None:
            self.writer.add_image(f"confusion/{split}", pixels, step, dataformats="HWC")

    def on_epoch_end(self, trainer, end: EpochEnd) -> None:
        if self.confusion == "epoch":
            self._confusion(trainer, trainer.val_loader, "val", trainer.step)

    def on_test_end(self, trainer, summary: dict) -> None:
        if self.run.data is None:
            return
        if self.confusion == "never":
            self._features(trainer)
            return
        self._confusion(trainer, self.run.data.val, "val", trainer.step,  # the weights tested: best.pt's
                        self.run.val_confusion)
        self._confusion(trainer, self.run.data.test, "test", trainer.step, self.run.test_confusion)
        self._features(trainer)

    def _features(self, trainer) -> None:
        """With a target domain: features.png, the source and target test features in 2-D (the tested weights)."""
        data = self.run.data
        if not self.features or data is None or data.target is None:
            return
        from trainlab.adaptation.features import features_figure, head_inputs, panel

        source, target = (head_inputs(trainer.model, loader, trainer.device, trainer.amp_dtype, self.features)
                          for loader in (data.test, data.target.test))
        method = (self.run.config.get("adaptation") or {}).get("method", "none")
        title = "DANN" if method == "dann" else "source only"
        figure = features_figure([panel(title, source, target, self.features_projection)],
                                 self.run.config["dataset"]["name"], data.target.name)
        pixels = rendered(figure)
        if self.run.run_dir is not None:
            save_png(pixels, self.run.run_dir / "features.png")
        if self.writer is not None:
            self.writer.add_image("adaptation/features", pixels, trainer.step, dataformats="HWC")


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
