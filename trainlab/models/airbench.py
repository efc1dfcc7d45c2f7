"""The speed-run net of airbench (Keller Jordan's CIFAR-10 speed runs), sized by config for small images.

    whiten (a frozen k x k conv set from the training data's patch statistics) -> GELU
    -> groups of [conv -> max pool 2 -> batch norm -> GELU -> conv -> batch norm -> GELU]
    -> global max pool -> linear head (no bias) -> times `scale`

Why each piece (airbench, hlb-CIFAR10, Page's "How to train your ResNet"):
- the whitening layer decorrelates input patches once, before training (ZCA-like, but as a conv whose
  weights are the patch covariance's eigenvectors scaled by 1/sqrt(eigenvalue), and their negatives, so
  GELU keeps both signs); only its bias trains;
- pooling right after the first conv of a group puts the group's second conv at a quarter of the pixels;
- batch norm without a learned scale (the following conv sets it) and a small `scale` on the logits
  keep the effective learning rate steady under the large learning rates these runs use;
- convs start near identity (dirac) on their first in_channels outputs, so a fresh net passes its input on.
torch has no whitening layer, hence this module.
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from trainlab.errors import ConfigError


class FrozenScaleBatchNorm(nn.BatchNorm2d):
    """BatchNorm2d whose scale stays at 1 (no gradient); only the shift learns."""

    def __init__(self, channels: int, momentum: float = 0.4, eps: float = 1e-12):
        super().__init__(channels, momentum=momentum, eps=eps)
        self.weight.requires_grad_(False)


def dirac_conv(in_channels: int, out_channels: int) -> nn.Conv2d:
    conv = nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=False)
    with torch.no_grad():
        nn.init.dirac_(conv.weight[:min(in_channels, out_channels)])
    return conv


class ConvGroup(nn.Module):
    def __init__(self, in_channels: int, out_channels: int, bn_momentum: float):
        super().__init__()
        self.conv1 = dirac_conv(in_channels, out_channels)
        self.pool = nn.MaxPool2d(2)
        self.norm1 = FrozenScaleBatchNorm(out_channels, bn_momentum)
        self.conv2 = dirac_conv(out_channels, out_channels)
        self.norm2 = FrozenScaleBatchNorm(out_channels, bn_momentum)
        self.activation = nn.GELU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.activation(self.norm1(self.pool(self.conv1(x))))
        return self.activation(self.norm2(self.conv2(x)))


def image_patches(images: torch.Tensor, size: int) -> torch.Tensor:
    """Every size x size patch of `images` [N, C, H, W], flattened: [N * (H-size+1) * (W-size+1), C*size*size]."""
    channels = images.shape[1]
    patches = images.float().unfold(2, size, 1).unfold(3, size, 1)  # N, C, H', W', size, size
    return patches.permute(0, 2, 3, 1, 4, 5).reshape(-1, channels * size * size)


class Airbench(nn.Module):
    """airbench's net: `whiten`, `groups` (one ConvGroup per entry of `channels`), `pool`, `head`.

    - channels: output channels of each conv group (each halves the spatial size).
    - whiten_kernel: the whitening conv's kernel (2 in airbench); it has 2 * C * k * k outputs.
    - whiten: false makes that first conv an ordinary trainable one (the ablation of the whitening).
    - scale: multiplies the logits (airbench: 1/9).
    - bn_momentum: torch's momentum of the batch norms' running statistics.
    - whiten_eps: added to the eigenvalues before 1/sqrt (keeps near-constant patch directions small).

    `init_from_data(images)` sets the whitening conv from training images (build calls it with a batch
    of the training split after `init`, before training); until then it holds a random conv.
    """

    def __init__(self, input_shape: Sequence[int], num_classes: int, *, channels: Sequence[int] = (64, 256, 256),
                 whiten_kernel: int = 2, whiten: bool = True, scale: float = 1 / 9, bn_momentum: float = 0.4,
                 whiten_eps: float = 5e-4):
        super().__init__()
        channels = list(channels)
        if not channels or not all(isinstance(c, int) and c >= 1 for c in channels):
            raise ConfigError(f"model.channels={channels}: a list of whole numbers >= 1, e.g. [64,256,256]")
        if not isinstance(whiten_kernel, int) or whiten_kernel < 1:
            raise ConfigError(f"model.whiten_kernel={whiten_kernel!r}: a whole number >= 1, e.g. 2")
        size = min(input_shape[1:]) - whiten_kernel + 1
        for stage in range(len(channels)):
            if size < 2:
                raise ConfigError(f"model.channels={channels}: {len(channels)} groups halve a "
                                  f"{input_shape[1]}x{input_shape[2]} image {len(channels)} times; too many")
            size //= 2
        in_channels = input_shape[0]
        width = 2 * in_channels * whiten_kernel ** 2
        self.whiten_eps, self.fits_whitening = whiten_eps, whiten
        self.whiten = nn.Conv2d(in_channels, width, whiten_kernel, padding=0, bias=True)
        self.whiten.weight.requires_grad_(not whiten)
        self.whiten_activation = nn.GELU()
        groups = []
        for out_channels in channels:
            groups.append(ConvGroup(width, out_channels, bn_momentum))
            width = out_channels
        self.groups = nn.Sequential(*groups)
        self.pool = nn.Sequential(nn.AdaptiveMaxPool2d(1), nn.Flatten())
        self.head = nn.Linear(width, num_classes, bias=False)
        self.scale = scale

    @torch.no_grad()
    def init_from_data(self, images: torch.Tensor) -> None:
        """Whitening weights from the patch covariance of `images` (normalized training images); with
        whiten=false the first conv is an ordinary trainable one and keeps its initialization."""
        if not self.fits_whitening:
            return
        size = self.whiten.kernel_size[0]
        patches = image_patches(images, size).double()
        covariance = patches.T @ patches / patches.shape[0]
        eigenvalues, eigenvectors = torch.linalg.eigh(covariance)  # ascending
        filters = (eigenvectors.T / torch.sqrt(eigenvalues.clamp_min(0) + self.whiten_eps)[:, None]).flip(0)
        filters = filters.reshape(-1, images.shape[1], size, size)
        weight = torch.cat([filters, -filters]).to(self.whiten.weight)
        self.whiten.weight.copy_(weight)
        self.whiten.bias.zero_()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.groups(self.whiten_activation(self.whiten(x)))
        return self.head(self.pool(x)) * self.scale
