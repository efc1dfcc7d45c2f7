"""Colour primitives agree with torchvision.transforms.v2.functional image by image, with a factor per
sample; ColorJitter and PCALighting draw their own parameters per sample."""

from __future__ import annotations

import pytest
import torch
from torchvision.transforms.v2 import functional as TF

from trainlab.data import color
from trainlab.data.pipeline import Pipeline
from trainlab.data.color import ColorJitter, PCALighting


def sample_images(channels: int = 3, h: int = 13, w: int = 17) -> torch.Tensor:
    """Eight images covering the awkward cases: noise, low contrast, gray (R=G=B), a constant channel,
    a constant image, few distinct values, saturated colours, a black/white image."""
    gen = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (8, channels, h, w), generator=gen, dtype=torch.uint8)
    images[1] = images[1] // 5 + 100
    images[2] = images[2, :1].expand(channels, h, w)
    images[3, -1] = 7
    images[4] = 42
    images[5] = images[5] // 64 * 64
    images[6] = (images[6] > 128).to(torch.uint8) * 255 // (torch.arange(channels).view(channels, 1, 1) + 1)
    images[7] = (images[7] > 200).to(torch.uint8) * 255
    return images


def reference(fn, images: torch.Tensor, factors) -> torch.Tensor:
    """torchvision's kernel applied one image at a time, each with its own factor."""
    return torch.stack([fn(image, factor) for image, factor in zip(images, factors)])


def assert_within_one_level(mine: torch.Tensor, expected: torch.Tensor) -> None:
    assert mine.shape == expected.shape and mine.dtype == expected.dtype
    diff = (mine.int() - expected.int()).abs()
    assert diff.max() <= 1, diff.max()


FACTORS = [0.0, 0.25, 0.5, 0.9, 1.0, 1.3, 2.0, 3.7]  # one per test image
BLENDS = {
    "brightness": (color.adjust_brightness, TF.adjust_brightness),
    "contrast": (color.adjust_contrast, TF.adjust_contrast),
    "saturation": (color.adjust_saturation, TF.adjust_saturation),
    "sharpness": (color.adjust_sharpness, TF.adjust_sharpness),
}


@pytest.mark.parametrize("name", list(BLENDS))
@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize("rotation", [0, 3])  # which image gets which factor
def test_factor_primitives_match_torchvision_per_sample(name, channels, rotation):
    mine_fn, tv_fn = BLENDS[name]
    images = sample_images(channels)
    factors = FACTORS[rotation:] + FACTORS[:rotation]
    expected = reference(tv_fn, images, factors)
    # float64 factors: 1 - factor is rounded as torchvision rounds it, so the result is bit-identical
    assert torch.equal(mine_fn(images, torch.tensor(factors, dtype=torch.float64)), expected)
    # float32 factors (what the ops draw): the complement may differ in its last bit, 1 grey level at most
    assert_within_one_level(mine_fn(images, torch.tensor(factors)), expected)


@pytest.mark.parametrize("name", list(BLENDS) + ["hue"])
def test_factor_primitives_on_float_images(name):
    mine_fn, tv_fn = BLENDS.get(name, (color.adjust_hue, TF.adjust_hue))
    images = sample_images(3).float() / 255
    factors = [-0.5, -0.2, 0.0, 0.1, 0.25, 0.4, 0.5, -0.05] if name == "hue" else FACTORS
    mine = mine_fn(images, torch.tensor(factors))
    assert mine.dtype == torch.float32
    torch.testing.assert_close(mine, reference(tv_fn, images, factors), atol=1e-5, rtol=0)


def test_a_number_is_the_factor_of_every_sample():
    images = sample_images(3)
    assert torch.equal(color.adjust_contrast(images, 0.6), color.adjust_contrast(images, torch.full((8,), 0.6)))


@pytest.mark.parametrize("factors", [[-0.5, -0.3, -0.1, 0.0, 0.05, 0.2, 0.37, 0.5],
                                     [0.45, -0.45, 0.11, -0.11, 0.3, -0.3, 0.01, -0.25]])
def test_adjust_hue_matches_torchvision_per_sample(factors):
    images = sample_images(3)
    assert torch.equal(color.adjust_hue(images, torch.tensor(factors)), reference(TF.adjust_hue, images, factors))


@pytest.mark.parametrize("fn", [color.adjust_saturation, color.adjust_hue])
def test_saturation_and_hue_leave_grayscale_images_unchanged(fn):
    images = sample_images(1)
    assert torch.equal(fn(images, torch.full((8,), 0.3)), images)


def test_sharpness_leaves_tiny_images_unchanged():
    images = sample_images(3, h=2, w=9)
    assert torch.equal(color.adjust_sharpness(images, torch.full((8,), 2.0)), images)


@pytest.mark.parametrize("channels", [1, 3])
def test_posterize_is_exact_with_bits_per_sample(channels):
    images = sample_images(channels)
    for bits in ([0, 1, 2, 3, 4, 5, 6, 8], [7, 8, 1, 4, 0, 2, 6, 3]):
        assert torch.equal(color.posterize(images, torch.tensor(bits)), reference(TF.posterize, images, bits))
        floats = images.float() / 255
        assert torch.equal(color.posterize(floats, torch.tensor(bits)), reference(TF.posterize, floats, bits))


@pytest.mark.parametrize("channels", [1, 3])
def test_solarize_is_exact_with_a_threshold_per_sample(channels):
    images = sample_images(channels)
    for thresholds in ([0.0, 1.0, 42.0, 42.5, 100.0, 128.0, 254.5, 255.0],
                       [255.0, 200.0, 7.0, 64.0, 0.5, 43.0, 3.0, 128.0]):
        mine = color.solarize(images, torch.tensor(thresholds))
        assert torch.equal(mine, reference(TF.solarize, images, thresholds))
    floats = images.float() / 255
    mine = color.solarize(floats, torch.tensor([0.0, 0.1, 0.2, 0.3, 0.5, 0.7, 0.9, 1.0]))
    assert torch.equal(mine, reference(TF.solarize, floats, [0.0, 0.1, 0.2, 0.3, 0.5, 0.7, 0.9, 1.0]))


@pytest.mark.parametrize("name", ["autocontrast", "equalize", "invert", "rgb_to_grayscale"])
@pytest.mark.parametrize("channels", [1, 3])
def test_parameterless_primitives_are_exact(name, channels):
    images = sample_images(channels)
    mine_fn, tv_fn = getattr(color, name), getattr(TF, name)
    expected = torch.stack([tv_fn(image) for image in images])
    assert torch.equal(mine_fn(images), expected)
    floats = images.float() / 255
    torch.testing.assert_close(mine_fn(floats), torch.stack([tv_fn(image) for image in floats]), atol=1e-6, rtol=0)


def test_equalize_uses_each_channel_of_each_image_separately():
    # a batch must give what each image gives alone (the histograms must not leak across the batch)
    images = sample_images(3, h=20, w=20)
    alone = torch.cat([color.equalize(images[i:i + 1]) for i in range(8)])
    assert torch.equal(color.equalize(images), alone)
    constant = torch.full((1, 3, 5, 5), 77, dtype=torch.uint8)
    assert torch.equal(color.equalize(constant), constant)


def test_rgb_to_grayscale_three_output_channels():
    images = sample_images(3)
    assert torch.equal(color.rgb_to_grayscale(images, 3),
                       torch.stack([TF.rgb_to_grayscale(image, num_output_channels=3) for image in images]))


# ================================================================ ColorJitter


def constant_batch(n: int = 64, value: int = 100, channels: int = 3) -> torch.Tensor:
    return torch.full((n, channels, 6, 6), value, dtype=torch.uint8)


def test_color_jitter_p0_is_identity():
    images = sample_images(3)
    out = ColorJitter(0.5, 0.5, 0.5, 0.2, p=0.0)(images, torch.Generator().manual_seed(0))
    assert torch.equal(out, images)


def test_color_jitter_draws_a_factor_per_sample_within_the_range():
    images = constant_batch(value=100)
    out = ColorJitter(brightness=0.5)(images, torch.Generator().manual_seed(0))
    assert out.shape == images.shape and out.dtype == torch.uint8
    per_image = out.flatten(1)
    assert (per_image == per_image[:, :1]).all()  # one factor for all pixels of an image
    values = per_image[:, 0].float()
    assert values.min() >= 50 and values.max() <= 150  # factors in [0.5, 1.5]
    assert values.unique().numel() > 20  # not one factor for the batch
    assert values.min() < 65 and values.max() > 135  # both ends of the range are used


def test_color_jitter_p_half_leaves_some_samples_alone():
    images = constant_batch(value=100)
    out = ColorJitter(brightness=(1.5, 1.5), p=0.5)(images, torch.Generator().manual_seed(0))
    changed = (out.flatten(1)[:, 0] == 150)
    assert ((out.flatten(1)[:, 0] == 100) | changed).all()
    assert 10 < changed.sum() < 54


def test_color_jitter_pairs_are_used_as_given_and_follow_the_fixed_order():
    # fixed factors: the op equals torchvision's kernels in the order brightness, contrast, saturation, hue
    images = sample_images(3)
    out = ColorJitter(brightness=(1.2, 1.2), contrast=(0.7, 0.7), saturation=(1.6, 1.6), hue=(0.1, 0.1))(
        images, torch.Generator().manual_seed(0))
    expected = torch.stack([TF.adjust_hue(TF.adjust_saturation(TF.adjust_contrast(TF.adjust_brightness(
        image, 1.2), 0.7), 1.6), 0.1) for image in images])
    diff = (out.int() - expected.int()).abs()
    assert diff.max() <= 2  # up to one level per step can compound
    assert (diff == 0).float().mean() > 0.95


def test_color_jitter_hue_range_on_a_pure_colour():
    images = torch.zeros(200, 3, 2, 2, dtype=torch.uint8)
    images[:, 0] = 255  # pure red: hue 0
    out = ColorJitter(hue=0.1)(images, torch.Generator().manual_seed(0))
    hue = color._rgb_to_hsv(out.float() / 255)[:, 0, 0, 0]
    shift = torch.where(hue > 0.5, hue - 1, hue)  # in [-0.5, 0.5)
    assert shift.abs().max() <= 0.1 + 1 / 255
    assert shift.min() < -0.07 and shift.max() > 0.07


def test_color_jitter_on_grayscale_applies_brightness_and_contrast_only():
    images = sample_images(1)
    generator = torch.Generator().manual_seed(0)
    assert torch.equal(ColorJitter(saturation=0.9, hue=0.5)(images, generator), images)
    out = ColorJitter(brightness=0.4, contrast=0.4, saturation=0.9, hue=0.5)(images, generator)
    assert out.shape == images.shape and not torch.equal(out, images)


def test_color_jitter_is_reproducible_with_the_same_generator_seed():
    images = sample_images(3)
    op = ColorJitter(0.4, 0.4, 0.4, 0.1, p=0.8)
    a = op(images, torch.Generator().manual_seed(3))
    b = op(images, torch.Generator().manual_seed(3))
    c = op(images, torch.Generator().manual_seed(4))
    assert torch.equal(a, b) and not torch.equal(a, c)


@pytest.mark.parametrize("kwargs, message", [
    (dict(brightness=-0.1), r"^brightness=-0\.1: must be >= 0"),
    (dict(contrast=(1.5, 0.5)), r"^contrast=\(1\.5, 0\.5\): a \(min, max\) range"),
    (dict(saturation=[-1, 2]), r"^saturation=\[-1, 2\]: a \(min, max\) range"),
    (dict(hue=0.6), r"^hue=0\.6: must be in \[0, 0\.5\]"),
    (dict(hue=-0.1), r"^hue=-0\.1: must be in \[0, 0\.5\]"),
    (dict(hue=(-0.6, 0.2)), r"^hue=\(-0\.6, 0\.2\): a \(min, max\) range must satisfy -0\.5"),
    (dict(brightness="bright"), r"^brightness='bright': must be a number or a \(min, max\) pair"),
    (dict(p=1.5), r"^p=1\.5: a probability must be in \[0, 1\]"),
])
def test_color_jitter_rejects_impossible_ranges(kwargs, message):
    with pytest.raises(ValueError, match=message):
        ColorJitter(**kwargs)


def test_color_jitter_repr_shows_the_parameters():
    assert repr(ColorJitter(0.4, (0.5, 1.5), 0, 0.1, p=0.5)) == \
        "ColorJitter(brightness=0.4, contrast=(0.5, 1.5), saturation=0, hue=0.1, p=0.5)"


# ================================================================ PCALighting

DIRECTION = torch.tensor([0.6, 0.7, 0.3]) / torch.tensor([0.6, 0.7, 0.3]).norm()


def dominant_direction_images(n: int = 400, size: int = 8, seed: int = 0) -> torch.Tensor:
    """RGB pixels 0.5 + t * DIRECTION (t ~ N(0, 0.12^2)) plus little isotropic noise: the covariance's top
    eigenvector is DIRECTION, with eigenvalue about 0.0144."""
    gen = torch.Generator().manual_seed(seed)
    t = torch.randn(n, 1, size, size, generator=gen) * 0.12
    noise = torch.randn(n, 3, size, size, generator=gen) * 0.01
    pixels = 0.5 + t * DIRECTION.view(1, 3, 1, 1) + noise
    return (pixels.clamp(0, 1) * 255).round().to(torch.uint8)


def test_pca_lighting_fit_recovers_the_dominant_colour_direction():
    op = PCALighting().fit(dominant_direction_images())
    assert op.eigvals.shape == (3,) and op.eigvecs.shape == (3, 3)
    assert (op.eigvals[:-1] >= op.eigvals[1:]).all()  # largest first
    assert abs(float(op.eigvecs[:, 0] @ DIRECTION)) > 0.999  # up to sign
    assert op.eigvals[0] == pytest.approx(0.12 ** 2, rel=0.1)
    assert op.eigvals[1] < 0.01 * op.eigvals[0]
    torch.testing.assert_close(op.eigvecs.T @ op.eigvecs, torch.eye(3), atol=1e-5, rtol=0)


def test_pca_lighting_fit_subsamples_deterministically():
    images = dominant_direction_images(n=200)
    full = PCALighting().fit(images)
    a, b = PCALighting(), PCALighting()
    a.max_pixels = b.max_pixels = 3000  # fewer than the 12800 pixels
    a.fit(images), b.fit(images)
    assert torch.equal(a.eigvals, b.eigvals) and torch.equal(a.eigvecs, b.eigvecs)
    assert abs(float(a.eigvecs[:, 0] @ full.eigvecs[:, 0])) > 0.99


def test_pca_lighting_shifts_whole_images_along_the_eigenvectors():
    op = PCALighting(alphastd=2.0).fit(dominant_direction_images())
    gen = torch.Generator().manual_seed(1)
    images = torch.randint(90, 160, (64, 3, 5, 5), generator=gen, dtype=torch.uint8)  # far from 0 and 255
    out = op(images, torch.Generator().manual_seed(2))
    assert out.shape == images.shape and out.dtype == torch.uint8
    shift = out.int() - images.int()  # [N, 3, H, W]
    per_sample = shift[:, :, :1, :1]
    assert (shift == per_sample).all()  # the same colour added to every pixel of an image
    per_sample = per_sample.flatten(1).float()
    assert per_sample.unique(dim=0).shape[0] > 15  # its own shift per sample (rounded to whole levels)
    # the noise is alpha_i lambda_i v_i: with one dominant eigenvalue, shifts lie along DIRECTION
    big = per_sample[per_sample.norm(dim=1) > 8]
    assert len(big) > 10
    cosine = (big @ DIRECTION).abs() / big.norm(dim=1)
    assert cosine.min() > 0.97


def test_pca_lighting_p0_and_alphastd0_are_identity():
    images = dominant_direction_images(n=16)
    gen = torch.Generator().manual_seed(0)
    assert torch.equal(PCALighting(p=0.0).fit(images)(images, gen), images)
    assert torch.equal(PCALighting(alphastd=0.0).fit(images)(images, gen), images)


def test_pca_lighting_leaves_grayscale_images_unchanged():
    gray = dominant_direction_images(n=16)[:, :1]
    op = PCALighting(alphastd=1.0).fit(gray)
    assert torch.equal(op(gray, torch.Generator().manual_seed(0)), gray)


def test_pca_lighting_before_fit_raises():
    with pytest.raises(ValueError, match=r"^PCALighting needs fit\(train_images\) first$"):
        PCALighting()(dominant_direction_images(n=2), torch.Generator())


def test_pca_lighting_is_fitted_by_the_pipeline_and_rejects_bad_parameters():
    pipeline = Pipeline({"light": PCALighting()}).fit(dominant_direction_images(n=32))
    pipeline.check((3, 8, 8))
    assert pipeline.ops["light"].eigvals is not None
    with pytest.raises(ValueError, match=r"^alphastd=-1: "):
        PCALighting(alphastd=-1)
    with pytest.raises(ValueError, match=r"^p=2: a probability must be in \[0, 1\]"):
        PCALighting(p=2)
    assert repr(PCALighting(0.2, p=0.5)) == "PCALighting(alphastd=0.2, p=0.5)"
