"""Automatic augmentation policies, batched, with each sample drawing its own ops and magnitudes.

RandAugment, TrivialAugmentWide and AutoAugment with torchvision.transforms.v2's op space, magnitude
tables and signed-magnitude rule (a signed op's magnitude is negated with probability 1/2), so a given
(op, magnitude) does to an image what torchvision's does. What differs is the sampling: torchvision draws
one op (and sign, bin, sub-policy) per call, i.e. per batch when given a batch tensor; here every
sample draws its own.

Dispatch: per round, the samples are grouped by the op they drew (one argsort), and each op runs once
on its group. Knowing the group sizes costs one device -> host copy per round (a bincount), instead of
running all ~14 ops on the whole batch and keeping one result per sample.
"""

from __future__ import annotations

from typing import Callable

import torch

from trainlab.data import color
from trainlab.data.geometry import affine_matrices, warp_affine

# ================================================================ op space and magnitude tables

# name -> (magnitudes(num_bins, height, width) or None for ops without a magnitude, signed), copied from
# torchvision.transforms.v2._auto_augment (RandAugment._AUGMENTATION_SPACE etc.)
MagnitudeFn = Callable[[int, int, int], torch.Tensor] | None


def _linspace(low: float, high: float) -> MagnitudeFn:
    return lambda num_bins, height, width: torch.linspace(low, high, num_bins)


def _posterize_bits(max_drop: int) -> MagnitudeFn:
    # bits from 8 down to 8 - max_drop: 8 - round(i / ((num_bins - 1) / max_drop))
    return lambda num_bins, height, width: (8 - (torch.arange(num_bins) / ((num_bins - 1) / max_drop))).round().int()


RANDAUGMENT_SPACE: dict[str, tuple[MagnitudeFn, bool]] = {
    "Identity": (None, False),
    "ShearX": (_linspace(0.0, 0.3), True),
    "ShearY": (_linspace(0.0, 0.3), True),
    "TranslateX": (lambda num_bins, height, width: torch.linspace(0.0, 150.0 / 331.0 * width, num_bins), True),
    "TranslateY": (lambda num_bins, height, width: torch.linspace(0.0, 150.0 / 331.0 * height, num_bins), True),
    "Rotate": (_linspace(0.0, 30.0), True),
    "Brightness": (_linspace(0.0, 0.9), True),
    "Color": (_linspace(0.0, 0.9), True),
    "Contrast": (_linspace(0.0, 0.9), True),
    "Sharpness": (_linspace(0.0, 0.9), True),
    "Posterize": (_posterize_bits(4), False),
    "Solarize": (_linspace(1.0, 0.0), False),
    "AutoContrast": (None, False),
    "Equalize": (None, False),
}

TRIVIALAUGMENT_SPACE: dict[str, tuple[MagnitudeFn, bool]] = {
    "Identity": (None, False),
    "ShearX": (_linspace(0.0, 0.99), True),
    "ShearY": (_linspace(0.0, 0.99), True),
    "TranslateX": (_linspace(0.0, 32.0), True),
    "TranslateY": (_linspace(0.0, 32.0), True),
    "Rotate": (_linspace(0.0, 135.0), True),
    "Brightness": (_linspace(0.0, 0.99), True),
    "Color": (_linspace(0.0, 0.99), True),
    "Contrast": (_linspace(0.0, 0.99), True),
    "Sharpness": (_linspace(0.0, 0.99), True),
    "Posterize": (_posterize_bits(6), False),
    "Solarize": (_linspace(1.0, 0.0), False),
    "AutoContrast": (None, False),
    "Equalize": (None, False),
}

# AutoAugment: RandAugment's space without Identity, plus Invert, on 10 magnitude bins. "Identity" is kept
# here (first) only as the op of a sample whose sub-policy step did not fire.
AUTOAUGMENT_SPACE: dict[str, tuple[MagnitudeFn, bool]] = {**RANDAUGMENT_SPACE, "Invert": (None, False)}
AUTOAUGMENT_BINS = 10

# The learned sub-policies (Cubuk et al. 2019, appendix), as in torchvision: two (op, probability,
# magnitude bin) steps each.
AUTOAUGMENT_POLICIES: dict[str, list] = {
    "imagenet": [
        (("Posterize", 0.4, 8), ("Rotate", 0.6, 9)),
        (("Solarize", 0.6, 5), ("AutoContrast", 0.6, None)),
        (("Equalize", 0.8, None), ("Equalize", 0.6, None)),
        (("Posterize", 0.6, 7), ("Posterize", 0.6, 6)),
        (("Equalize", 0.4, None), ("Solarize", 0.2, 4)),
        (("Equalize", 0.4, None), ("Rotate", 0.8, 8)),
        (("Solarize", 0.6, 3), ("Equalize", 0.6, None)),
        (("Posterize", 0.8, 5), ("Equalize", 1.0, None)),
        (("Rotate", 0.2, 3), ("Solarize", 0.6, 8)),
        (("Equalize", 0.6, None), ("Posterize", 0.4, 6)),
        (("Rotate", 0.8, 8), ("Color", 0.4, 0)),
        (("Rotate", 0.4, 9), ("Equalize", 0.6, None)),
        (("Equalize", 0.0, None), ("Equalize", 0.8, None)),
        (("Invert", 0.6, None), ("Equalize", 1.0, None)),
        (("Color", 0.6, 4), ("Contrast", 1.0, 8)),
        (("Rotate", 0.8, 8), ("Color", 1.0, 2)),
        (("Color", 0.8, 8), ("Solarize", 0.8, 7)),
        (("Sharpness", 0.4, 7), ("Invert", 0.6, None)),
        (("ShearX", 0.6, 5), ("Equalize", 1.0, None)),
        (("Color", 0.4, 0), ("Equalize", 0.6, None)),
        (("Equalize", 0.4, None), ("Solarize", 0.2, 4)),
        (("Solarize", 0.6, 5), ("AutoContrast", 0.6, None)),
        (("Invert", 0.6, None), ("Equalize", 1.0, None)),
        (("Color", 0.6, 4), ("Contrast", 1.0, 8)),
        (("Equalize", 0.8, None), ("Equalize", 0.6, None)),
    ],
    "cifar10": [
        (("Invert", 0.1, None), ("Contrast", 0.2, 6)),
        (("Rotate", 0.7, 2), ("TranslateX", 0.3, 9)),
        (("Sharpness", 0.8, 1), ("Sharpness", 0.9, 3)),
        (("ShearY", 0.5, 8), ("TranslateY", 0.7, 9)),
        (("AutoContrast", 0.5, None), ("Equalize", 0.9, None)),
        (("ShearY", 0.2, 7), ("Posterize", 0.3, 7)),
        (("Color", 0.4, 3), ("Brightness", 0.6, 7)),
        (("Sharpness", 0.3, 9), ("Brightness", 0.7, 9)),
        (("Equalize", 0.6, None), ("Equalize", 0.5, None)),
        (("Contrast", 0.6, 7), ("Sharpness", 0.6, 5)),
        (("Color", 0.7, 7), ("TranslateX", 0.5, 8)),
        (("Equalize", 0.3, None), ("AutoContrast", 0.4, None)),
        (("TranslateY", 0.4, 3), ("Sharpness", 0.2, 6)),
        (("Brightness", 0.9, 6), ("Color", 0.2, 8)),
        (("Solarize", 0.5, 2), ("Invert", 0.0, None)),
        (("Equalize", 0.2, None), ("AutoContrast", 0.6, None)),
        (("Equalize", 0.2, None), ("Equalize", 0.6, None)),
        (("Color", 0.9, 9), ("Equalize", 0.6, None)),
        (("AutoContrast", 0.8, None), ("Solarize", 0.2, 8)),
        (("Brightness", 0.1, 3), ("Color", 0.7, 0)),
        (("Solarize", 0.4, 5), ("AutoContrast", 0.9, None)),
        (("TranslateY", 0.9, 9), ("TranslateY", 0.7, 9)),
        (("AutoContrast", 0.9, None), ("Solarize", 0.8, 3)),
        (("Equalize", 0.8, None), ("Invert", 0.1, None)),
        (("TranslateY", 0.7, 9), ("AutoContrast", 0.9, None)),
    ],
    "svhn": [
        (("ShearX", 0.9, 4), ("Invert", 0.2, None)),
        (("ShearY", 0.9, 8), ("Invert", 0.7, None)),
        (("Equalize", 0.6, None), ("Solarize", 0.6, 6)),
        (("Invert", 0.9, None), ("Equalize", 0.6, None)),
        (("Equalize", 0.6, None), ("Rotate", 0.9, 3)),
        (("ShearX", 0.9, 4), ("AutoContrast", 0.8, None)),
        (("ShearY", 0.9, 8), ("Invert", 0.4, None)),
        (("ShearY", 0.9, 5), ("Solarize", 0.2, 6)),
        (("Invert", 0.9, None), ("AutoContrast", 0.8, None)),
        (("Equalize", 0.6, None), ("Rotate", 0.9, 3)),
        (("ShearX", 0.9, 4), ("Solarize", 0.3, 3)),
        (("ShearY", 0.8, 8), ("Invert", 0.7, None)),
        (("Equalize", 0.9, None), ("TranslateY", 0.6, 6)),
        (("Invert", 0.9, None), ("Equalize", 0.6, None)),
        (("Contrast", 0.3, 3), ("Rotate", 0.8, 4)),
        (("Invert", 0.8, None), ("TranslateY", 0.0, 2)),
        (("ShearY", 0.7, 6), ("Solarize", 0.4, 8)),
        (("Invert", 0.6, None), ("Rotate", 0.8, 4)),
        (("ShearY", 0.3, 7), ("TranslateX", 0.9, 3)),
        (("ShearX", 0.1, 6), ("Invert", 0.6, None)),
        (("Solarize", 0.7, 2), ("TranslateY", 0.6, 7)),
        (("ShearY", 0.8, 4), ("Invert", 0.8, None)),
        (("ShearX", 0.7, 9), ("TranslateY", 0.8, 3)),
        (("ShearY", 0.8, 5), ("AutoContrast", 0.7, None)),
        (("ShearX", 0.7, 2), ("Invert", 0.1, None)),
    ],
}


def magnitude_table(space: dict, num_bins: int, height: int, width: int) -> tuple[torch.Tensor, torch.Tensor]:
    """([ops, num_bins] unsigned magnitudes, 0 for ops without one; [ops] bool: signed), ops in `space` order."""
    rows = []
    for fn, _ in space.values():
        rows.append(torch.zeros(num_bins) if fn is None else fn(num_bins, height, width).to(torch.float32))
    signed = torch.tensor([s for _, s in space.values()])
    return torch.stack(rows), signed


# ================================================================ applying one op with per-sample magnitudes


def _warp(images: torch.Tensor, fill: float, angle=None, translate=None, shear=None,
          about_corner: bool = False) -> torch.Tensor:
    """geometry's per-sample affine warp, nearest-neighbour (torchvision's default for these policies)."""
    n, _, h, w = images.shape
    device = images.device
    zeros = torch.zeros(n, device=device)
    angle = zeros if angle is None else angle
    translate = torch.zeros(n, 2, device=device) if translate is None else translate
    shear = torch.zeros(n, 2, device=device) if shear is None else shear
    forward = affine_matrices(angle, translate, torch.ones(n, device=device), shear, (h, w))
    if about_corner:
        # torchvision shears about center=[0, 0], the image's top-left corner (-0.5, -0.5) in pixel-centre
        # coordinates, not about its centre c: moving the fixed point from c to p adds (L - I)(c - p)
        offset = torch.tensor([w / 2, h / 2], device=device)  # c - p = ((w-1)/2 + 0.5, (h-1)/2 + 0.5)
        linear = forward[:, :2, :2] - torch.eye(2, device=device)
        forward[:, :2, 2] += linear @ offset
    return warp_affine(images, forward, fill=fill, mode="nearest")


_BLENDS = {"Brightness": color.adjust_brightness, "Color": color.adjust_saturation,
           "Contrast": color.adjust_contrast, "Sharpness": color.adjust_sharpness}


def apply_op(images: torch.Tensor, name: str, magnitude: torch.Tensor, fill: float = 0) -> torch.Tensor:
    """Apply the op `name` to every image of the uint8 batch, image i with signed magnitude[i].

    The magnitude means what it means in torchvision's _apply_image_or_video_transform: a shear
    coefficient (tan of the angle), pixels (truncated to an integer) for translations, counter-clockwise
    degrees for Rotate, m for the factor 1 + m of Brightness/Color/Contrast/Sharpness, bits for Posterize,
    a fraction of 255 for Solarize; ignored by Identity, AutoContrast, Equalize and Invert.
    """
    magnitude = magnitude.to(device=images.device, dtype=torch.float32)
    n = images.shape[0]
    zeros = torch.zeros(n, device=images.device)
    if name == "Identity":
        return images
    if name in ("ShearX", "ShearY"):
        degrees = torch.rad2deg(torch.atan(magnitude))  # torchvision's shear angle for coefficient m
        shear = torch.stack([degrees, zeros] if name == "ShearX" else [zeros, degrees], dim=1)
        return _warp(images, fill, shear=shear, about_corner=True)
    if name in ("TranslateX", "TranslateY"):
        pixels = magnitude.trunc()  # torchvision: int(magnitude)
        translate = torch.stack([pixels, zeros] if name == "TranslateX" else [zeros, pixels], dim=1)
        return _warp(images, fill, translate=translate)
    if name == "Rotate":
        # F.rotate(angle) is counter-clockwise, i.e. F.affine(-angle), whose convention geometry follows
        return _warp(images, fill, angle=-magnitude)
    if name in _BLENDS:
        # 1 + m in float64 (MPS has none), so that the blend's 1 - factor is exactly -m, as in torchvision
        exact = magnitude.double() if images.device.type != "mps" else magnitude
        return _BLENDS[name](images, 1.0 + exact)
    if name == "Posterize":
        return color.posterize(images, magnitude.trunc().long())
    if name == "Solarize":
        return color.solarize(images, 255.0 * magnitude)
    if name == "AutoContrast":
        return color.autocontrast(images)
    if name == "Equalize":
        return color.equalize(images)
    if name == "Invert":
        return color.invert(images)
    raise ValueError(f"no op named {name!r}")


def apply_per_sample(images: torch.Tensor, names: list[str], op_index: torch.Tensor, magnitude: torch.Tensor,
                     fill: float = 0) -> torch.Tensor:
    """Image i gets op names[op_index[i]] with magnitude[i]; each op runs once, on the samples that drew it."""
    counts = torch.bincount(op_index, minlength=len(names)).tolist()  # the one host sync of the round
    order = torch.argsort(op_index, stable=True)  # samples grouped by op, in names order
    out = images.clone()
    start = 0
    for name, count in zip(names, counts):
        if count and name != "Identity":
            idx = order[start:start + count]
            out[idx] = apply_op(images[idx], name, magnitude[idx], fill)
        start += count
    return out


# ================================================================ policies


def _check_fill(fill) -> None:
    if not 0 <= fill <= 255:
        raise ValueError(f"fill={fill}: a uint8 fill value must be in [0, 255]")


def _check_bins(num_magnitude_bins) -> None:
    if not isinstance(num_magnitude_bins, int) or num_magnitude_bins < 2:
        raise ValueError(f"num_magnitude_bins={num_magnitude_bins}: must be an integer >= 2")


class _Policy:
    """Shared: the magnitude table on the images' device (built once per image size and device)."""

    space: dict
    num_bins: int

    def _table(self, height: int, width: int, device) -> tuple[torch.Tensor, torch.Tensor]:
        key = (height, width, str(device))
        if key not in self._tables:
            magnitudes, signed = magnitude_table(self.space, self.num_bins, height, width)
            self._tables[key] = (magnitudes.to(device), signed.to(device))
        return self._tables[key]

    def _signed(self, magnitudes, signed, op_index, bin_index, generator) -> torch.Tensor:
        """Table magnitude per sample, negated with probability 1/2 for signed ops (torchvision: rand <= 0.5)."""
        magnitude = magnitudes[op_index, bin_index]
        flip = (torch.rand(op_index.shape[0], generator=generator, device=op_index.device) <= 0.5) & signed[op_index]
        return torch.where(flip, -magnitude, magnitude)

    def sample(self, n: int, size: tuple[int, int], generator: torch.Generator,
               device) -> tuple[torch.Tensor, torch.Tensor]:
        """([rounds, N] op indices into `names`, [rounds, N] signed magnitudes) for a batch of n images."""
        raise NotImplementedError

    def __call__(self, images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        ops, magnitudes = self.sample(images.shape[0], images.shape[-2:], generator, images.device)
        for op_index, magnitude in zip(ops, magnitudes):  # rounds: each applies to the previous round's output
            images = apply_per_sample(images, self.names, op_index, magnitude, self.fill)
        return images


class RandAugment(_Policy):
    """RandAugment (Cubuk, Zoph, Shlens & Le 2020, "RandAugment: Practical automated data augmentation
    with a reduced search space"), as torchvision.transforms.v2.RandAugment but per sample.

    Each sample applies `num_ops` ops drawn uniformly (with replacement) from the 14 of RANDAUGMENT_SPACE,
    all at magnitude bin `magnitude` of `num_magnitude_bins`, each signed op negated with probability 1/2.
    `fill` (0-255) is the value of pixels that geometric ops bring in from outside the image.
    """

    def __init__(self, num_ops: int = 2, magnitude: int = 9, num_magnitude_bins: int = 31, fill: float = 0):
        if not isinstance(num_ops, int) or num_ops < 0:
            raise ValueError(f"num_ops={num_ops}: must be an integer >= 0")
        _check_bins(num_magnitude_bins)
        if not isinstance(magnitude, int) or not 0 <= magnitude < num_magnitude_bins:
            raise ValueError(f"magnitude={magnitude}: must be an integer bin in [0, num_magnitude_bins - 1] "
                             f"= [0, {num_magnitude_bins - 1}]")
        _check_fill(fill)
        self.num_ops, self.magnitude, self.num_bins, self.fill = num_ops, magnitude, num_magnitude_bins, fill
        self.space = RANDAUGMENT_SPACE
        self.names = list(self.space)
        self._tables: dict = {}

    def sample(self, n, size, generator, device):
        magnitudes, signed = self._table(*size, device)
        ops, mags = [], []
        bin_index = torch.full((n,), self.magnitude, device=device)
        for _ in range(self.num_ops):
            op_index = torch.randint(len(self.names), (n,), generator=generator, device=device)
            ops.append(op_index)
            mags.append(self._signed(magnitudes, signed, op_index, bin_index, generator))
        return ops, mags

    def __repr__(self) -> str:
        return (f"RandAugment(num_ops={self.num_ops}, magnitude={self.magnitude}, "
                f"num_magnitude_bins={self.num_bins}, fill={self.fill})")


class TrivialAugmentWide(_Policy):
    """TrivialAugment, wide op space (Müller & Hutter 2021, "TrivialAugment: Tuning-free Yet
    State-of-the-Art Data Augmentation"), as torchvision.transforms.v2.TrivialAugmentWide but per sample.

    Each sample applies one op drawn uniformly from the 14 of TRIVIALAUGMENT_SPACE, at a magnitude bin
    drawn uniformly from `num_magnitude_bins`, signed ops negated with probability 1/2.
    """

    def __init__(self, num_magnitude_bins: int = 31, fill: float = 0):
        _check_bins(num_magnitude_bins)
        _check_fill(fill)
        self.num_bins, self.fill = num_magnitude_bins, fill
        self.space = TRIVIALAUGMENT_SPACE
        self.names = list(self.space)
        self._tables: dict = {}

    def sample(self, n, size, generator, device):
        magnitudes, signed = self._table(*size, device)
        op_index = torch.randint(len(self.names), (n,), generator=generator, device=device)
        bin_index = torch.randint(self.num_bins, (n,), generator=generator, device=device)
        return [op_index], [self._signed(magnitudes, signed, op_index, bin_index, generator)]

    def __repr__(self) -> str:
        return f"TrivialAugmentWide(num_magnitude_bins={self.num_bins}, fill={self.fill})"


class AutoAugment(_Policy):
    """AutoAugment (Cubuk, Zoph, Mané, Vasudevan & Le 2019, "AutoAugment: Learning Augmentation
    Strategies from Data"), with the learned ImageNet, CIFAR-10 or SVHN policy, as
    torchvision.transforms.v2.AutoAugment but per sample.

    Each sample draws one of the policy's 25 sub-policies; each of its two steps (op, probability,
    magnitude bin of 10) fires with its probability, signed ops negated with probability 1/2.
    """

    def __init__(self, policy: str = "imagenet", fill: float = 0):
        policy = getattr(policy, "value", policy)  # torchvision's AutoAugmentPolicy enum works too
        if policy not in AUTOAUGMENT_POLICIES:
            raise ValueError(f"policy={policy!r}: must be one of {', '.join(AUTOAUGMENT_POLICIES)}")
        _check_fill(fill)
        self.policy, self.fill = policy, fill
        self.space = AUTOAUGMENT_SPACE
        self.names = list(self.space)
        self.num_bins = AUTOAUGMENT_BINS
        steps = AUTOAUGMENT_POLICIES[policy]
        # [sub-policies, 2] tables of op index, probability and magnitude bin (0 for ops without one)
        self._ops = torch.tensor([[self.names.index(op) for op, _, _ in sub] for sub in steps])
        self._probs = torch.tensor([[p for _, p, _ in sub] for sub in steps])
        self._bins = torch.tensor([[b or 0 for _, _, b in sub] for sub in steps])
        self._tables: dict = {}
        self._steps: dict = {}

    def sample(self, n, size, generator, device):
        magnitudes, signed = self._table(*size, device)
        if str(device) not in self._steps:  # the sub-policy tables on the device, copied once
            self._steps[str(device)] = tuple(t.to(device) for t in (self._ops, self._probs, self._bins))
        ops_table, probs, bins = self._steps[str(device)]
        sub = torch.randint(ops_table.shape[0], (n,), generator=generator, device=device)
        ops, mags = [], []
        for step in range(ops_table.shape[1]):
            fires = torch.rand(n, generator=generator, device=device) < probs[sub, step]
            op_index = torch.where(fires, ops_table[sub, step], 0)  # 0: Identity
            ops.append(op_index)
            mags.append(self._signed(magnitudes, signed, op_index, bins[sub, step], generator))
        return ops, mags

    def __repr__(self) -> str:
        return f"AutoAugment(policy={self.policy!r}, fill={self.fill})"
