"""warp_affine with per-sample matrices agrees with torchvision's own affine, image by image."""

from __future__ import annotations

import pytest
import torch
from torchvision.transforms import InterpolationMode
from torchvision.transforms.v2 import functional as TF

from trainlab.data.geometry import affine_matrices, identity_matrices, warp_affine

CASES = [(0.0, (0.0, 0.0), 1.0, (0.0, 0.0)), (90.0, (0.0, 0.0), 1.0, (0.0, 0.0)), (30.0, (1.0, 2.0), 1.2, (10.0, 5.0)),
         (-15.0, (0.0, 0.0), 0.8, (0.0, -12.0)), (0.0, (3.0, -2.0), 1.0, (20.0, 0.0))]


def test_each_sample_gets_its_own_transform_matching_torchvision():
    torch.manual_seed(0)
    images = torch.randint(0, 256, (len(CASES), 3, 17, 15), dtype=torch.uint8)
    angle, translate, scale, shear = (torch.tensor([c[i] for c in CASES]) for i in range(4))
    warped = warp_affine(images, affine_matrices(angle, translate, scale, shear, (17, 15)), mode="nearest")
    for i, (a, t, s, sh) in enumerate(CASES):
        reference = TF.affine(images[i], angle=a, translate=list(t), scale=s, shear=list(sh),
                              interpolation=InterpolationMode.NEAREST)
        assert torch.equal(warped[i], reference), CASES[i]


@pytest.mark.parametrize("fill", [0, 255])
def test_pixels_from_outside_get_the_fill_value(fill):
    images = torch.full((1, 1, 8, 8), 100, dtype=torch.uint8)
    shifted = warp_affine(images, affine_matrices(torch.zeros(1), torch.tensor([[3.0, 0.0]]), torch.ones(1),
                                                  torch.zeros(1, 2), (8, 8)), fill=fill)
    assert (shifted[..., :3] == fill).all() and (shifted[..., 3:] == 100).all()


def test_identity_leaves_images_unchanged():
    images = torch.randint(0, 256, (4, 3, 9, 9), dtype=torch.uint8)
    assert torch.equal(warp_affine(images, identity_matrices(4)), images)
