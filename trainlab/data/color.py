"""Batched colour augmentation with a parameter per sample: functional primitives and ops.

The primitives take a whole batch [N, C, H, W] (uint8 in 0-255, or float in [0, 1]) and one factor
per sample ([N] tensor, or a number for all). Their formulas are torchvision.transforms.v2.functional's,
step for step (including the truncating float -> uint8 casts and the floor of the grayscale image), so
an image gives the same result here as there; torchvision's kernels just take one factor per call.

Grayscale (C=1) images: saturation and hue (and so the colour part of ColorJitter, AutoAugment's
"Color" and PCALighting) are the identity, as in torchvision and PIL; everything else works per channel.

Factors may be float64 (not on MPS): the blends then round 1 - factor exactly as torchvision does,
and give bit-identical results; float32 factors can differ by one grey level now and then.

The primitives do not validate per-sample factors (that would need a device -> host copy per call);
the ops check their parameters once, in __init__.
"""

from __future__ import annotations

import numbers

import torch
import torch.nn.functional as F

from trainlab.data.augment import check_probability, coin

# ================================================================ helpers


def _bound(images: torch.Tensor) -> float:
    return 1.0 if images.is_floating_point() else 255.0


def _per_sample(value, images: torch.Tensor, dtype: torch.dtype | None = None) -> torch.Tensor:
    """A number or an [N] tensor as an [N, 1, 1, 1] tensor on the images' device (to broadcast per sample),
    in the dtype the kernel computes in (float32 for uint8 images, as torchvision's kernels)."""
    dtype = dtype or (images.dtype if images.is_floating_point() else torch.float32)
    value = torch.as_tensor(value, device=images.device)
    if value.ndim == 0:
        value = value.expand(images.shape[0])
    return value.to(dtype).view(-1, 1, 1, 1)


def _to_float(images: torch.Tensor) -> torch.Tensor:
    """uint8 -> float32 in [0, 1], as torchvision's to_dtype(scale=True)."""
    return images if images.is_floating_point() else images.to(torch.float32).mul_(1.0 / 255)


def _from_float(images: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """float in [0, 1] -> uint8 as torchvision's to_dtype(scale=True): scale by 256 - 1e-3, truncate."""
    return images if dtype.is_floating_point else images.mul(255.0 + 1.0 - 1e-3).to(dtype)


def _ratio_and_complement(factor, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(factor, 1 - factor) per sample, each rounded to the compute dtype only after the subtraction.

    torchvision computes 1 - factor in Python (float64) and rounds both to float32; doing the same
    (from a float64 factor, or a number) gives bit-identical blends. From a float32 factor the
    complement can differ in the last bit, which moves a truncated uint8 value by 1 at most."""
    if isinstance(factor, numbers.Number):
        return _per_sample(factor, images), _per_sample(1.0 - factor, images)
    factor = torch.as_tensor(factor, device=images.device)
    if not factor.is_floating_point():
        factor = factor.to(torch.float32)
    return _per_sample(factor, images), _per_sample(1 - factor, images)


def _blend(image1: torch.Tensor, image2: torch.Tensor, factor) -> torch.Tensor:
    """factor * image1 + (1 - factor) * image2, clamped; uint8 is truncated back, as torchvision's _blend."""
    ratio, complement = _ratio_and_complement(factor, image1)
    # addcmul_ rounds the multiply-add as torchvision's add_(alpha=...) does (bit for bit on the CPU; tested)
    out = image1.mul(ratio).addcmul_(image2, complement).clamp_(0, _bound(image1))
    return out if image1.is_floating_point() else out.to(image1.dtype)


def _check_channels(images: torch.Tensor) -> int:
    c = images.shape[-3]
    if c not in (1, 3):
        raise ValueError(f"images have {c} channels: colour ops take 1 (grayscale) or 3 (RGB)")
    return c


# ================================================================ functional primitives


def rgb_to_grayscale(images: torch.Tensor, num_output_channels: int = 1) -> torch.Tensor:
    """ITU-R 601 luma 0.2989 R + 0.587 G + 0.114 B (truncated for uint8); C=1 images are returned as they are."""
    if images.shape[-3] == 1:
        return images.clone() if num_output_channels == 1 else images.repeat(1, 3, 1, 1)
    return _grayscale(images, preserve_dtype=True).expand(-1, num_output_channels, -1, -1).contiguous()


def _grayscale(images: torch.Tensor, preserve_dtype: bool) -> torch.Tensor:
    r, g, b = images.unbind(dim=-3)
    luma = r.mul(0.2989).add_(g, alpha=0.587).add_(b, alpha=0.114).unsqueeze(-3)
    return luma.to(images.dtype) if preserve_dtype else luma


def _degenerate_gray(images: torch.Tensor) -> torch.Tensor:
    """The float grayscale image the blends mix towards; floored for uint8 (torchvision does the same)."""
    gray = _grayscale(images, preserve_dtype=False)
    return gray if images.is_floating_point() else gray.floor_()


def adjust_brightness(images: torch.Tensor, factor) -> torch.Tensor:
    """Multiply each image by its factor (0 gives black, 1 the image), clamped."""
    out = images.mul(_per_sample(factor, images)).clamp_(0, _bound(images))
    return out if images.is_floating_point() else out.to(images.dtype)


def adjust_contrast(images: torch.Tensor, factor) -> torch.Tensor:
    """Blend each image with the mean of its grayscale image (one number per image)."""
    if _check_channels(images) == 3:
        gray = _degenerate_gray(images)
    else:
        gray = images if images.is_floating_point() else images.to(torch.float32)
    mean = gray.mean(dim=(-3, -2, -1), keepdim=True)
    return _blend(images, mean, factor)


def adjust_saturation(images: torch.Tensor, factor) -> torch.Tensor:
    """Blend each image with its grayscale version (0 gives gray, 1 the image); identity for C=1."""
    if _check_channels(images) == 1:
        return images
    return _blend(images, _degenerate_gray(images), factor)


def _rgb_to_hsv(image: torch.Tensor) -> torch.Tensor:
    # torchvision's (PIL's) formulas, which are elementwise and so batch as they are
    r, g, _ = image.unbind(dim=-3)
    minc, maxc = torch.aminmax(image, dim=-3)
    eqc = maxc == minc  # gray pixels: S = H = 0; the where()s keep the divisions finite
    channels_range = maxc - minc
    ones = torch.ones_like(maxc)
    s = channels_range / torch.where(eqc, ones, maxc)
    channels_range_divisor = torch.where(eqc, ones, channels_range).unsqueeze_(dim=-3)
    rc, gc, bc = ((maxc.unsqueeze(dim=-3) - image) / channels_range_divisor).unbind(dim=-3)
    mask_maxc_neq_r = maxc != r
    mask_maxc_eq_g = maxc == g
    hg = rc.add(2.0).sub_(bc).mul_(mask_maxc_eq_g & mask_maxc_neq_r)
    hr = bc.sub_(gc).mul_(~mask_maxc_neq_r)
    hb = gc.add_(4.0).sub_(rc).mul_(mask_maxc_neq_r.logical_and_(mask_maxc_eq_g.logical_not_()))
    h = hr.add_(hg).add_(hb).mul_(1.0 / 6.0).add_(1.0).fmod_(1.0)
    return torch.stack((h, s, maxc), dim=-3)


def _hsv_to_rgb(image: torch.Tensor) -> torch.Tensor:
    h, s, v = image.unbind(dim=-3)
    h6 = h.mul(6)
    i = torch.floor(h6)
    f = h6.sub_(i)
    i = i.to(dtype=torch.int64).remainder_(6)
    sxf = s * f
    one_minus_s = 1.0 - s
    q = (1.0 - sxf).mul_(v).clamp_(0.0, 1.0)
    t = sxf.add_(one_minus_s).mul_(v).clamp_(0.0, 1.0)
    p = one_minus_s.mul_(v).clamp_(0.0, 1.0)
    vpqt = torch.stack((v, p, q, t), dim=-3)
    # for each hue sextant i, which of (v, p, q, t) is R, G and B
    select = torch.tensor([[0, 2, 1, 1, 3, 0], [3, 0, 0, 2, 1, 1], [1, 1, 3, 0, 0, 2]], device=image.device)
    return vpqt.gather(-3, select[:, i].movedim(0, -3))


def adjust_hue(images: torch.Tensor, factor) -> torch.Tensor:
    """Rotate each image's hue by its factor in [-0.5, 0.5] (a fraction of the colour circle), via HSV;
    identity for C=1."""
    if _check_channels(images) == 1:
        return images
    hsv = _rgb_to_hsv(_to_float(images))
    h, s, v = hsv.unbind(dim=-3)
    h = (h + _per_sample(factor, images, torch.float32).view(-1, 1, 1)).remainder_(1.0)
    return _from_float(_hsv_to_rgb(torch.stack((h, s, v), dim=-3)), images.dtype)


def adjust_sharpness(images: torch.Tensor, factor) -> torch.Tensor:
    """Blend each image with a 3x3 smoothed copy (factor 0: smooth, 1: the image, 2: sharpened).

    As in PIL and torchvision, the one-pixel border is left as it is; images of 2 pixels or fewer
    across are returned unchanged."""
    n, c, h, w = images.shape
    if h <= 2 or w <= 2 or images.numel() == 0:
        return images
    fp = images.is_floating_point()
    dtype = images.dtype if fp else torch.float32
    a, b = 1.0 / 13.0, 5.0 / 13.0
    kernel = torch.tensor([[a, a, a], [a, b, a], [a, a, a]], dtype=dtype, device=images.device)
    out = images.to(dtype=dtype, copy=True)
    blurred = F.conv2d(out, kernel.expand(c, 1, 3, 3), groups=c)
    if not fp:
        blurred = blurred.round_()
    inner = out[..., 1:-1, 1:-1]
    inner.addcmul_(blurred.sub_(inner), _ratio_and_complement(factor, images)[1])
    out = out.clamp_(0, _bound(images))
    return out if fp else out.to(images.dtype)


def posterize(images: torch.Tensor, bits) -> torch.Tensor:
    """Keep the `bits` (0-8, per sample) most significant bits of every value."""
    bits = _per_sample(bits, images, torch.int64)
    if images.is_floating_point():
        levels = (1 << bits).to(images.dtype)
        return images.mul(levels).floor_().clamp_(min=0).minimum(levels - 1).div_(levels)
    # the mask ((1 << bits) - 1) << (8 - bits) is 256 - 2**(8 - bits): 0 for 0 bits, 255 for 8
    mask = (256 - (1 << (8 - bits.clamp(0, 8)))).to(torch.uint8)
    return images & mask


def solarize(images: torch.Tensor, threshold) -> torch.Tensor:
    """Invert the values at or above each image's threshold (in the images' units: 0-255 for uint8)."""
    threshold = _per_sample(threshold, images, torch.float64 if images.dtype == torch.float64 else torch.float32)
    return torch.where(images >= threshold, invert(images), images)


def autocontrast(images: torch.Tensor) -> torch.Tensor:
    """Stretch each channel of each image to the full range (darkest -> 0, brightest -> max).
    Constant channels are left as they are."""
    _check_channels(images)
    bound = _bound(images)
    fp = images.is_floating_point()
    x = images if fp else images.to(torch.float32)
    minimum = x.amin(dim=(-2, -1), keepdim=True)
    maximum = x.amax(dim=(-2, -1), keepdim=True)
    constant = maximum == minimum
    inv_scale = (maximum - minimum).mul_(1.0 / bound)
    minimum = torch.where(constant, torch.zeros_like(minimum), minimum)
    inv_scale = torch.where(constant, torch.ones_like(inv_scale), inv_scale)
    return x.sub(minimum).div_(inv_scale).clamp_(0, bound).to(images.dtype)


def equalize(images: torch.Tensor) -> torch.Tensor:
    """Histogram-equalize each channel of each image (PIL's/torchvision's lookup table).

    All N*C histograms come from one bincount: channel k's values are offset by 256*k. Float images
    are binned on the uint8 grid as torchvision does."""
    if images.numel() == 0:
        return images
    x = _from_float(images, torch.uint8) if images.is_floating_point() else images
    n, c, h, w = x.shape
    flat = x.reshape(n * c, h * w).long()
    offsets = torch.arange(n * c, device=x.device).mul_(256).unsqueeze_(1)
    hist = torch.bincount((flat + offsets).flatten(), minlength=n * c * 256).view(n * c, 256)
    cum_hist = hist.cumsum(dim=-1)
    # PIL's step: (pixels not at the image's brightest value) // 255; step 0 (e.g. a constant channel)
    # leaves the channel unchanged
    last = cum_hist.argmax(dim=-1, keepdim=True)  # the first bin where the count is complete: the brightest value
    step = (h * w - hist.gather(-1, last)).div_(255, rounding_mode="floor")
    lut = (cum_hist[:, :-1] + step // 2).div_(step.clamp(min=1), rounding_mode="floor").clamp_(0, 255)
    lut = torch.cat([lut.new_zeros(n * c, 1), lut], dim=-1).to(torch.uint8)  # lut[0] = 0
    out = lut.gather(-1, flat).view(n, c, h, w)
    out = torch.where((step != 0).view(n, c, 1, 1), out, x)
    return _to_float(out).to(images.dtype) if images.is_floating_point() else out


def invert(images: torch.Tensor) -> torch.Tensor:
    """max - value (255 - v for uint8, 1 - v for float)."""
    return 1.0 - images if images.is_floating_point() else images.bitwise_not()


# ================================================================ ops


def _factor_range(name: str, value, centre: float, low: float, high: float, clip_at_low: bool):
    """torchvision's ColorJitter rule: a number v >= 0 means [centre - v, centre + v] (clipped at `low`
    for the multiplicative factors), a pair (min, max) is taken as is within [low, high].
    Returns None when the range is the single no-op value."""
    if isinstance(value, numbers.Number) and not isinstance(value, bool):
        limit = (high - centre) if not clip_at_low else float("inf")
        if not 0 <= value <= limit:
            rule = "must be >= 0" if clip_at_low else f"must be in [0, {high}]"
            raise ValueError(f"{name}={value}: {rule}")
        lo, hi = centre - value, centre + value
        if clip_at_low:
            lo = max(lo, low)
    else:
        try:
            lo, hi = (float(v) for v in value)
        except (TypeError, ValueError):
            raise ValueError(f"{name}={value!r}: must be a number or a (min, max) pair") from None
        if not low <= lo <= hi <= high:
            top = "" if high == float("inf") else f" <= {high}"
            raise ValueError(f"{name}={value!r}: a (min, max) range must satisfy {low} <= min <= max{top}")
    return None if lo == hi == centre else (float(lo), float(hi))


def _uniform(n: int, bounds: tuple[float, float], generator: torch.Generator, device) -> torch.Tensor:
    lo, hi = bounds
    return torch.rand(n, generator=generator, device=device).mul_(hi - lo).add_(lo)


class ColorJitter:
    """Random brightness, contrast, saturation and hue, with its own factors per sample.

    As torchvision's ColorJitter (the Inception/ResNet "colour augmentation" recipes): a number b means a
    factor drawn uniformly from [max(0, 1 - b), 1 + b] (hue: h in [0, 0.5] means a shift in [-h, h]); a
    (min, max) pair is used as given. Unlike torchvision, which shuffles the four adjustments per call,
    they are applied in a fixed order here: brightness, contrast, saturation, hue. Each sample is jittered
    with probability `p`. Saturation and hue leave grayscale (C=1) images unchanged.
    """

    def __init__(self, brightness=0, contrast=0, saturation=0, hue=0, p: float = 1.0):
        inf = float("inf")
        self.brightness = _factor_range("brightness", brightness, 1.0, 0.0, inf, clip_at_low=True)
        self.contrast = _factor_range("contrast", contrast, 1.0, 0.0, inf, clip_at_low=True)
        self.saturation = _factor_range("saturation", saturation, 1.0, 0.0, inf, clip_at_low=True)
        self.hue = _factor_range("hue", hue, 0.0, -0.5, 0.5, clip_at_low=False)
        check_probability(p)
        self.p = p
        self._given = dict(brightness=brightness, contrast=contrast, saturation=saturation, hue=hue)

    def __call__(self, images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        n, device = images.shape[0], images.device
        chosen = coin(n, self.p, generator, device)
        out = images
        for bounds, adjust in ((self.brightness, adjust_brightness), (self.contrast, adjust_contrast),
                               (self.saturation, adjust_saturation), (self.hue, adjust_hue)):
            if bounds is not None:
                out = adjust(out, _uniform(n, bounds, generator, device))
        # uint8 between the steps, as torchvision's kernels give it; samples not chosen keep their pixels
        return torch.where(chosen, out, images)

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self._given.items())
        return f"ColorJitter({args}, p={self.p})"


class PCALighting:
    """AlexNet's "fancy PCA" lighting noise (Krizhevsky, Sutskever & Hinton 2012, section 4.1).

    fit(train_images) finds the eigenvalues lambda_i and eigenvectors v_i of the 3x3 covariance of the
    training set's RGB values (scaled to [0, 1]; a fixed, seeded sample of at most `max_pixels` pixels).
    Each sample then draws alpha_i ~ N(0, alphastd^2) and adds sum_i alpha_i * lambda_i * v_i (times 255)
    to every one of its pixels: a shift of the whole image's colour along the directions in which
    natural colours vary. Applied to each sample with probability `p`; grayscale (C=1) images are
    returned unchanged.
    """

    max_pixels = 1_000_000

    def __init__(self, alphastd: float = 0.1, p: float = 1.0):
        if not alphastd >= 0:
            raise ValueError(f"alphastd={alphastd}: a standard deviation must be >= 0")
        check_probability(p)
        self.alphastd = alphastd
        self.p = p
        self.eigvals: torch.Tensor | None = None  # [C], descending
        self.eigvecs: torch.Tensor | None = None  # [C, C], column i is the eigenvector of eigvals[i]
        self._on_device: dict = {}

    def fit(self, train_images: torch.Tensor) -> "PCALighting":
        c = train_images.shape[1]
        pixels = train_images.transpose(0, 1).reshape(c, -1)
        count = pixels.shape[1]
        if count > self.max_pixels:
            # a seeded sample (not every k-th pixel, which can line up with image rows or columns)
            pick = torch.randint(count, (self.max_pixels,), generator=torch.Generator().manual_seed(0))
            pixels = pixels[:, pick.to(pixels.device)]
        pixels = pixels.cpu().to(torch.float64).div_(255.0)  # float64 on the CPU: MPS has no float64
        covariance = torch.cov(pixels).reshape(c, c)
        eigvals, eigvecs = torch.linalg.eigh(covariance)  # ascending; flip to the usual largest-first
        self.eigvals = eigvals.flip(0).clamp_(min=0).float().cpu()
        self.eigvecs = eigvecs.flip(1).float().cpu()
        self._on_device = {}
        return self

    def __call__(self, images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        if self.eigvals is None:
            raise ValueError("PCALighting needs fit(train_images) first")
        n, c = images.shape[:2]
        if c == 1:
            return images
        if c != self.eigvals.numel():
            raise ValueError(f"PCALighting was fitted on {self.eigvals.numel()}-channel images, got {c} channels")
        device = images.device
        if device not in self._on_device:  # copy the 3x3 basis to the device once, not per batch
            self._on_device[device] = (self.eigvals.to(device), self.eigvecs.to(device))
        eigvals, eigvecs = self._on_device[device]
        chosen = coin(n, self.p, generator, device).view(n, 1)
        alpha = torch.randn(n, c, generator=generator, device=device).mul_(self.alphastd) * chosen
        shift = (alpha * eigvals) @ eigvecs.T * 255.0  # [N, C]: sum_i alpha_i lambda_i v_i, in grey levels
        out = images.float() + shift.view(n, c, 1, 1)
        return out.round_().clamp_(0, 255).to(torch.uint8)

    def __repr__(self) -> str:
        return f"PCALighting(alphastd={self.alphastd}, p={self.p})"
