"""A named, ordered pipeline of augmentation ops (augmentation.ops), checked at start."""

from __future__ import annotations

import torch

from trainlab.errors import ConfigError


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


# ---------------------------------------------------------------- geometric and occlusion ops
#
# Each op below draws its per-sample parameters in `_draw` and applies them in `_apply(images, params)`,
# so tests (and callers) can apply explicit parameters and compare with torchvision's functional ops.
# All draws happen whatever p is, so the generator advances the same way for any p.
