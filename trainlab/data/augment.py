"""Batched augmentation on the device, with per-sample randomness.

torchvision's v2 transforms, applied to a batch tensor, draw *one* random parameter for the whole
batch (every image flipped, or none); the classic recipes want each image to draw its own. So these
ops take a whole uint8 batch [N, C, H, W] and a torch.Generator and draw N sets of parameters at once.
They run before normalization, on uint8, so zero padding is black exactly as in the PIL recipes.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from trainlab.data.geometry import affine_matrices, warp_affine



# Ops raise ValueError for impossible parameters; the builder (trainlab.config.instantiate) turns that
# into one line naming the op's key, e.g. "augmentation.ops.crop: ... padding=-1: must be >= 0".


def check_probability(p: float) -> None:
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"p={p}: a probability must be in [0, 1]")


def coin(n: int, p: float, generator: torch.Generator, device: torch.device) -> torch.Tensor:
    """A boolean per sample, True with probability p, shaped to broadcast over [N, C, H, W]."""
    return (torch.rand(n, generator=generator, device=device) < p).view(n, 1, 1, 1)


class _Flip:
    """Mirror each image along `dim` with probability `p` (each sample its own coin)."""

    dim = -1

    def __init__(self, p: float = 0.5):
        check_probability(p)
        self.p = p

    def __call__(self, images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        flip = coin(images.shape[0], self.p, generator, images.device)
        return torch.where(flip, images.flip(self.dim), images)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(p={self.p})"


class HorizontalFlip(_Flip):
    """Mirror each image left-right with probability `p`."""

    dim = -1


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


def _pair(name: str, value) -> tuple[float, float]:
    try:
        low, high = (float(v) for v in value)
    except (TypeError, ValueError):
        raise ValueError(f"{name}={value!r}: must be a pair of numbers") from None
    return low, high


def _check_range(name: str, value, positive: bool = False, at_most: float | None = None) -> tuple[float, float]:
    low, high = _pair(name, value)
    if not (low > 0 if positive else low >= 0) or low > high or (at_most is not None and high > at_most):
        bound = f" <= {at_most:g}" if at_most is not None else ""
        raise ValueError(f"{name}={value!r}: must be {'0 <' if positive else '0 <='} min <= max{bound}")
    return low, high


def _check_fill(name: str, fill) -> float:
    if isinstance(fill, bool) or not isinstance(fill, (int, float)) or not 0 <= fill <= 255:
        raise ValueError(f"{name}={fill!r}: must be a number in [0, 255]")
    return fill


def _uniform(shape, low: float, high: float, generator: torch.Generator, device) -> torch.Tensor:
    return low + (high - low) * torch.rand(shape, generator=generator, device=device)


def _box_candidates(n: int, area: int, scale: tuple[float, float], ratio: tuple[float, float],
                    generator: torch.Generator, device, tries: int = 10) -> tuple[torch.Tensor, torch.Tensor]:
    """`tries` candidate (long side along the ratio, short side) pairs per sample, as torchvision draws
    them one at a time: area fraction uniform in `scale`, aspect ratio log-uniform in `ratio`.
    Returns (sqrt(area * r), sqrt(area / r)) rounded, each [N, tries] float."""
    target = area * _uniform((n, tries), scale[0], scale[1], generator, device)
    log_ratio = _uniform((n, tries), math.log(ratio[0]), math.log(ratio[1]), generator, device)
    aspect = torch.exp(log_ratio)
    return torch.sqrt(target * aspect).round(), torch.sqrt(target / aspect).round()


def _first_valid(valid: torch.Tensor, *candidates: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """Per row, the candidates at the first True of `valid` [N, tries] (torchvision's loop, batched),
    and whether the row had any."""
    first = valid.int().argmax(dim=1, keepdim=True)  # argmax returns the first maximum
    return (valid.any(dim=1), *(c.gather(1, first).squeeze(1) for c in candidates))


def _offsets(sizes: torch.Tensor, limit: int, generator: torch.Generator) -> torch.Tensor:
    """An integer offset uniform in [0, limit - size] per sample (torch.randint takes no per-sample bound)."""
    room = (limit - sizes + 1).clamp(min=1)
    offset = (torch.rand(sizes.shape, generator=generator, device=sizes.device) * room).floor()
    return torch.minimum(offset, room - 1)


def _box_mask(box: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """[N, 1, H, W] True inside each sample's (top, left, height, width) box."""
    rows = torch.arange(h, device=box.device)
    cols = torch.arange(w, device=box.device)
    top, left, height, width = box.unbind(1)
    in_rows = (rows >= top[:, None]) & (rows < (top + height)[:, None])
    in_cols = (cols >= left[:, None]) & (cols < (left + width)[:, None])
    return (in_rows[:, :, None] & in_cols[:, None, :]).unsqueeze(1)


def _to_uint8(images: torch.Tensor) -> torch.Tensor:
    return images.round_().clamp_(0, 255).to(torch.uint8)


class _DrawnOp:
    """An op in two halves: _draw (every sample's random parameters, from the generator) and _apply
    (the transform for given parameters), so tests can apply known parameters."""

    def __call__(self, images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        return self._apply(images, self._draw(images, generator))


def _resample(images: torch.Tensor, x: torch.Tensor, y: torch.Tensor, padding_mode: str,
              apply: torch.Tensor) -> torch.Tensor:
    """Bilinear samples of uint8 images at grid positions (x, y) [N, H, W] (align_corners units), kept
    only for the samples that `apply` [N] selects."""
    sampled = F.grid_sample(images.float(), torch.stack([x, y], dim=-1), mode="bilinear",
                            padding_mode=padding_mode, align_corners=True)
    return torch.where(apply.view(-1, 1, 1, 1), _to_uint8(sampled), images)


class VerticalFlip(_Flip):
    """Mirror each image top-bottom with probability `p` (for data without a natural "up": aerial,
    microscopy and medical images)."""

    dim = -2


class RandomResizedCrop(_DrawnOp):
    """Cut a random box per image and stretch it back to the full H x W (bilinear).

    The "scale augmentation" of the Inception recipe (Szegedy et al. 2015, "Going deeper with
    convolutions"), also the standard ResNet ImageNet recipe: the box covers a fraction of the area uniform in
    `scale` with an aspect ratio (width / height) log-uniform in `ratio`, at a uniform position.
    Box sampling follows torchvision's RandomResizedCrop.get_params: up to 10 tries (drawn at once,
    the first that fits is kept), else a centre crop of the image clamped to the ratio range.

    Resampling reproduces torchvision's resized_crop (crop, then interpolate with
    align_corners=False) with one grid_sample over an axis-aligned grid whose source coordinates are
    clamped to the box. geometry.warp_affine and torchvision.ops.roi_align were the alternatives, but
    both read the half pixel beyond the box edge (blending in pixels outside the crop, and for
    warp_affine the fill at the image border); clamping makes each output equal torchvision's to
    within rounding, at the cost of one grid_sample like warp_affine.
    Applied to each image with probability `p` (others pass unchanged).
    """

    def __init__(self, scale=(0.08, 1.0), ratio=(3 / 4, 4 / 3), p: float = 1.0):
        self.scale = _check_range("scale", scale, positive=True, at_most=1.0)
        self.ratio = _check_range("ratio", ratio, positive=True)
        check_probability(p)
        self.p = p

    def _draw(self, images: torch.Tensor, generator: torch.Generator) -> dict:
        n, _, h, w = images.shape
        device = images.device
        apply = torch.rand(n, generator=generator, device=device) < self.p
        box_w, box_h = _box_candidates(n, h * w, self.scale, self.ratio, generator, device)
        fits = (box_w > 0) & (box_w <= w) & (box_h > 0) & (box_h <= h)
        found, box_h, box_w = _first_valid(fits, box_h, box_w)
        # torchvision's fallback: the whole image, or its centre cropped to the nearest allowed ratio
        fallback_h, fallback_w = h, w
        if w / h < self.ratio[0]:
            fallback_h = int(round(w / self.ratio[0]))
        elif w / h > self.ratio[1]:
            fallback_w = int(round(h * self.ratio[1]))
        box_h = torch.where(found, box_h, fallback_h)
        box_w = torch.where(found, box_w, fallback_w)
        top = torch.where(found, _offsets(box_h, h, generator), (h - fallback_h) // 2)
        left = torch.where(found, _offsets(box_w, w, generator), (w - fallback_w) // 2)
        return {"apply": apply, "box": torch.stack([top, left, box_h, box_w], dim=1).long()}

    @staticmethod
    def _apply(images: torch.Tensor, params: dict) -> torch.Tensor:
        """params: apply [N] bool, box [N, 4] long (top, left, height, width) in pixels."""
        n, _, h, w = images.shape
        top, left, box_h, box_w = params["box"].float().unbind(1)

        def source(start, length, size):
            # interpolate's align_corners=False map: output pixel centre (i + 0.5) * length / size,
            # clamped to the box's edge pixels as interpolate clamps at the (cropped) image edge
            centres = (torch.arange(size, device=images.device) + 0.5)[None] * (length / size)[:, None] - 0.5
            pixels = start[:, None] + torch.minimum(centres.clamp(min=0), (length - 1)[:, None])
            return pixels * (2 / max(size - 1, 1)) - 1  # pixels -> grid units, align_corners=True

        x = source(left, box_w, w)[:, None, :].expand(n, h, w)
        y = source(top, box_h, h)[:, :, None].expand(n, h, w)
        return _resample(images, x, y, "border", params["apply"])

    def __repr__(self) -> str:
        return f"RandomResizedCrop(scale={self.scale}, ratio={self.ratio}, p={self.p})"


class RandomAffine(_DrawnOp):
    """Rotate, translate, scale and shear each image by its own random affine map (bilinear).

    Parameter meaning as torchvision.transforms.RandomAffine, whose warps geometry.affine_matrices
    reproduces: rotation uniform in [-degrees, degrees]; translation uniform in
    [-translate[0] * W, translate[0] * W] x [-translate[1] * H, translate[1] * H], rounded to whole
    pixels as torchvision does (a pure shift then stays sharp); scale uniform in `scale`; x-shear
    uniform in [-shear[0], shear[0]] and y-shear in [-shear[1], shear[1]] degrees (torchvision reads a
    2-sequence as an x-shear range instead). Pixels from outside the image get `fill`. Applied to
    each image with probability `p`. The classic distortion augmentation of LeCun et al. 1998
    ("Gradient-based learning applied to document recognition": random planar affine maps of MNIST).
    """

    def __init__(self, degrees: float = 0.0, translate=(0.0, 0.0), scale=(1.0, 1.0), shear=(0.0, 0.0),
                 p: float = 1.0, fill: float = 0):
        if isinstance(degrees, bool) or not isinstance(degrees, (int, float)) or not 0 <= degrees < math.inf:
            raise ValueError(f"degrees={degrees!r}: must be a finite number >= 0")
        translate_ = _pair("translate", translate)
        if not all(0 <= t <= 1 for t in translate_):
            raise ValueError(f"translate={translate!r}: fractions of the image size must be in [0, 1]")
        shear_ = _pair("shear", shear)
        if not all(0 <= s < 90 for s in shear_):  # tan(90 degrees) is infinite
            raise ValueError(f"shear={shear!r}: angles must be in [0, 90) degrees")
        self.degrees = degrees
        self.translate = translate_
        self.scale = _check_range("scale", scale, positive=True)
        self.shear = shear_
        check_probability(p)
        self.p = p
        self.fill = _check_fill("fill", fill)

    def _draw(self, images: torch.Tensor, generator: torch.Generator) -> dict:
        n, _, h, w = images.shape
        device = images.device

        def symmetric(shape, half):
            return _uniform(shape, -half, half, generator, device)

        apply = torch.rand(n, generator=generator, device=device) < self.p
        angle = symmetric(n, self.degrees)
        translate = torch.stack([symmetric(n, self.translate[0] * w), symmetric(n, self.translate[1] * h)], 1)
        scale = _uniform(n, *self.scale, generator, device)
        shear = torch.stack([symmetric(n, self.shear[0]), symmetric(n, self.shear[1])], 1)
        return {"apply": apply, "angle": angle, "translate": translate.round(), "scale": scale, "shear": shear}

    def _apply(self, images: torch.Tensor, params: dict) -> torch.Tensor:
        """params: apply [N] bool; angle [N] degrees; translate [N, 2] (dx, dy) pixels; scale [N];
        shear [N, 2] (x, y) degrees."""
        n, _, h, w = images.shape
        forward = affine_matrices(params["angle"], params["translate"], params["scale"], params["shear"], (h, w))
        warped = warp_affine(images, forward, fill=self.fill)
        return torch.where(params["apply"].view(n, 1, 1, 1), warped, images)

    def __repr__(self) -> str:
        return (f"RandomAffine(degrees={self.degrees}, translate={self.translate}, scale={self.scale}, "
                f"shear={self.shear}, p={self.p}, fill={self.fill})")


class ElasticDistortion(_DrawnOp):
    """Elastic distortion of Simard, Steinkraus & Platt 2003 ("Best practices for convolutional neural
    networks applied to visual document analysis"): a random displacement field per image, uniform in
    [-1, 1] per pixel and axis, smoothed by a Gaussian of std `sigma` pixels, scaled by `alpha`
    pixels; each output pixel reads the input at its displaced position (bilinear, zero outside).
    Their MNIST setting is alpha=34, sigma=4. Applied to each image with probability `p`.
    """

    def __init__(self, alpha: float = 34.0, sigma: float = 4.0, p: float = 0.5):
        for name, value in (("alpha", alpha), ("sigma", sigma)):
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value < math.inf:
                raise ValueError(f"{name}={value!r}: must be a finite number >= 0")
        check_probability(p)
        self.alpha = alpha
        self.sigma = sigma
        self.p = p

    def _kernel(self, device) -> torch.Tensor:
        # truncated at 4 sigma, as scipy.ndimage.gaussian_filter (what Simard-style code uses)
        radius = int(4 * self.sigma + 0.5)
        x = torch.arange(-radius, radius + 1, device=device, dtype=torch.float32)
        kernel = torch.exp(-0.5 * (x / self.sigma) ** 2) if self.sigma > 0 else torch.ones(1, device=device)
        return kernel / kernel.sum()

    def _draw(self, images: torch.Tensor, generator: torch.Generator) -> dict:
        n, _, h, w = images.shape
        device = images.device
        apply = torch.rand(n, generator=generator, device=device) < self.p
        kernel = self._kernel(device)
        k = kernel.numel()
        # draw the noise k - 1 pixels larger and convolve without padding: every displacement is a
        # full Gaussian average of i.i.d. noise, so the field is as strong at the border as inside
        # (zero or reflect padding would damp or correlate it there, and reflect fails on small images)
        noise = _uniform((n * 2, 1, h + k - 1, w + k - 1), -1.0, 1.0, generator, device)
        field = F.conv2d(F.conv2d(noise, kernel.view(1, 1, 1, k)), kernel.view(1, 1, k, 1))
        return {"apply": apply, "displacement": self.alpha * field.view(n, 2, h, w)}

    @staticmethod
    def _apply(images: torch.Tensor, params: dict) -> torch.Tensor:
        """params: apply [N] bool; displacement [N, 2, H, W]: (dx, dy) in pixels per output pixel."""
        n, _, h, w = images.shape
        ys, xs = torch.meshgrid(torch.arange(h, device=images.device, dtype=torch.float32),
                                torch.arange(w, device=images.device, dtype=torch.float32), indexing="ij")
        x = (xs + params["displacement"][:, 0]) * (2 / max(w - 1, 1)) - 1
        y = (ys + params["displacement"][:, 1]) * (2 / max(h - 1, 1)) - 1
        return _resample(images, x, y, "zeros", params["apply"])

    def __repr__(self) -> str:
        return f"ElasticDistortion(alpha={self.alpha}, sigma={self.sigma}, p={self.p})"


class Cutout(_DrawnOp):
    """Cutout (DeVries & Taylor 2017, "Improved regularization of convolutional neural networks with
    cutout"): `holes` squares of side `size` set to `fill`, each centred on a pixel drawn uniformly
    over the whole image, so a hole may hang over the border and be clipped there (the paper finds
    that better than keeping holes inside). Rows cy - size // 2 to cy - size // 2 + size - 1 (columns
    alike): exactly `size` pixels for an odd or even side (the paper's code, centre +- size // 2,
    covers size - 1 for an odd side). Applied to each image with probability `p`.
    """

    def __init__(self, size: int = 8, holes: int = 1, p: float = 1.0, fill: float = 0):
        for name, value in (("size", size), ("holes", holes)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name}={value!r}: must be an integer >= 1")
        check_probability(p)
        self.size = size
        self.holes = holes
        self.p = p
        self.fill = _check_fill("fill", fill)

    def _draw(self, images: torch.Tensor, generator: torch.Generator) -> dict:
        n, _, h, w = images.shape
        if self.size > min(h, w):
            raise ValueError(f"size={self.size}: a hole must fit in the {h}x{w} image")
        device = images.device
        apply = torch.rand(n, generator=generator, device=device) < self.p
        rows = torch.randint(0, h, (n, self.holes), generator=generator, device=device)
        cols = torch.randint(0, w, (n, self.holes), generator=generator, device=device)
        return {"apply": apply, "centres": torch.stack([rows, cols], dim=-1)}

    def _apply(self, images: torch.Tensor, params: dict) -> torch.Tensor:
        """params: apply [N] bool; centres [N, holes, 2] long (row, column)."""
        n, _, h, w = images.shape
        mask = torch.zeros(n, 1, h, w, dtype=torch.bool, device=images.device)
        for hole in params["centres"].unbind(1):  # a handful of holes: a loop over them, not samples
            corner = hole - self.size // 2
            # a box hanging over the border needs no clipping: the mask only covers real pixels
            box = torch.cat([corner, torch.full_like(corner, self.size)], dim=1)
            mask |= _box_mask(box, h, w)
        mask &= params["apply"].view(n, 1, 1, 1)
        return images.masked_fill(mask, int(round(self.fill)))

    def __repr__(self) -> str:
        return f"Cutout(size={self.size}, holes={self.holes}, p={self.p}, fill={self.fill})"


class RandomErasing(_DrawnOp):
    """Random Erasing (Zhong et al. 2017, "Random erasing data augmentation"), as torchvision's
    RandomErasing: with probability `p` an image gets one box covering a fraction of its area uniform
    in `scale`, with aspect ratio (height / width) log-uniform in `ratio`, at a uniform position
    strictly inside the image; up to 10 tries (drawn at once, first fit kept), else the image is left
    as is. The box is set to `value` (0-255), or with "random" to per-pixel uniform noise in 0-255
    (the paper's choice; torchvision's normal noise assumes normalized floats).
    """

    def __init__(self, p: float = 0.5, scale=(0.02, 0.33), ratio=(0.3, 3.3), value=0):
        check_probability(p)
        self.p = p
        self.scale = _check_range("scale", scale, at_most=1.0)
        self.ratio = _check_range("ratio", ratio, positive=True)
        if value != "random":
            if isinstance(value, str):
                raise ValueError(f"value={value!r}: must be a number in [0, 255] or 'random'")
            _check_fill("value", value)
        self.value = value

    def _draw(self, images: torch.Tensor, generator: torch.Generator) -> dict:
        n, _, h, w = images.shape
        device = images.device
        apply = torch.rand(n, generator=generator, device=device) < self.p
        box_h, box_w = _box_candidates(n, h * w, self.scale, self.ratio, generator, device)
        found, box_h, box_w = _first_valid((box_h < h) & (box_w < w), box_h, box_w)  # strict, as torchvision
        top = _offsets(box_h, h, generator)
        left = _offsets(box_w, w, generator)
        params = {"apply": apply & found, "box": torch.stack([top, left, box_h, box_w], dim=1).long()}
        if self.value == "random":
            params["noise"] = torch.randint(0, 256, images.shape, generator=generator, device=device,
                                            dtype=torch.uint8)
        return params

    def _apply(self, images: torch.Tensor, params: dict) -> torch.Tensor:
        """params: apply [N] bool; box [N, 4] long (top, left, height, width); noise [N, C, H, W] uint8
        when value is "random"."""
        n, _, h, w = images.shape
        mask = _box_mask(params["box"], h, w) & params["apply"].view(n, 1, 1, 1)
        if self.value == "random":
            return torch.where(mask, params["noise"], images)
        return images.masked_fill(mask, int(round(self.value)))

    def __repr__(self) -> str:
        return f"RandomErasing(p={self.p}, scale={self.scale}, ratio={self.ratio}, value={self.value!r})"
