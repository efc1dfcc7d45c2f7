"""RandAugment / TrivialAugmentWide / AutoAugment: torchvision's ops and tables, drawn per sample."""

from __future__ import annotations

import math

import pytest
import torch
from torchvision.transforms import v2 as T
from torchvision.transforms.v2 import InterpolationMode
from torchvision.transforms.v2 import functional as TF

from trainlab.data.pipeline import Pipeline
from trainlab.data.policies import (AUTOAUGMENT_BINS, AUTOAUGMENT_POLICIES, AUTOAUGMENT_SPACE, RANDAUGMENT_SPACE,
                                    TRIVIALAUGMENT_SPACE, AutoAugment, RandAugment, TrivialAugmentWide, apply_op,
                                    apply_per_sample, magnitude_table)

NEAREST = InterpolationMode.NEAREST
GEOMETRIC = ("ShearX", "ShearY", "TranslateX", "TranslateY", "Rotate")
ALL_OPS = list(AUTOAUGMENT_SPACE)  # RandAugment's 14 plus Invert


def random_images(n: int, channels: int, h: int = 16, w: int = 16, seed: int = 0) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, channels, h, w), generator=gen, dtype=torch.uint8)


def torchvision_op(image: torch.Tensor, name: str, m: float, fill: float) -> torch.Tensor:
    """What torchvision.transforms.v2's policies do for (op, signed magnitude m): their
    _apply_image_or_video_transform, written out with the public functional API."""
    if name == "Identity":
        return image
    if name in ("ShearX", "ShearY"):
        degrees = math.degrees(math.atan(m))
        return TF.affine(image, angle=0.0, translate=[0, 0], scale=1.0, interpolation=NEAREST, fill=fill,
                         shear=[degrees, 0.0] if name == "ShearX" else [0.0, degrees], center=[0, 0])
    if name in ("TranslateX", "TranslateY"):
        return TF.affine(image, angle=0.0, translate=[int(m), 0] if name == "TranslateX" else [0, int(m)],
                         scale=1.0, shear=[0.0, 0.0], interpolation=NEAREST, fill=fill)
    if name == "Rotate":
        return TF.rotate(image, angle=m, interpolation=NEAREST, fill=fill)
    blends = {"Brightness": TF.adjust_brightness, "Color": TF.adjust_saturation,
              "Contrast": TF.adjust_contrast, "Sharpness": TF.adjust_sharpness}
    if name in blends:
        return blends[name](image, 1.0 + m)
    if name == "Posterize":
        return TF.posterize(image, int(m))
    if name == "Solarize":
        return TF.solarize(image, 255.0 * m)
    return {"AutoContrast": TF.autocontrast, "Equalize": TF.equalize, "Invert": TF.invert}[name](image)


def halfway_pixels(name: str, m: float, h: int, w: int) -> torch.Tensor:
    """[H, W] True where the output pixel's source point lies halfway between two pixel centres (in
    float64). Nearest-neighbour rounding there is a coin toss that float32 rounding decides, so two
    correct implementations may pick different neighbours; everywhere else they must agree."""
    y, x = torch.meshgrid(torch.arange(h, dtype=torch.float64), torch.arange(w, dtype=torch.float64), indexing="ij")
    if name == "ShearX":  # sheared about the top-left corner (-0.5, -0.5): x_in = x + m (y + 1/2)
        sx, sy = x + m * (y + 0.5), y
    elif name == "ShearY":
        sx, sy = x, y + m * (x + 0.5)
    elif name == "Rotate":  # counter-clockwise on screen about the centre
        cx, cy, a = (w - 1) / 2, (h - 1) / 2, math.radians(m)
        sx = cx + math.cos(a) * (x - cx) - math.sin(a) * (y - cy)
        sy = cy + math.sin(a) * (x - cx) + math.cos(a) * (y - cy)
    else:
        return torch.zeros(h, w, dtype=torch.bool)

    def halfway(v):
        return ((v - v.floor()) - 0.5).abs() < 1e-4

    return halfway(sx) | halfway(sy)


def all_table_magnitudes(name: str, h: int, w: int) -> list[float]:
    """Every signed magnitude the three policies can give `name` on an h x w image."""
    values = set()
    for space, bins in ((RANDAUGMENT_SPACE, 31), (TRIVIALAUGMENT_SPACE, 31), (AUTOAUGMENT_SPACE, AUTOAUGMENT_BINS)):
        if name not in space:
            continue
        table, signed = magnitude_table(space, bins, h, w)
        k = list(space).index(name)
        for m in table[k].tolist():
            values.update({m, -m} if signed[k] else {m})
    return sorted(values)


# ================================================================ each op equals torchvision's


@pytest.mark.parametrize("name, fill", [(name, 0) for name in ALL_OPS] + [(name, 200) for name in GEOMETRIC])
@pytest.mark.parametrize("channels, h, w", [(3, 16, 16), (1, 17, 23)])
def test_each_op_with_per_sample_magnitudes_matches_torchvision(name, fill, channels, h, w):
    magnitudes = all_table_magnitudes(name, h, w)
    images = random_images(len(magnitudes), channels, h, w, seed=len(magnitudes))
    out = apply_op(images, name, torch.tensor(magnitudes), fill)  # one call, a magnitude per sample
    assert out.shape == images.shape and out.dtype == torch.uint8
    differing = 0
    for image, result, m in zip(images, out, magnitudes):
        expected = torchvision_op(image, name, m, fill)
        differ = (result != expected).any(dim=0)
        if name in GEOMETRIC:
            halfway = halfway_pixels(name, m, h, w)
            assert not (differ & ~halfway).any(), (name, m)
            assert halfway.float().mean() < 0.25  # the comparison covers most pixels
            differing += int(differ.sum())
        else:
            assert torch.equal(result, expected), (name, m)  # colour ops are bit-identical
    assert differing <= 0.01 * out[:, 0].numel()


def test_geometric_ops_bring_in_the_fill_value():
    images = torch.full((2, 3, 8, 8), 10, dtype=torch.uint8)
    out = apply_op(images, "TranslateX", torch.tensor([3.0, -2.7]), fill=77)  # -2.7 truncates to -2
    assert (out[0, ..., :3] == 77).all() and (out[0, ..., 3:] == 10).all()
    assert (out[1, ..., -2:] == 77).all() and (out[1, ..., :-2] == 10).all()


def test_apply_per_sample_gives_each_image_its_own_op():
    images = random_images(12, 3)
    names = ["Identity", "Invert", "Rotate", "Posterize", "Equalize"]
    op_index = torch.tensor([1, 2, 0, 3, 1, 4, 2, 3, 0, 4, 1, 2])
    magnitude = torch.tensor([0.0, 30.0, 0.0, 4.0, 0.0, 0.0, -30.0, 2.0, 0.0, 0.0, 0.0, 15.0])
    out = apply_per_sample(images, names, op_index, magnitude)
    for i in range(12):
        expected = apply_op(images[i:i + 1], names[op_index[i]], magnitude[i:i + 1])
        assert torch.equal(out[i:i + 1], expected), i
    assert torch.equal(out[[2, 8]], images[[2, 8]])


# ================================================================ tables and signs


@pytest.mark.parametrize("ours, theirs, bins", [
    (RANDAUGMENT_SPACE, T.RandAugment, 31),
    (TRIVIALAUGMENT_SPACE, T.TrivialAugmentWide, 31),
    (AUTOAUGMENT_SPACE, T.AutoAugment, AUTOAUGMENT_BINS),
])
@pytest.mark.parametrize("h, w", [(32, 32), (28, 20)])
def test_magnitude_tables_are_torchvisions(ours, theirs, bins, h, w):
    space = theirs._AUGMENTATION_SPACE  # private in torchvision, but it is the definition being copied
    names = [name for name in ours if name in space]
    assert set(space) == set(names)  # our AutoAugment space only adds "Identity" (a step that did not fire)
    table, signed = magnitude_table(ours, bins, h, w)
    for name in names:
        k = list(ours).index(name)
        fn, their_signed = space[name]
        assert bool(signed[k]) == their_signed, name
        expected = fn(bins, h, w)
        if expected is None:
            assert (table[k] == 0).all(), name
        else:
            assert torch.equal(table[k], expected.to(torch.float32)), name


def test_trivial_augment_draws_op_bin_and_sign_per_sample():
    op = TrivialAugmentWide()
    n = 6000
    (op_index,), (magnitude,) = op.sample(n, (32, 32), torch.Generator().manual_seed(0), torch.device("cpu"))
    table, signed = magnitude_table(TRIVIALAUGMENT_SPACE, 31, 32, 32)
    counts = torch.bincount(op_index, minlength=14)
    assert counts.min() > n / 14 * 0.8  # every op, uniformly
    for k, name in enumerate(TRIVIALAUGMENT_SPACE):
        mags = magnitude[op_index == k]
        row = table[k]
        # every magnitude is a table entry (up to sign)
        assert torch.isin(mags.abs(), row).all(), name
        if signed[k]:
            negative = (mags < 0).float().mean()
            assert 0.35 < negative < 0.65, name
        else:
            assert (mags >= 0).all(), name
        if name == "Rotate":
            assert torch.unique(mags.abs()).numel() == 31  # the bin is drawn per sample, over all 31


def test_rand_augment_uses_the_fixed_magnitude_bin_with_per_sample_signs():
    op = RandAugment(num_ops=3, magnitude=7, num_magnitude_bins=11)
    ops, mags = op.sample(3000, (20, 24), torch.Generator().manual_seed(0), torch.device("cpu"))
    assert len(ops) == 3 and ops[0].shape == (3000,)
    table, signed = magnitude_table(RANDAUGMENT_SPACE, 11, 20, 24)
    for op_index, magnitude in zip(ops, mags):
        assert torch.equal(magnitude.abs(), table[op_index, 7])
        assert ((magnitude < 0) <= signed[op_index]).all()  # only signed ops are ever negative
        assert 0.35 < (magnitude < 0)[signed[op_index]].float().mean() < 0.65
    assert not torch.equal(ops[0], ops[1])  # each round draws again
    assert table[list(RANDAUGMENT_SPACE).index("TranslateX"), 10] == pytest.approx(150 / 331 * 24)
    assert table[list(RANDAUGMENT_SPACE).index("TranslateY"), 10] == pytest.approx(150 / 331 * 20)


@pytest.mark.parametrize("policy", ["imagenet", "cifar10", "svhn"])
def test_auto_augment_draws_sub_policies_per_sample(policy):
    op = AutoAugment(policy)
    steps = AUTOAUGMENT_POLICIES[policy]
    assert len(steps) == 25 and all(len(sub) == 2 for sub in steps)
    n = 6000
    ops, mags = op.sample(n, (32, 32), torch.Generator().manual_seed(0), torch.device("cpu"))
    names = list(AUTOAUGMENT_SPACE)
    table, signed = magnitude_table(AUTOAUGMENT_SPACE, AUTOAUGMENT_BINS, 32, 32)
    # each sample's pair of steps is some sub-policy's, with steps that did not fire as Identity
    allowed = set()
    for (op0, _, bin0), (op1, _, bin1) in steps:
        for a in (op0, "Identity"):
            for b in (op1, "Identity"):
                allowed.add((a, b))
    drawn = {(names[a], names[b]) for a, b in zip(ops[0].tolist(), ops[1].tolist())}
    assert drawn <= allowed
    assert len(drawn) > 10  # not one sub-policy for the batch
    # steps fire with their probability: the expected share of skipped first steps
    skipped = sum(1 - sub[0][1] for sub in steps) / 25
    identity = sum(1 for sub in steps if sub[0][0] == "Identity") / 25
    assert (ops[0] == 0).float().mean() == pytest.approx(skipped + identity, abs=0.03)
    for op_index, magnitude in zip(ops, mags):
        assert torch.isin(magnitude.abs(), table[op_index]).all()
        assert ((magnitude < 0) <= signed[op_index]).all()


def test_auto_augment_step_magnitudes_come_from_the_10_bin_table():
    # ImageNet's second steps include Rotate at bins 9 and 8 (30 and 26.7 degrees, signed); its first
    # steps include Posterize at bins 8, 7 and 5 (8 - round(bin / 2.25) = 4, 5 and 6 bits)
    op = AutoAugment("imagenet")
    ops, mags = op.sample(4000, (32, 32), torch.Generator().manual_seed(1), torch.device("cpu"))
    names = list(AUTOAUGMENT_SPACE)
    rotate = mags[1][ops[1] == names.index("Rotate")]
    torch.testing.assert_close(rotate.abs().unique(), torch.tensor([30.0 * 8 / 9, 30.0]))
    assert (rotate < 0).any() and (rotate > 0).any()
    posterize = mags[0][ops[0] == names.index("Posterize")]
    assert posterize.unique().tolist() == [4.0, 5.0, 6.0]


def test_unknown_auto_augment_policy_raises():
    with pytest.raises(ValueError, match=r"^policy='mnist': must be one of imagenet, cifar10, svhn"):
        AutoAugment("mnist")
    assert AutoAugment(T.AutoAugmentPolicy.SVHN).policy == "svhn"  # torchvision's enum works too


# ================================================================ the ops as augmentation ops

POLICIES = [RandAugment(), RandAugment(num_ops=1, magnitude=30), TrivialAugmentWide(), AutoAugment("imagenet"),
            AutoAugment("cifar10"), AutoAugment("svhn", fill=128)]


@pytest.mark.parametrize("op", POLICIES, ids=repr)
@pytest.mark.parametrize("channels", [1, 3])
def test_policies_keep_shape_and_dtype_and_are_seeded(op, channels):
    images = random_images(32, channels, 20, 18)
    a = op(images, torch.Generator().manual_seed(0))
    b = op(images, torch.Generator().manual_seed(0))
    c = op(images, torch.Generator().manual_seed(1))
    assert a.shape == images.shape and a.dtype == torch.uint8
    assert torch.equal(a, b) and not torch.equal(a, c)
    Pipeline({"policy": op}).check((channels, 20, 18))


@pytest.mark.parametrize("op", [RandAugment(num_ops=1), TrivialAugmentWide(), AutoAugment("cifar10")], ids=repr)
def test_identical_images_get_different_ops(op):
    images = random_images(1, 3).expand(64, 3, 16, 16).contiguous()
    out = op(images, torch.Generator().manual_seed(0))
    distinct = {tuple(image.flatten().tolist()) for image in out}
    assert len(distinct) >= 6  # torchvision's transforms would give one result for the whole batch


def test_rand_augment_with_no_ops_is_identity():
    images = random_images(8, 3)
    assert torch.equal(RandAugment(num_ops=0)(images, torch.Generator()), images)


@pytest.mark.parametrize("make, message", [
    (lambda: RandAugment(num_ops=-1), r"^num_ops=-1: must be an integer >= 0"),
    (lambda: RandAugment(magnitude=31),
     r"^magnitude=31: must be an integer bin in \[0, num_magnitude_bins - 1\] = \[0, 30\]"),
    (lambda: RandAugment(magnitude=5, num_magnitude_bins=5), r"^magnitude=5: .*\[0, 4\]"),
    (lambda: RandAugment(num_magnitude_bins=1, magnitude=0), r"^num_magnitude_bins=1: must be an integer >= 2"),
    (lambda: TrivialAugmentWide(num_magnitude_bins=0), r"^num_magnitude_bins=0: must be an integer >= 2"),
    (lambda: RandAugment(fill=256), r"^fill=256: a uint8 fill value must be in \[0, 255\]"),
    (lambda: AutoAugment(fill=-1), r"^fill=-1: "),
])
def test_impossible_parameters_raise(make, message):
    with pytest.raises(ValueError, match=message):
        make()


def test_reprs_show_the_parameters():
    assert repr(RandAugment()) == "RandAugment(num_ops=2, magnitude=9, num_magnitude_bins=31, fill=0)"
    assert repr(TrivialAugmentWide(fill=5)) == "TrivialAugmentWide(num_magnitude_bins=31, fill=5)"
    assert repr(AutoAugment("svhn")) == "AutoAugment(policy='svhn', fill=0)"


def test_policies_build_from_config():
    from omegaconf import OmegaConf

    from trainlab.data import build_augmentation
    from trainlab.errors import ConfigError

    ops = OmegaConf.create({"ra": {"_target_": "trainlab.data.policies.RandAugment", "num_ops": 1, "magnitude": 5},
                            "ta": {"_target_": "trainlab.data.policies.TrivialAugmentWide"}})
    pipeline = build_augmentation(ops, (1, 28, 28))
    assert repr(pipeline.ops["ra"]) == "RandAugment(num_ops=1, magnitude=5, num_magnitude_bins=31, fill=0)"
    bad = OmegaConf.create({"aa": {"_target_": "trainlab.data.policies.AutoAugment", "policy": "mnist"}})
    with pytest.raises(ConfigError, match=r"^augmentation\.ops\.aa: .*policy='mnist'"):
        build_augmentation(bad, (3, 8, 8))
