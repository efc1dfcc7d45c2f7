"""Test-time augmentation: several views of each test image, predicted probabilities averaged."""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F

from trainlab.errors import ConfigError


def crop_offsets(crops: int, padding: int) -> list[tuple[int, int]]:
    """Window offsets into an image padded by `padding`: the centre, or the four corners and the centre."""
    centre = (padding, padding)
    if crops == 1:
        return [centre]
    far = 2 * padding
    return [(0, 0), (0, far), (far, 0), (far, far), centre]


def build_views(flip: bool = False, crops: int = 1, padding: int = 0) -> Callable | None:
    """A function uint8 batch -> list of uint8 batches (the views), or None when TTA is off."""
    if crops not in (1, 5):
        raise ConfigError(f"tta.crops={crops}: must be 1 (no crops) or 5 (four corners + centre)")
    if padding < 0 or (crops == 5 and padding == 0):
        raise ConfigError(f"tta.padding={padding}: crops need padding >= 1 (the shift of the corner crops)")
    if not flip and crops == 1:
        return None
    offsets = crop_offsets(crops, padding)

    def views(images: torch.Tensor) -> list[torch.Tensor]:
        h, w = images.shape[-2:]
        padded = F.pad(images, (padding,) * 4) if padding else images
        crops_ = [padded[..., dy:dy + h, dx:dx + w] for dy, dx in offsets]
        return crops_ + [crop.flip(-1) for crop in crops_] if flip else crops_

    return views
