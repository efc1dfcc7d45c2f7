"""Preprocessing options: each fitted on training images, each reproducible from its saved state."""

from __future__ import annotations

import pytest
import torch

from trainlab.data.preprocess import PREPROCESSORS, ZCA, ChannelMean, MeanImage, MeanStd, Preprocessor, from_state


def random_images(n=40, channels=3, size=6, seed=0) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    images = torch.randint(0, 256, (n, channels, size, size), generator=gen, dtype=torch.uint8)
    if channels > 1:
        images[:, 1] //= 4  # channels with different statistics
    if channels > 2:
        images[:, 2] = images[:, 2] // 2 + 100
    return images


def test_mean_std_gives_zero_mean_unit_std_per_channel_on_the_training_data():
    images = random_images()
    out = MeanStd().fit(images)(images)
    assert out.dtype == torch.float32 and out.shape == images.shape
    torch.testing.assert_close(out.mean(dim=(0, 2, 3)), torch.zeros(3), atol=1e-4, rtol=0)
    torch.testing.assert_close(out.std(dim=(0, 2, 3), unbiased=False), torch.ones(3), atol=1e-4, rtol=0)


def test_mean_std_statistics_match_torch_population_stats_across_chunks(monkeypatch):
    import trainlab.data.preprocess as preprocess

    images = random_images(n=21)
    scaled = images.double() / 255
    for chunk in (8192, 4):
        monkeypatch.setattr(preprocess, "CHUNK", chunk)
        state = MeanStd().fit(images).state
        torch.testing.assert_close(state["mean"].double(), scaled.mean(dim=(0, 2, 3)), rtol=1e-6, atol=1e-6)
        torch.testing.assert_close(state["std"].double(), scaled.std(dim=(0, 2, 3), unbiased=False), rtol=1e-5, atol=1e-6)


def test_channel_mean_subtracts_the_mean_and_keeps_the_scale():
    images = random_images()
    out = ChannelMean().fit(images)(images)
    torch.testing.assert_close(out.mean(dim=(0, 2, 3)), torch.zeros(3), atol=1e-5, rtol=0)
    torch.testing.assert_close(out.std(dim=(0, 2, 3)), (images.float() / 255).std(dim=(0, 2, 3)), atol=1e-5, rtol=0)


def test_mean_image_zeroes_every_pixel_position_on_average():
    images = random_images()
    out = MeanImage().fit(images)(images)
    torch.testing.assert_close(out.mean(dim=0), torch.zeros(images.shape[1:]), atol=1e-5, rtol=0)
    # per-pixel, not per-channel: the mean image varies across positions
    assert MeanImage().fit(images).state["mean_image"].std() > 0


def test_none_only_scales_to_unit_range():
    images = random_images()
    torch.testing.assert_close(Preprocessor()(images), images.float() / 255)


def test_zca_decorrelates_pixels_and_is_symmetric():
    gen = torch.Generator().manual_seed(3)
    # correlated pixels: a shared random brightness per image plus independent noise
    base = torch.rand(2000, 1, 1, 1, generator=gen) * 150
    noise = torch.rand(2000, 1, 4, 4, generator=gen) * 100
    images = (base + noise).round().clamp(0, 255).to(torch.uint8)
    zca = ZCA(epsilon=1e-6).fit(images)
    whiten = zca.state["whiten"]
    torch.testing.assert_close(whiten, whiten.T, atol=1e-4, rtol=1e-4)
    flat = zca(images).reshape(2000, -1).double()
    covariance = torch.cov(flat.T)
    torch.testing.assert_close(covariance, torch.eye(16, dtype=torch.float64), atol=0.05, rtol=0)
    before = torch.corrcoef((images.reshape(2000, -1).double()).T)
    assert before[0, 1] > 0.3, "the raw pixels were correlated"


def test_zca_epsilon_keeps_small_directions_from_exploding():
    images = random_images(n=200, channels=1, size=4)
    strong, weak = ZCA(epsilon=1e-6).fit(images), ZCA(epsilon=1.0).fit(images)
    assert weak(images).std() < strong(images).std()


@pytest.mark.parametrize("kwargs", [dict(epsilon=0), dict(epsilon=-1), dict(max_samples=1)])
def test_zca_rejects_impossible_settings(kwargs):
    with pytest.raises(ValueError, match=list(kwargs)[0]):
        ZCA(**kwargs)


@pytest.mark.parametrize("name", sorted(PREPROCESSORS))
def test_saved_state_rebuilds_the_same_function(name):
    images = random_images(n=30, size=4)
    fitted = PREPROCESSORS[name]().fit(images)
    state = fitted.state_dict()
    assert state["name"] == name
    rebuilt = from_state(state)
    assert type(rebuilt) is type(fitted)
    torch.testing.assert_close(rebuilt(images), fitted(images))


def test_loading_the_state_of_another_preprocessor_is_refused():
    state = MeanStd().fit(random_images()).state_dict()
    with pytest.raises(ValueError, match="mean_std"):
        ChannelMean().load_state_dict(state)
