"""Test-time augmentation: the views, and probability averaging in Trainer.evaluate."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from trainlab.data.loader import DeviceLoader
from trainlab.data.preprocess import Preprocessor
from trainlab.errors import ConfigError
from trainlab.train import Trainer
from trainlab.tta import build_views


def images(n=4, h=6, w=7):
    return torch.randint(1, 256, (n, 1, h, w), generator=torch.Generator().manual_seed(0), dtype=torch.uint8)


def test_off_means_no_views():
    assert build_views(flip=False, crops=1, padding=0) is None


def test_flip_gives_the_image_and_its_mirror():
    batch = images()
    views = build_views(flip=True)(batch)
    assert len(views) == 2 and torch.equal(views[0], batch) and torch.equal(views[1], batch.flip(-1))


def test_five_crops_are_the_corners_and_centre_of_the_padded_image():
    batch, p = images(), 2
    views = build_views(crops=5, padding=p)(batch)
    padded = torch.nn.functional.pad(batch, (p,) * 4)
    h, w = batch.shape[-2:]
    expected = [padded[..., :h, :w], padded[..., :h, 2 * p:], padded[..., 2 * p:, :w], padded[..., 2 * p:, 2 * p:],
                batch]
    assert len(views) == 5
    for view, want in zip(views, expected):
        assert view.shape == batch.shape and torch.equal(view, want)


def test_crops_and_flips_give_ten_views():
    views = build_views(flip=True, crops=5, padding=1)(images())
    assert len(views) == 10 and torch.equal(views[5], views[0].flip(-1))


@pytest.mark.parametrize("kwargs, key", [(dict(crops=3, padding=2), "tta.crops"), (dict(crops=5, padding=0), "tta.padding"),
                                         (dict(flip=True, padding=-1), "tta.padding")])
def test_impossible_settings_name_the_key(kwargs, key):
    with pytest.raises(ConfigError, match=key):
        build_views(**kwargs)


class LeftRightModel(nn.Module):
    """Class 0 if the left half is brighter, class 1 otherwise: flips change its answer."""

    def forward(self, x):
        w = x.shape[-1]
        left, right = x[..., : w // 2].mean(dim=(1, 2, 3)), x[..., w // 2:].mean(dim=(1, 2, 3))
        return torch.stack([left - right, right - left], dim=1) * 10


def test_evaluate_averages_view_probabilities():
    batch = torch.zeros(2, 1, 4, 4, dtype=torch.uint8)
    batch[0, ..., :2] = 255  # left bright: class 0
    batch[1, ..., 2:] = 255  # right bright: class 1
    labels = torch.tensor([0, 1])
    loader = DeviceLoader(batch, labels, 2, normalize=Preprocessor())
    trainer = Trainer(LeftRightModel(), None, None, torch.device("cpu"))
    plain = trainer.evaluate(loader)
    assert plain["acc"] == 1.0
    flipped = trainer.evaluate(loader.with_views(build_views(flip=True)))
    # each view is sure of the opposite class: the average is 50/50, so the loss is exactly log(2)
    assert flipped["loss"] == pytest.approx(torch.log(torch.tensor(2.0)).item(), rel=1e-5)
    assert loader.views is None, "with_views leaves the original loader alone"


def test_loader_with_views_yields_stacked_normalized_views():
    batch = images(n=5)
    loader = DeviceLoader(batch, torch.zeros(5, dtype=torch.long), 4, normalize=Preprocessor())
    first, _ = next(iter(loader.with_views(build_views(flip=True, crops=5, padding=1))))
    assert first.shape == (10, 4, 1, 6, 7) and first.dtype == torch.float32
    torch.testing.assert_close(first[4], batch[:4].float() / 255)  # the centre crop is the image itself
