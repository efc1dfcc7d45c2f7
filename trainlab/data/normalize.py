"""Per-channel mean/std normalization, with statistics from the training split only."""

from __future__ import annotations

import torch


def channel_stats(images: torch.Tensor, chunk: int = 8192) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel mean and std of uint8 images [N, C, H, W], on the [0, 1] scale (float64 sums)."""
    channels = images.shape[1]
    total = torch.zeros(channels, dtype=torch.float64)
    squares = torch.zeros(channels, dtype=torch.float64)
    for start in range(0, images.shape[0], chunk):  # chunks: no float copy of the whole dataset
        part = images[start:start + chunk].to(torch.float64) / 255.0
        total += part.sum(dim=(0, 2, 3)).cpu()
        squares += part.square().sum(dim=(0, 2, 3)).cpu()
    count = images.numel() / channels
    mean = total / count
    std = (squares / count - mean.square()).clamp_min(1e-12).sqrt()
    return mean.float(), std.float()


class Normalize:
    """uint8 [N, C, H, W] -> float32 (x/255 - mean) / std, as one fused multiply-add per pixel."""

    def __init__(self, mean: torch.Tensor, std: torch.Tensor):
        self.mean = mean.float().cpu()
        self.std = std.float().cpu()
        self._scale = (1.0 / (255.0 * self.std)).view(1, -1, 1, 1)
        self._shift = (-self.mean / self.std).view(1, -1, 1, 1)

    def to(self, device: torch.device) -> "Normalize":
        self._scale = self._scale.to(device)
        self._shift = self._shift.to(device)
        return self

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        return torch.addcmul(self._shift, images.float(), self._scale)

    def state_dict(self) -> dict:
        return {"mean": self.mean.clone(), "std": self.std.clone()}
