"""Geometric and occlusion augmentation ops: per-sample draws, parameter semantics, and agreement with
torchvision's functional ops given the same parameters (torchvision draws one parameter per call)."""

from __future__ import annotations

import math

import pytest
import torch
from torchvision.transforms import InterpolationMode
from torchvision.transforms.v2 import functional as TF

from trainlab.data.augment import (Cutout, ElasticDistortion, RandomAffine, RandomErasing, RandomResizedCrop,
                                   VerticalFlip)
from trainlab.data.pipeline import Pipeline
from trainlab.errors import ConfigError


def seeded(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def noise_batch(n: int, channels: int = 3, h: int = 16, w: int = 16, seed: int = 5) -> torch.Tensor:
    """n distinct noise images with values in [1, 255] (so a zeroed pixel is always visible)."""
    return torch.randint(1, 256, (n, channels, h, w), generator=seeded(seed), dtype=torch.uint8)


def same_image_batch(n: int, channels: int = 3, h: int = 16, w: int = 16) -> torch.Tensor:
    """n copies of one noise image (no symmetry, so any flip/warp/hole shows)."""
    return noise_batch(1, channels, h, w).expand(n, channels, h, w).contiguous()


def smooth_batch(n: int, h: int = 16, w: int = 16) -> torch.Tensor:
    """Smooth images (a diagonal ramp with a bright blob): bilinear resampling of them is well behaved."""
    ys, xs = torch.meshgrid(torch.arange(h).float(), torch.arange(w).float(), indexing="ij")
    image = 40 + 8 * xs + 4 * ys + 60 * torch.exp(-((xs - w / 3) ** 2 + (ys - h / 3) ** 2) / 8)
    return image.round().clamp(0, 255).to(torch.uint8).expand(n, 1, h, w).contiguous()


# one instance of each op that changes (almost) every sample it is applied to, and with p=0
ACTIVE = {
    "vflip": lambda p=0.5: VerticalFlip(p=p),
    "resized_crop": lambda p=1.0: RandomResizedCrop(p=p),
    "affine": lambda p=1.0: RandomAffine(degrees=30, translate=(0.1, 0.1), scale=(0.8, 1.2), shear=(10, 10), p=p),
    "elastic": lambda p=1.0: ElasticDistortion(alpha=34, sigma=4, p=p),
    "cutout": lambda p=1.0: Cutout(size=6, holes=2, p=p),
    "erasing": lambda p=1.0: RandomErasing(p=p),
    "erasing_random": lambda p=1.0: RandomErasing(p=p, value="random"),
}


# ================================================================ every op


@pytest.mark.parametrize("name", ACTIVE)
def test_p0_is_identity(name):
    images = noise_batch(32)
    assert torch.equal(ACTIVE[name](p=0.0)(images, seeded()), images)


@pytest.mark.parametrize("name", ACTIVE)
@pytest.mark.parametrize("shape", [(16, 1, 28, 28), (8, 3, 12, 20), (8, 3, 20, 12)])
def test_shape_and_dtype_are_kept(name, shape):
    images = noise_batch(*shape)
    out = ACTIVE[name]()(images, seeded())
    assert out.shape == images.shape and out.dtype == torch.uint8 and out.device == images.device


@pytest.mark.parametrize("name", ACTIVE)
def test_each_sample_draws_its_own_parameters(name):
    n = 32
    out = ACTIVE[name]()(same_image_batch(n), seeded(1))
    distinct = {tuple(image.flatten().tolist()) for image in out}
    # a flip has two outcomes (image, mirror); the others have many: most samples differ
    assert len(distinct) == 2 if name == "vflip" else len(distinct) >= n // 2


@pytest.mark.parametrize("name", ACTIVE)
def test_deterministic_for_a_seeded_generator(name):
    images = noise_batch(32)
    op = ACTIVE[name]()
    a, b, c = op(images, seeded(7)), op(images, seeded(7)), op(images, seeded(8))
    assert torch.equal(a, b)
    assert not torch.equal(a, c)


@pytest.mark.parametrize("name", [k for k in ACTIVE if k != "vflip"])
@pytest.mark.parametrize("p", [0.25, 0.75])
def test_each_sample_is_selected_with_probability_p(name, p):
    params = ACTIVE[name](p=p)._draw(torch.zeros(2000, 1, 16, 16, dtype=torch.uint8), seeded(2))
    assert params["apply"].shape == (2000,)
    # 2000 draws: the std of the fraction is ~0.01; RandomErasing also skips a few that do not fit
    assert abs(params["apply"].float().mean().item() - p) < 0.05


def test_unselected_samples_pass_unchanged():
    images = noise_batch(64)
    for op in (RandomResizedCrop(p=0.5), RandomAffine(degrees=45, p=0.5), ElasticDistortion(p=0.5),
               Cutout(size=4, p=0.5), RandomErasing(p=0.5)):
        params = op._draw(images, seeded(3))
        out = op._apply(images, params)
        keep = ~params["apply"]
        assert 0 < keep.sum() < 64
        assert torch.equal(out[keep], images[keep]), op
        changed = (out != images).flatten(1).any(1)
        assert changed[params["apply"]].float().mean() > 0.9, op  # selected ones (nearly) all changed


INVALID = [
    (VerticalFlip, dict(p=1.5), r"p=1\.5: a probability must be in \[0, 1\]"),
    (VerticalFlip, dict(p=-0.1), r"p=-0\.1: a probability must be in \[0, 1\]"),
    (RandomResizedCrop, dict(scale=(0.0, 1.0)), "scale="),
    (RandomResizedCrop, dict(scale=(0.5, 0.2)), "scale="),
    (RandomResizedCrop, dict(scale=(0.5, 1.5)), "scale="),
    (RandomResizedCrop, dict(scale=0.5), "scale="),
    (RandomResizedCrop, dict(ratio=(0.0, 1.0)), "ratio="),
    (RandomResizedCrop, dict(ratio=(2.0, 1.0)), "ratio="),
    (RandomResizedCrop, dict(ratio=("a", "b")), "ratio="),
    (RandomResizedCrop, dict(p=2.0), r"p=2\.0: a probability"),
    (RandomAffine, dict(degrees=-1), "degrees="),
    (RandomAffine, dict(degrees="30"), "degrees="),
    (RandomAffine, dict(translate=(1.5, 0.0)), "translate="),
    (RandomAffine, dict(translate=(0.1,)), "translate="),
    (RandomAffine, dict(scale=(0.0, 1.0)), "scale="),
    (RandomAffine, dict(scale=(1.2, 0.8)), "scale="),
    (RandomAffine, dict(shear=(90.0, 0.0)), "shear="),
    (RandomAffine, dict(shear=(-5.0, 0.0)), "shear="),
    (RandomAffine, dict(fill=300), "fill="),
    (RandomAffine, dict(p=-1), "p=-1: a probability"),
    (ElasticDistortion, dict(alpha=-1.0), "alpha="),
    (ElasticDistortion, dict(sigma=-0.5), "sigma="),
    (ElasticDistortion, dict(alpha="big"), "alpha="),
    (ElasticDistortion, dict(p=1.1), r"p=1\.1: a probability"),
    (Cutout, dict(size=0), "size="),
    (Cutout, dict(size=2.5), "size="),
    (Cutout, dict(holes=0), "holes="),
    (Cutout, dict(fill=-1), "fill="),
    (Cutout, dict(p=3), "p=3: a probability"),
    (RandomErasing, dict(p=2.0), r"p=2\.0: a probability"),
    (RandomErasing, dict(scale=(0.5, 0.1)), "scale="),
    (RandomErasing, dict(scale=(-0.1, 0.2)), "scale="),
    (RandomErasing, dict(scale=(0.2, 1.5)), "scale="),
    (RandomErasing, dict(ratio=(0.0, 3.3)), "ratio="),
    (RandomErasing, dict(ratio=(3.3, 0.3)), "ratio="),
    (RandomErasing, dict(value=300), "value="),
    (RandomErasing, dict(value="noise"), "value="),
]


@pytest.mark.parametrize("cls, kwargs, message", INVALID,
                         ids=[f"{c.__name__}-{next(iter(k))}={next(iter(k.values()))}" for c, k, _ in INVALID])
def test_invalid_parameters_raise_value_error_naming_the_parameter(cls, kwargs, message):
    with pytest.raises(ValueError, match=rf"^{message}"):
        cls(**kwargs)


def test_repr_shows_the_parameters():
    assert repr(VerticalFlip(p=0.3)) == "VerticalFlip(p=0.3)"
    assert repr(RandomResizedCrop(scale=(0.2, 0.9), ratio=(0.5, 2), p=0.7)) == \
        "RandomResizedCrop(scale=(0.2, 0.9), ratio=(0.5, 2.0), p=0.7)"
    assert repr(RandomAffine(degrees=15, translate=(0.1, 0.2), scale=(0.9, 1.1), shear=(5, 0), p=0.5, fill=128)) == \
        "RandomAffine(degrees=15, translate=(0.1, 0.2), scale=(0.9, 1.1), shear=(5.0, 0.0), p=0.5, fill=128)"
    assert repr(ElasticDistortion(alpha=8, sigma=3, p=1.0)) == "ElasticDistortion(alpha=8, sigma=3, p=1.0)"
    assert repr(Cutout(size=4, holes=2, p=0.5, fill=127)) == "Cutout(size=4, holes=2, p=0.5, fill=127)"
    assert repr(RandomErasing(value="random")) == \
        "RandomErasing(p=0.5, scale=(0.02, 0.33), ratio=(0.3, 3.3), value='random')"


def test_all_ops_pass_the_pipeline_start_check_and_config_lists_work():
    # Hydra hands sequences over as lists (instantiate with _convert_="all")
    ops = {"vflip": VerticalFlip(), "crop": RandomResizedCrop(scale=[0.5, 1.0], ratio=[0.75, 1.333]),
           "affine": RandomAffine(degrees=10, translate=[0.1, 0.1], scale=[0.9, 1.1], shear=[5, 5]),
           "elastic": ElasticDistortion(), "cutout": Cutout(size=8), "erase": RandomErasing(value="random")}
    for shape in ((1, 28, 28), (3, 8, 12)):
        Pipeline(ops).check(shape)


def test_a_cutout_larger_than_the_image_fails_at_start_naming_the_op():
    with pytest.raises(ValueError, match=r"^size=20: a hole must fit in the 16x16 image"):
        Cutout(size=20)(noise_batch(2), seeded())
    with pytest.raises(ConfigError, match=r"^augmentation\.ops\.holes: size=20"):
        Pipeline({"holes": Cutout(size=20)}).check((1, 16, 16))


# ================================================================ VerticalFlip


def test_vertical_flip_outputs_the_image_or_its_vertical_mirror():
    images = noise_batch(64)
    out = VerticalFlip(p=0.5)(images, seeded(0))
    mirrored = []
    for i in range(64):
        same, mirror = torch.equal(out[i], images[i]), torch.equal(out[i], images[i].flip(-2))
        assert same != mirror, i  # exactly one of them, all channels together
        mirrored.append(mirror)
    assert 10 < sum(mirrored) < 54
    assert torch.equal(VerticalFlip(p=1.0)(images, seeded()), images.flip(-2))


# ================================================================ RandomResizedCrop


def boxes_for(op: RandomResizedCrop | RandomErasing, n: int, h: int, w: int, seed: int = 0) -> torch.Tensor:
    return op._draw(torch.zeros(n, 1, h, w, dtype=torch.uint8), seeded(seed))["box"]


def test_resized_crop_boxes_respect_scale_and_ratio_bounds():
    h = w = 32
    scale, ratio = (0.25, 0.5), (2.0, 3.0)  # wide boxes: width / height in [2, 3]
    top, left, bh, bw = boxes_for(RandomResizedCrop(scale=scale, ratio=ratio), 4000, h, w).double().unbind(1)
    assert (top >= 0).all() and (left >= 0).all() and (top + bh <= h).all() and (left + bw <= w).all()
    assert (bh >= 1).all() and (bw >= 1).all()
    # sides are sqrt(area * r) and sqrt(area / r) rounded: within half a pixel of a box with both in range
    eps = 1e-9
    assert ((bw - 0.5) * (bh - 0.5) <= scale[1] * h * w + eps).all()
    assert ((bw + 0.5) * (bh + 0.5) >= scale[0] * h * w - eps).all()
    assert ((bw - 0.5) / (bh + 0.5) <= ratio[1] + eps).all()
    assert ((bw + 0.5) / (bh - 0.5) >= ratio[0] - eps).all()
    assert (bw > bh).all()  # ratio is width / height, as torchvision's


def test_resized_crop_boxes_cover_the_ranges_and_positions():
    h = w = 32
    top, left, bh, bw = boxes_for(RandomResizedCrop(), 4000, h, w, seed=1).double().unbind(1)
    area = bh * bw / (h * w)
    assert area.min() < 0.1 and area.max() > 0.9  # uniform over [0.08, 1]
    log_ratio = torch.log(bw / bh)
    assert abs(log_ratio.median()) < 0.05  # log-uniform over [3/4, 4/3]: symmetric about 1
    assert log_ratio.min() < math.log(0.8) and log_ratio.max() > math.log(1.25)
    small = bh < h
    assert (top[small] == 0).any() and (top[small] + bh[small] == h).any()  # extreme positions reachable
    assert len(set(zip(top.tolist(), left.tolist()))) > 100


def test_resized_crop_falls_back_to_the_centre_crop_when_no_box_fits():
    # on a square image a full-area box with width / height in [2, 3] never fits
    boxes = boxes_for(RandomResizedCrop(scale=(1.0, 1.0), ratio=(2.0, 3.0)), 16, 16, 16)
    assert boxes.tolist() == [[4, 0, 8, 16]] * 16  # torchvision: w = 16, h = round(16 / 2), centred
    boxes = boxes_for(RandomResizedCrop(scale=(1.0, 1.0), ratio=(0.25, 0.5)), 16, 12, 24)
    assert boxes.tolist() == [[0, 9, 12, 6]] * 16  # w = round(12 * 0.5), centred


def test_resized_crop_of_the_whole_image_is_identity():
    images = noise_batch(16)
    assert torch.equal(RandomResizedCrop(scale=(1.0, 1.0), ratio=(1.0, 1.0))(images, seeded()), images)


@pytest.mark.parametrize("channels, h, w", [(3, 16, 16), (1, 12, 20)])
def test_resized_crop_matches_torchvision_resized_crop_for_the_same_box(channels, h, w):
    images = noise_batch(48, channels, h, w)
    op = RandomResizedCrop(scale=(0.08, 1.0))
    params = op._draw(images, seeded(4))
    out = op._apply(images, params)
    for i in range(48):
        top, left, bh, bw = params["box"][i].tolist()
        reference = TF.resized_crop(images[i], top, left, bh, bw, [h, w], interpolation=InterpolationMode.BILINEAR,
                                    antialias=True)
        # the box is never larger than the image, so antialiasing never applies; off by one from rounding
        assert (out[i].int() - reference.int()).abs().max() <= 1, (i, params["box"][i])


def interpolation_matrix(length: int, size: int) -> torch.Tensor:
    """[size, length] weights of 1-D bilinear resizing with align_corners=False, clamped at the edges."""
    weights = torch.zeros(size, length, dtype=torch.float64)
    for x in range(size):
        source = min(max((x + 0.5) * length / size - 0.5, 0.0), length - 1)
        low = math.floor(source)
        high, fraction = min(low + 1, length - 1), source - low
        weights[x, low] += 1 - fraction
        weights[x, high] += fraction
    return weights


def test_resized_crop_of_a_given_box_is_separable_bilinear_resizing_of_the_box_alone():
    images = noise_batch(2, 1, 16, 12)
    boxes = torch.tensor([[5, 3, 4, 7], [0, 6, 16, 6]])  # (top, left, height, width)
    out = RandomResizedCrop()._apply(images, {"apply": torch.tensor([True, True]), "box": boxes})
    for i, (top, left, bh, bw) in enumerate(boxes.tolist()):
        crop = images[i, 0, top:top + bh, left:left + bw].double()
        expected = interpolation_matrix(bh, 16) @ crop @ interpolation_matrix(bw, 12).T
        assert (out[i, 0].double() - expected).abs().max() <= 0.5 + 1e-4, i  # only pixels of the box count
    assert torch.equal(out[0, 0, 0, 0], images[0, 0, 5, 3])  # the corner is the box's corner pixel


# ================================================================ RandomAffine


def test_affine_matches_torchvision_affine_for_the_same_parameters():
    images = noise_batch(48, 3, 15, 17)
    op = RandomAffine(degrees=40, translate=(0.2, 0.1), scale=(0.7, 1.3), shear=(15, 10))
    params = op._draw(images, seeded(5))
    out = op._apply(images, params)
    for i in range(48):
        reference = TF.affine(images[i], angle=params["angle"][i].item(), translate=params["translate"][i].tolist(),
                              scale=params["scale"][i].item(), shear=params["shear"][i].tolist(),
                              interpolation=InterpolationMode.BILINEAR)
        assert (out[i].int() - reference.int()).abs().max() <= 1, i


def test_affine_parameters_are_drawn_in_their_ranges():
    h, w = 20, 10
    op = RandomAffine(degrees=30, translate=(0.3, 0.2), scale=(0.5, 2.0), shear=(20, 5))
    params = op._draw(torch.zeros(3000, 1, h, w, dtype=torch.uint8), seeded(6))
    angle, (dx, dy), scale, (sx, sy) = params["angle"], params["translate"].unbind(1), params["scale"], \
        params["shear"].unbind(1)
    assert angle.abs().max() <= 30 and angle.min() < -27 and angle.max() > 27
    assert torch.equal(dx, dx.round()) and torch.equal(dy, dy.round())  # whole pixels, as torchvision
    assert dx.abs().max() <= 0.3 * w and dx.abs().max() == 3 and dy.abs().max() == 4  # 0.3 * 10, 0.2 * 20
    assert scale.min() >= 0.5 and scale.max() <= 2.0 and scale.min() < 0.55 and scale.max() > 1.95
    assert sx.abs().max() <= 20 and sx.abs().max() > 18 and sy.abs().max() <= 5 and sy.abs().max() > 4.5
    assert len(set(angle.tolist())) > 2990  # per sample (float32 draws: a rare exact repeat)


def test_affine_default_parameters_are_identity():
    images = noise_batch(16)
    assert torch.equal(RandomAffine()(images, seeded()), images)


@pytest.mark.parametrize("fill", [0, 255])
def test_affine_pure_translation_shifts_whole_pixels_and_fills(fill):
    images = noise_batch(32, 1, 12, 12)
    op = RandomAffine(translate=(0.25, 0.0), fill=fill)
    params = op._draw(images, seeded(7))
    out = op._apply(images, params)
    shifts = params["translate"][:, 0].long().tolist()
    assert len(set(shifts)) > 3
    for i, dx in enumerate(shifts):
        expected = torch.full_like(images[i], fill)
        if dx >= 0:
            expected[..., dx:] = images[i][..., :12 - dx]
        else:
            expected[..., :dx] = images[i][..., -dx:]
        assert torch.equal(out[i], expected), (i, dx)  # sharp: no bilinear blur for whole-pixel shifts


# ================================================================ ElasticDistortion


def test_elastic_alpha_zero_is_identity():
    images = noise_batch(16)
    assert torch.equal(ElasticDistortion(alpha=0.0, p=1.0)(images, seeded()), images)


def test_elastic_larger_alpha_moves_more_pixels():
    images = noise_batch(32, 1)
    changed = []
    for alpha in (0.5, 4.0, 34.0):
        out = ElasticDistortion(alpha=alpha, sigma=4.0, p=1.0)(images, seeded(8))  # same field, scaled
        changed.append((out.int() - images.int()).abs().float().mean().item())
    assert 0 < changed[0] < changed[1] < changed[2]


def test_elastic_displacement_is_smoothed_uniform_noise_scaled_by_alpha():
    alpha, sigma, h, w = 34.0, 4.0, 16, 16
    op = ElasticDistortion(alpha=alpha, sigma=sigma, p=1.0)
    field = op._draw(torch.zeros(400, 1, h, w, dtype=torch.uint8), seeded(9))["displacement"]
    assert field.shape == (400, 2, h, w)
    # Gaussian-weighted sum of i.i.d. U[-1, 1] (variance 1/3): std = alpha * sqrt(1/3) * sum(k_i^2)
    x = torch.arange(-16, 17, dtype=torch.float64)  # radius 4 sigma
    kernel = torch.exp(-0.5 * (x / sigma) ** 2)
    kernel /= kernel.sum()
    expected = alpha * math.sqrt(1 / 3) * (kernel ** 2).sum().item()
    assert abs(field.std().item() / expected - 1) < 0.1
    assert abs(field.mean().item()) < 0.1 * expected
    # as strong at the border as in the middle: no padding damps the field there
    border = torch.cat([field[..., 0, :].flatten(), field[..., -1, :].flatten()])
    centre = field[..., 6:10, 6:10].flatten()
    assert abs(border.std().item() / centre.std().item() - 1) < 0.15
    # smooth: neighbours nearly equal; each sample has its own field
    neighbours = torch.corrcoef(torch.stack([field[..., :-1].flatten(), field[..., 1:].flatten()]))[0, 1]
    assert neighbours > 0.9
    assert (field[0] - field[1]).abs().max() > 0.5


def test_elastic_without_smoothing_is_uncorrelated_noise_of_alpha_pixels():
    field = ElasticDistortion(alpha=2.0, sigma=0.0, p=1.0)._draw(torch.zeros(50, 1, 16, 16, dtype=torch.uint8),
                                                                  seeded(10))["displacement"]
    assert field.abs().max() <= 2.0 and field.abs().max() > 1.9
    neighbours = torch.corrcoef(torch.stack([field[..., :-1].flatten(), field[..., 1:].flatten()]))[0, 1]
    assert abs(neighbours) < 0.1


def test_elastic_output_pixel_reads_the_input_at_its_displaced_position():
    images = noise_batch(2, 3, 10, 12)
    displacement = torch.zeros(2, 2, 10, 12)
    displacement[0, 0] = 2.0  # sample 0 reads 2 pixels to the right: content moves left
    displacement[1, 1] = -3.0  # sample 1 reads 3 pixels up: content moves down
    out = ElasticDistortion._apply(images, {"apply": torch.tensor([True, True]), "displacement": displacement})
    assert torch.equal(out[0, ..., :10], images[0, ..., 2:]) and (out[0, ..., 10:] == 0).all()
    assert torch.equal(out[1, :, 3:], images[1, :, :7]) and (out[1, :, :3] == 0).all()
    half = torch.full((1, 2, 10, 12), 0.5)  # half a pixel right and down: the mean of 4 neighbours
    smooth = smooth_batch(1, 10, 12)
    out = ElasticDistortion._apply(smooth, {"apply": torch.tensor([True]), "displacement": half})
    s = smooth[0, 0].double()
    expected = (s[:-1, :-1] + s[1:, :-1] + s[:-1, 1:] + s[1:, 1:]) / 4
    assert (out[0, 0, :-1, :-1].double() - expected).abs().max() <= 0.5 + 1e-6


# ================================================================ Cutout


@pytest.mark.parametrize("size, centre, rows, cols", [
    (4, (8, 8), (6, 10), (6, 10)),  # even side: rows 8 - 2 .. 8 + 1
    (3, (8, 5), (7, 10), (4, 7)),  # odd side: centred exactly
    (4, (0, 0), (0, 2), (0, 2)),  # over the corner: clipped to 2 x 2
    (5, (15, 7), (13, 16), (5, 10)),  # over the bottom edge
])
def test_cutout_hole_of_a_given_centre(size, centre, rows, cols):
    images = noise_batch(1, 3)
    out = Cutout(size=size)._apply(images, {"apply": torch.tensor([True]), "centres": torch.tensor([[centre]])})
    expected = images.clone()
    expected[..., rows[0]:rows[1], cols[0]:cols[1]] = 0
    assert torch.equal(out, expected)
    assert (out == 0).sum() == 3 * (rows[1] - rows[0]) * (cols[1] - cols[0])


def test_cutout_zeroes_size_squared_pixels_for_interior_centres_and_fewer_at_the_border():
    size, h, w = 5, 16, 16
    images = noise_batch(256, 1, h, w)
    op = Cutout(size=size)
    params = op._draw(images, seeded(11))
    out = op._apply(images, params)
    zeros = (out == 0).flatten(1).sum(1)
    cy, cx = params["centres"][:, 0].unbind(1)
    interior = (cy >= size // 2) & (cy + size - size // 2 <= h) & (cx >= size // 2) & (cx + size - size // 2 <= w)
    assert interior.any() and (~interior).any()
    assert (zeros[interior] == size * size).all()
    assert (zeros[~interior] < size * size).all() and (zeros >= 1).all()
    assert (cy.min(), cy.max(), cx.min(), cx.max()) == (0, h - 1, 0, w - 1)  # centres anywhere on the image
    kept = out != 0
    assert torch.equal(out[kept], images[kept])  # only the hole changes


def test_cutout_several_holes_and_fill_on_all_channels():
    images = noise_batch(64, 3).clamp(max=254)
    out = Cutout(size=4, holes=3, fill=255)(images, seeded(12))
    filled = out == 255
    assert torch.equal(filled[:, 0], filled[:, 1]) and torch.equal(filled[:, 0], filled[:, 2])  # same hole on all
    count = filled[:, 0].flatten(1).sum(1)
    assert (count <= 3 * 16).all() and (count > 16).any() and (count >= 1).all()


# ================================================================ RandomErasing


def test_erasing_boxes_respect_scale_and_ratio_and_lie_inside():
    h, w = 24, 32
    scale, ratio = (0.05, 0.3), (0.5, 2.0)
    op = RandomErasing(p=1.0, scale=scale, ratio=ratio)
    params = op._draw(torch.zeros(3000, 1, h, w, dtype=torch.uint8), seeded(13))
    found = params["apply"]
    assert found.float().mean() > 0.99
    top, left, bh, bw = params["box"][found].double().unbind(1)
    assert (top >= 0).all() and (left >= 0).all() and (top + bh <= h).all() and (left + bw <= w).all()
    assert (bh < h).all() and (bw < w).all()  # strictly smaller, as torchvision
    eps = 1e-9
    # h = sqrt(area * r), w = sqrt(area / r) rounded (ratio is height / width, as in the paper)
    assert ((bw - 0.5) * (bh - 0.5) <= scale[1] * h * w + eps).all()
    assert ((bw + 0.5) * (bh + 0.5) >= scale[0] * h * w - eps).all()
    assert ((bh - 0.5) / (bw + 0.5) <= ratio[1] + eps).all() and ((bh + 0.5) / (bw - 0.5) >= ratio[0] - eps).all()
    fraction = bh * bw / (h * w)
    assert fraction.min() < 0.06 and fraction.max() > 0.27


def test_erasing_matches_torchvision_erase_for_the_same_box():
    images = noise_batch(64, 3)
    op = RandomErasing(p=0.8, value=17)
    params = op._draw(images, seeded(14))
    out = op._apply(images, params)
    assert 0 < (~params["apply"]).sum() < 64
    for i in range(64):
        if params["apply"][i]:
            top, left, bh, bw = params["box"][i].tolist()
            expected = TF.erase(images[i], top, left, bh, bw, torch.tensor(17, dtype=torch.uint8))
            assert bh * bw > 0
        else:
            expected = images[i]
        assert torch.equal(out[i], expected), i


def test_erasing_skips_the_sample_when_no_box_fits():
    # a full-size square never fits strictly inside the image: every try fails, the image is kept
    images = noise_batch(32)
    op = RandomErasing(p=1.0, scale=(0.99, 1.0), ratio=(1.0, 1.0))
    assert not op._draw(images, seeded())["apply"].any()
    assert torch.equal(op(images, seeded()), images)


def test_erasing_random_value_is_per_pixel_uniform_noise():
    images = torch.zeros(64, 3, 16, 16, dtype=torch.uint8)
    op = RandomErasing(p=1.0, scale=(0.2, 0.3), value="random")
    params = op._draw(images, seeded(15))
    out = op._apply(images, params)
    erased = out[out != 0].float()
    assert erased.numel() > 0.9 * (3 * 0.2 * 256 * 64)  # zero only with probability 1/256
    assert abs(erased.mean().item() - 128) < 3 and erased.min() <= 2 and erased.max() == 255
    first = out[0][:, out[0].amax(0) > 0]
    assert len(first.unique()) > 50  # per pixel, not one colour per box
