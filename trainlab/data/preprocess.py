"""Preprocessing: uint8 batches -> float model inputs, with statistics from the training split only.

Options (the `preprocess` group): per-channel mean/std (the default), mean image subtraction
(AlexNet), per-channel mean subtraction only (VGG), none (just [0, 1] scaling), ZCA whitening.
Each is fitted once on the training images; its statistics travel in the checkpoints, so evaluation
later uses the very same numbers.
"""

from __future__ import annotations

from typing import Optional

import torch

CHUNK = 8192  # images per chunk when fitting: no float copy of a whole dataset


def _chunks(images: torch.Tensor):
    for start in range(0, images.shape[0], CHUNK):
        yield images[start:start + CHUNK].to(torch.float64) / 255.0


class Preprocessor:
    """Base: x/255, then whatever the subclass adds. Buffers live in self.state (tensors)."""

    name = "none"

    def __init__(self):
        self.state: dict[str, torch.Tensor] = {}

    def fit(self, images: torch.Tensor) -> "Preprocessor":
        return self

    def to(self, device: torch.device) -> "Preprocessor":
        self.state = {key: value.to(device) for key, value in self.state.items()}
        return self

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        return images.float() / 255.0

    def state_dict(self) -> dict:
        return {"name": self.name, **{key: value.detach().cpu().clone() for key, value in self.state.items()}}

    def load_state_dict(self, state: dict) -> "Preprocessor":
        if state.get("name") != self.name:
            raise ValueError(f"preprocess state is for {state.get('name')!r}, not {self.name!r}")
        self.state = {key: value for key, value in state.items() if key != "name"}
        return self


class MeanStd(Preprocessor):
    """Per-channel (x - mean) / std: the usual default."""

    name = "mean_std"

    def fit(self, images: torch.Tensor) -> "MeanStd":
        channels = images.shape[1]
        total = torch.zeros(channels, dtype=torch.float64)
        squares = torch.zeros(channels, dtype=torch.float64)
        for part in _chunks(images):
            total += part.sum(dim=(0, 2, 3)).cpu()
            squares += part.square().sum(dim=(0, 2, 3)).cpu()
        count = images.numel() / channels
        mean = total / count
        std = (squares / count - mean.square()).clamp_min(1e-12).sqrt()
        self.state = {"mean": mean.float(), "std": std.float()}
        return self.to(images.device)

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        std = self.state["std"].view(1, -1, 1, 1)
        # one fused multiply-add per pixel: x * 1/(255 std) - mean/std
        return torch.addcmul((-self.state["mean"].view(1, -1, 1, 1) / std), images.float(), 1.0 / (255.0 * std))


class ChannelMean(Preprocessor):
    """Per-channel mean subtraction only (VGG)."""

    name = "channel_mean"

    def fit(self, images: torch.Tensor) -> "ChannelMean":
        total = sum(part.sum(dim=(0, 2, 3)).cpu() for part in _chunks(images))
        self.state = {"mean": (total / (images.numel() / images.shape[1])).float()}
        return self.to(images.device)

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        return images.float() / 255.0 - self.state["mean"].view(1, -1, 1, 1)


class MeanImage(Preprocessor):
    """Subtract the mean training image, pixel by pixel (AlexNet)."""

    name = "mean_image"

    def fit(self, images: torch.Tensor) -> "MeanImage":
        total = sum(part.sum(dim=0).cpu() for part in _chunks(images))
        self.state = {"mean_image": (total / images.shape[0]).float()}
        return self.to(images.device)

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        return images.float() / 255.0 - self.state["mean_image"]


class ZCA(Preprocessor):
    """ZCA whitening: decorrelate pixels, keeping the result closest to the original image.

    W = U diag(1/sqrt(s + epsilon)) U^T from the covariance of the centred training pixels
    (flattened C*H*W). epsilon trades whitening against noise amplification (Krizhevsky 2009 used
    ZCA on CIFAR-10; Coates & Ng 2012 discuss epsilon). Fitted on at most `max_samples` images.
    """

    name = "zca"

    def __init__(self, epsilon: float = 1e-2, max_samples: int = 20000):
        super().__init__()
        if epsilon <= 0:
            raise ValueError(f"epsilon={epsilon}: must be > 0")
        if max_samples < 2:
            raise ValueError(f"max_samples={max_samples}: must be >= 2")
        self.epsilon = epsilon
        self.max_samples = max_samples

    def fit(self, images: torch.Tensor) -> "ZCA":
        sample = images[: self.max_samples].reshape(min(images.shape[0], self.max_samples), -1)
        pixels = sample.to(torch.float64).cpu() / 255.0
        mean = pixels.mean(dim=0)
        centred = pixels - mean
        covariance = centred.T @ centred / (pixels.shape[0] - 1)
        eigenvalues, eigenvectors = torch.linalg.eigh(covariance)
        scale = (eigenvalues.clamp_min(0) + self.epsilon).rsqrt()
        whiten = (eigenvectors * scale) @ eigenvectors.T
        self.state = {"mean": mean.float(), "whiten": whiten.float()}
        return self.to(images.device)

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        flat = images.reshape(images.shape[0], -1).float() / 255.0 - self.state["mean"]
        return (flat @ self.state["whiten"]).reshape(images.shape)


PREPROCESSORS = {cls.name: cls for cls in (Preprocessor, MeanStd, ChannelMean, MeanImage, ZCA)}


def from_state(state: dict, device: Optional[torch.device] = None) -> Preprocessor:
    """Rebuild a fitted preprocessor from a checkpoint's `preprocess` entry."""
    preprocessor = PREPROCESSORS[state["name"]]() if state["name"] != "zca" else ZCA()
    preprocessor.load_state_dict(state)
    return preprocessor.to(device) if device is not None else preprocessor
