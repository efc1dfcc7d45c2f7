"""Batched augmentation on the device, with per-sample randomness.

torchvision's v2 transforms, applied to a batch tensor, draw *one* random parameter for the whole
batch (every image flipped, or none); the classic recipes want each image to draw its own. So these
ops take a whole uint8 batch [N, C, H, W] and a torch.Generator and draw N sets of parameters at once.
They run before normalization, on uint8, so zero padding is black exactly as in the PIL recipes.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from trainlab.errors import ConfigError


# Ops raise ValueError for impossible parameters; the builder (trainlab.config.instantiate) turns that
# into one line naming the op's key, e.g. "augmentation.ops.crop: ... padding=-1: must be >= 0".


def _check_probability(p: float) -> None:
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"p={p}: a probability must be in [0, 1]")


def _coin(n: int, p: float, generator: torch.Generator, device: torch.device) -> torch.Tensor:
    """A boolean per sample, True with probability p, shaped to broadcast over [N, C, H, W]."""
    return (torch.rand(n, generator=generator, device=device) < p).view(n, 1, 1, 1)


class HorizontalFlip:
    """Mirror each image left-right with probability `p`."""

    def __init__(self, p: float = 0.5):
        _check_probability(p)
        self.p = p

    def __call__(self, images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        flip = _coin(images.shape[0], self.p, generator, images.device)
        return torch.where(flip, images.flip(-1), images)

    def __repr__(self) -> str:
        return f"HorizontalFlip(p={self.p})"


class RandomCrop:
    """Pad each image by `padding` pixels, then cut an H x W window at a random offset per image."""

    def __init__(self, padding: int = 4, padding_mode: str = "zeros"):
        if padding < 0:
            raise ValueError(f"padding={padding}: must be >= 0")
        if padding_mode not in ("zeros", "reflect"):
            raise ValueError(f"padding_mode={padding_mode!r}: must be zeros or reflect")
        self.padding = padding
        self.padding_mode = padding_mode

    def __call__(self, images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        if self.padding == 0:
            return images
        n, _, h, w = images.shape
        p = self.padding
        if self.padding_mode == "reflect":
            if p >= min(h, w):
                raise ValueError(f"padding={p}: reflect padding must be smaller than the image ({min(h, w)} pixels)")
            # reflect padding is not implemented for integer tensors; the values stay exact in float
            padded = F.pad(images.float(), (p, p, p, p), mode="reflect").to(images.dtype)
        else:
            padded = F.pad(images, (p, p, p, p))
        offsets = torch.randint(0, 2 * p + 1, (2, n), generator=generator, device=images.device)
        rows = offsets[0, :, None] + torch.arange(h, device=images.device)  # [N, H]
        cols = offsets[1, :, None] + torch.arange(w, device=images.device)  # [N, W]
        batch = torch.arange(n, device=images.device)[:, None, None]
        # advanced indexing around the channel slice gives [N, H, W, C]; back to [N, C, H, W]
        crops = padded[batch, :, rows[:, :, None], cols[:, None, :]]
        return crops.permute(0, 3, 1, 2).contiguous()

    def __repr__(self) -> str:
        return f"RandomCrop(padding={self.padding}, padding_mode={self.padding_mode!r})"


class Pipeline:
    """Named ops applied in order; each is called as op(images, generator)."""

    def __init__(self, ops: dict | list):
        self.ops = dict(ops) if isinstance(ops, dict) else {f"op{i}": op for i, op in enumerate(ops)}

    def __call__(self, images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        for op in self.ops.values():
            images = op(images, generator)
        return images

    def fit(self, images: torch.Tensor) -> "Pipeline":
        """Give ops that learn from data (e.g. PCA lighting's colour eigenvectors) the training split."""
        for op in self.ops.values():
            if hasattr(op, "fit"):
                op.fit(images)
        return self

    def check(self, input_shape: tuple[int, int, int]) -> None:
        """Run every op once on a blank batch of the dataset's shape, so that a parameter that does not
        fit the images (reflect padding wider than the image, say) fails at start, naming the op."""
        images = torch.zeros(2, *input_shape, dtype=torch.uint8)
        generator = torch.Generator().manual_seed(0)
        for name, op in self.ops.items():
            try:
                images = op(images, generator)
            except ValueError as error:
                raise ConfigError(f"augmentation.ops.{name}: {error}") from None
            if images.shape[1:] != input_shape or images.dtype != torch.uint8:
                raise ConfigError(f"augmentation.ops.{name}: turned {list(input_shape)} uint8 images into "
                                  f"{list(images.shape[1:])} {images.dtype}; ops must keep shape and dtype")

    def __len__(self) -> int:
        return len(self.ops)

    def __repr__(self) -> str:
        return "Pipeline(" + ", ".join(f"{name}={op!r}" for name, op in self.ops.items()) + ")"
