"""Domain adaptation's pieces: the gradient-reversal layer, Ganin's schedules, the shifted target domains."""

from __future__ import annotations

import math

import pytest
import torch

from trainlab.adaptation.reversal import GradientReversal, ganin_lambda, ganin_lr_factor, reverse_gradient
from trainlab.data.domains import SHIFTS, shift_images


@pytest.mark.parametrize("weight", [0.0, 0.3, 1.0, 2.5])
def test_gradient_reversal_passes_values_and_multiplies_gradients_by_minus_lambda(weight):
    features = torch.randn(5, 7, requires_grad=True)
    upstream = torch.randn(5, 7)
    out = GradientReversal(weight)(features)
    assert torch.equal(out, features), "forward: the values unchanged"
    out.backward(upstream)
    assert torch.allclose(features.grad, -weight * upstream)


def test_gradient_reversal_inside_a_network_flips_only_what_flows_through_it():
    torch.manual_seed(0)
    extractor = torch.nn.Linear(4, 3)
    task, domain = torch.nn.Linear(3, 2), torch.nn.Linear(3, 1)
    images = torch.randn(8, 4)

    def extractor_grads(weight: float):
        extractor.zero_grad()
        features = extractor(images)
        (task(features).sum() + domain(reverse_gradient(features, weight)).sum()).backward()
        return extractor.weight.grad.clone()

    features = extractor(images).detach()
    extractor.zero_grad()
    task_only = torch.autograd.grad(task(extractor(images)).sum(), extractor.weight)[0]
    domain_only = torch.autograd.grad(domain(extractor(images)).sum(), extractor.weight)[0]
    assert features.shape == (8, 3)
    assert torch.allclose(extractor_grads(0.5), task_only - 0.5 * domain_only, atol=1e-6)


def test_ganin_schedules_at_known_points():
    assert ganin_lambda(0.0) == 0.0
    assert ganin_lambda(0.5) == pytest.approx(2 / (1 + math.exp(-5)) - 1)
    assert ganin_lambda(1.0) == pytest.approx(0.9999092, abs=1e-7)
    assert ganin_lambda(0.2, gamma=5) == pytest.approx(2 / (1 + math.exp(-1)) - 1)
    assert ganin_lr_factor(0.0) == 1.0
    assert ganin_lr_factor(1.0) == pytest.approx(11 ** -0.75)
    assert ganin_lr_factor(0.5, alpha=2, beta=1) == pytest.approx(0.5)
    values = [ganin_lambda(p / 10) for p in range(11)]
    assert values == sorted(values), "lambda rises with progress"
    with pytest.raises(ValueError, match="progress"):
        ganin_lambda(1.5)


def grey_images(count: int = 12, size: int = 10) -> torch.Tensor:
    return torch.randint(0, 256, (count, 1, size, size), dtype=torch.uint8, generator=torch.Generator().manual_seed(1))


@pytest.mark.parametrize("shift", SHIFTS)
def test_a_shift_is_deterministic_under_its_seed_and_keeps_the_images_shape(shift):
    images = grey_images()
    once, again = shift_images(images, shift, seed=3), shift_images(images, shift, seed=3)
    assert torch.equal(once, again) and once.dtype == torch.uint8
    channels = 3 if shift in ("textured", "tinted") else 1
    assert once.shape == (12, channels, 10, 10)
    assert not torch.equal(once.float().mean(dim=1, keepdim=True), images.float()), "the images are shifted"
    if shift in ("textured", "tinted", "noisy"):  # the seeded ones
        assert not torch.equal(once, shift_images(images, shift, seed=4)), "another seed, another domain"
        part = shift_images(images[5:9], shift, seed=3, start=5)
        assert torch.equal(part, once[5:9]), "image i's draw depends on the seed and i only"


def test_textured_images_each_get_a_texture_of_their_own_and_keep_the_shape_visible():
    blank = torch.zeros(4, 1, 28, 28, dtype=torch.uint8)
    textures = shift_images(blank, "textured", seed=0)
    assert all(not torch.equal(textures[0], textures[i]) for i in range(1, 4))
    square = blank.clone()
    square[:, :, 8:20, 8:20] = 255
    shifted = shift_images(square, "textured", seed=0).float()
    inside, outside = shifted[:, :, 8:20, 8:20], textures.float()[:, :, 8:20, 8:20]
    assert torch.allclose(inside, (255 - outside).abs(), atol=1.0), "|texture - image|: the digit shows through"


def test_inverting_twice_gives_the_images_back_and_bad_input_is_refused():
    images = grey_images()
    assert torch.equal(shift_images(shift_images(images, "inverted"), "inverted"), images)
    with pytest.raises(ValueError, match="choose one of"):
        shift_images(images, "blurred")
    with pytest.raises(ValueError, match="uint8"):
        shift_images(images.float(), "noisy")
