"""The target domain of domain adaptation (the `domain` config group): its images, without their training labels,
and the one image form (channels, height, width) both domains are brought to at start.

`domain.data` is a dataset section like `dataset`: its training split gives the target images used without
labels (the labels read from disk are dropped right here, so no later code can reach them), its test split,
with labels, scores the adapted model. `domain.shift` applies a procedural shift (trainlab/data/domains.py).
Both domains then take one form: channels (auto: RGB when either is; grey repeated, or RGB -> luminance with
channels: 1) and size (auto: the source's; the target resized, antialiased).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional

from trainlab.checks import bad, is_int, is_number
from trainlab.data.domains import SHIFTS
from trainlab.errors import ConfigError

COLOUR_SHIFTS = ("textured", "tinted")  # shifts that make grey images RGB


@dataclass(frozen=True)
class DomainSettings:
    """The validated keys of a `domain` section (besides `data`)."""

    shift: Optional[str] = None
    shift_seed: int = 0
    noise: float = 40.0
    degrees: float = 30.0
    channels: Any = "auto"          # auto | 1 | 3
    image_size: Any = "auto"        # auto | (H, W)

    @classmethod
    def from_cfg(cls, domain) -> "DomainSettings":
        if not hasattr(domain, "get") or not hasattr(domain.get("data"), "get") or "name" not in domain.get("data"):
            raise ConfigError("domain.data: missing; a domain names its dataset section, e.g. domain=fashion_mnist_m "
                              "(or domain.data: ${dataset} for the source's own images)")
        known = {"data", "shift", "shift_seed", "noise", "degrees", "channels", "image_size"}
        extra = sorted(set(domain) - known)
        if extra:
            raise ConfigError(f"domain.{extra[0]}: unknown key; known keys: {', '.join(sorted(known))}")
        shift = domain.get("shift")
        if shift is not None and shift not in SHIFTS:
            raise bad("domain.shift", shift, "unknown shift", f"use null or one of {', '.join(SHIFTS)}")
        seed = domain.get("shift_seed", 0)
        if not is_int(seed):
            raise bad("domain.shift_seed", seed, "must be a whole number")
        for key, default in (("noise", 40.0), ("degrees", 30.0)):
            if not is_number(domain.get(key, default)):
                raise bad(f"domain.{key}", domain.get(key), "must be a number")
        if domain.get("noise", 40.0) < 0:
            raise bad("domain.noise", domain.get("noise"), "must be >= 0 (pixel levels)")
        channels = domain.get("channels", "auto")
        if channels not in ("auto", 1, 3) or isinstance(channels, bool):
            raise bad("domain.channels", channels, "must be auto, 1 (grey) or 3 (RGB)")
        size = domain.get("image_size", "auto")
        if size != "auto":
            from trainlab.data.imagefolder import parse_image_size

            try:
                size = parse_image_size(size)
            except ConfigError:
                raise bad("domain.image_size", size, "must be auto (the source's size), a whole number >= 1 or "
                          "[height, width]") from None
        return cls(shift, seed, float(domain.get("noise", 40.0)), float(domain.get("degrees", 30.0)), channels, size)

    def shifted_channels(self, channels: int) -> int:
        return 3 if self.shift in COLOUR_SHIFTS else channels


def common_shape(source: tuple[int, int, int], target: tuple[int, int, int], settings: DomainSettings,
                 source_name: str, target_name: str) -> tuple[int, int, int]:
    """The (channels, height, width) both domains are brought to, or ConfigError naming both when the channel
    counts cannot be reconciled (only grey and RGB convert)."""
    if source[0] not in (1, 3) or target[0] not in (1, 3):
        raise ConfigError(f"dataset={source_name} has {source[0]}-channel images and domain={target_name} "
                          f"{target[0]}-channel ones: only grey (1) and RGB (3) images convert to each other; "
                          "choose domains of the same channel count")
    if settings.channels == "auto":
        channels = max(source[0], target[0])
    else:
        channels = settings.channels
    size = tuple(source[1:]) if settings.image_size == "auto" else tuple(settings.image_size)
    return (channels, *size)


def conform(images, shape: tuple[int, int, int]):
    """uint8 images [N, C, H, W] in `shape`: grey repeated to RGB (or RGB to its luminance), then resized
    (antialiased) when the size differs."""
    import torch
    from torchvision.transforms.v2.functional import resize, rgb_to_grayscale

    channels, height, width = shape
    if images.shape[1] != channels:
        images = images.expand(-1, 3, -1, -1).contiguous() if channels == 3 else rgb_to_grayscale(images)
    if tuple(images.shape[-2:]) != (height, width):
        parts = [resize(images[i:i + 4096], [height, width], antialias=True) for i in range(0, images.shape[0], 4096)]
        images = torch.cat(parts) if parts else images.new_empty((0, channels, height, width))
    return images.contiguous()


def conform_dataset(dataset, shape: tuple[int, int, int]):
    """An ImageDataset with its images (every split) in `shape`."""
    from dataclasses import replace

    if dataset.input_shape == tuple(shape):
        return dataset
    return replace(dataset, train_images=conform(dataset.train_images, shape),
                   test_images=conform(dataset.test_images, shape),
                   val_images=conform(dataset.val_images, shape) if dataset.val_images is not None else None)


def in_domain(error: ConfigError) -> ConfigError:
    """A dataset section's error, naming the key where it sits in a domain (dataset.x -> domain.data.x)."""
    message = str(error)
    return ConfigError("domain.data." + message[len("dataset."):] if message.startswith("dataset.") else message)


def domain_shape(domain) -> tuple[tuple[int, int, int], int, Optional[int]]:
    """(image shape after the shift, classes, training images) that `domain` will give, from its keys alone."""
    from trainlab.data.datasets import describe

    settings = DomainSettings.from_cfg(domain)
    try:
        shape = describe(domain.data)
    except ConfigError as error:
        raise in_domain(error) from None
    channels = settings.shifted_channels(shape.input_shape[0])
    examples = shape.train_examples
    if examples is not None and domain.data.get("train_size") is not None:
        examples = min(examples, domain.data.train_size)
    return (channels, *shape.input_shape[1:]), shape.num_classes, examples


@dataclass
class TargetImages:
    """The target domain, loaded: training images with no labels, test images with theirs."""

    name: str
    train_images: Any        # uint8 [N, C, H, W]
    test_images: Any
    test_labels: Any
    classes: list[str]


def load_target(domain, source_name: str, source_classes: list[str]) -> TargetImages:
    """The target of `domain`, shifted (in its own shape: `conform` brings it to the common one). Its training
    labels are dropped here, unread."""
    from trainlab.data.datasets import load_dataset
    from trainlab.data.domains import shift_images
    from trainlab.data.stream import StreamedDataset

    settings = DomainSettings.from_cfg(domain)
    try:
        dataset = load_dataset(domain.data)
    except ConfigError as error:
        raise in_domain(error) from None
    if isinstance(dataset, StreamedDataset):
        raise ConfigError(f"domain.data ({domain.data.name}): too large for memory (it would stream); domain "
                          "adaptation keeps the target in memory: raise domain.data.max_memory_mb or use fewer images")
    if dataset.num_classes != len(source_classes):
        raise ConfigError(f"dataset={source_name} has {len(source_classes)} classes but domain.data="
                          f"{domain.data.name} has {dataset.num_classes}: the two domains must share one label set")
    train = dataset.train_images
    if domain.data.get("train_size") is not None:
        train = train[:domain.data.train_size]
    test = dataset.test_images
    if settings.shift is not None:
        common = dict(seed=settings.shift_seed, noise=settings.noise, degrees=settings.degrees)
        # the test images are seeded apart from the training ones: never the same texture on both splits
        train = shift_images(train, settings.shift, start=0, **common)
        test = shift_images(test, settings.shift, start=10_000_000, **common)
    return TargetImages(domain.data.name, train, test, dataset.test_labels, list(dataset.classes))


def domain_name(domain, choice: Optional[str] = None) -> str:
    """What a run calls its target: the domain option picked (e.g. fashion_mnist_m), else data + shift."""
    if choice:
        return choice
    shift = domain.get("shift")
    return f"{domain.data.name}" + (f"+{shift}" if shift else "")
