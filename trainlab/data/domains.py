"""Shifted copies of a dataset's images: target domains for domain adaptation that need no download.

Each shift maps uint8 images [N, C, H, W] to uint8 images, deterministic under its seed (image i's draw
depends on the seed and i only, so a slice of a split shifts as the whole split does):
- `textured`: in the spirit of MNIST-M (Ganin et al. 2016, which blends MNIST digits with patches of
  BSDS500 photographs): every grey image becomes RGB |texture - image|, the texture a random colour field
  of its own (smooth colour blobs plus fine grain, generated procedurally in place of the photographs);
- `inverted`: 255 - image;  `tinted`: grey -> RGB times a random colour per image;
- `noisy`: Gaussian noise of standard deviation `noise` (in pixel levels);  `rotated`: by `degrees`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

SHIFTS = ("textured", "inverted", "tinted", "noisy", "rotated")
CHUNK = 4096  # images per step: the float intermediates stay small whatever the split's size


def _generators(seed: int, start: int, count: int) -> list[torch.Generator]:
    return [torch.Generator().manual_seed(seed * 1_000_003 + start + i) for i in range(count)]


def _rgb(images: torch.Tensor) -> torch.Tensor:
    return images.expand(-1, 3, -1, -1) if images.shape[1] == 1 else images


def _textures(generators: list[torch.Generator], height: int, width: int) -> torch.Tensor:
    """A random colour texture per generator, float [N, 3, H, W] in [0, 255]: colour cells of about 7 pixels,
    smoothly upsampled, under a grain of single pixels."""
    coarse = torch.stack([torch.rand(3, max(2, height // 7), max(2, width // 7), generator=g) for g in generators])
    fine = torch.stack([torch.rand(3, height, width, generator=g) for g in generators])
    smooth = F.interpolate(coarse, size=(height, width), mode="bilinear", align_corners=False)
    return 255.0 * (0.8 * smooth + 0.2 * fine)


def shift_images(images: torch.Tensor, shift: str, seed: int = 0, start: int = 0, noise: float = 40.0,
                 degrees: float = 30.0) -> torch.Tensor:
    """`images` (uint8 [N, C, H, W], the first at index `start` of its split) shifted as `shift` says."""
    if shift not in SHIFTS:
        raise ValueError(f"shift {shift!r}: choose one of {', '.join(SHIFTS)}")
    if images.dtype != torch.uint8 or images.dim() != 4:
        raise ValueError(f"images must be uint8 [N, C, H, W], not {images.dtype} {list(images.shape)}")
    if shift == "inverted":
        return 255 - images
    if shift == "rotated":
        from torchvision.transforms.v2.functional import rotate

        return rotate(images, degrees)
    parts = []
    for first in range(0, images.shape[0], CHUNK):
        batch = images[first:first + CHUNK]
        generators = _generators(seed, start + first, batch.shape[0])
        pixels = batch.float()
        if shift == "textured":
            out = (_textures(generators, *batch.shape[-2:]) - _rgb(pixels)).abs()
        elif shift == "tinted":
            colours = torch.stack([0.3 + 0.7 * torch.rand(3, generator=g) for g in generators])
            out = _rgb(pixels) * colours[:, :, None, None]
        else:  # noisy
            out = pixels + noise * torch.stack([torch.randn(batch.shape[1:], generator=g) for g in generators])
        parts.append(out.round().clamp(0, 255).to(torch.uint8))
    return torch.cat(parts) if parts else images.clone()
