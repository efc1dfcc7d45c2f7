"""Every augmentation preset composes, builds, and runs on grey 28x28 and RGB 32x32 images."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from trainlab.data import build_augmentation, build_mix
from trainlab.data.datasets import make_synthetic

PRESETS = sorted(p.stem for p in (Path(__file__).resolve().parents[1] / "configs" / "augmentation").glob("*.yaml"))
SHAPES = {"grey28": (1, 28), "rgb32": (3, 32)}


def test_the_presets_the_issue_names_exist():
    wanted = {"none", "flip", "flip_crop", "standard", "resnet_scale", "color", "randaugment", "trivialaugment",
              "autoaugment", "cutout", "mixup", "cutmix", "strong"}
    assert wanted <= set(PRESETS)


@pytest.mark.parametrize("shape", sorted(SHAPES))
@pytest.mark.parametrize("preset", PRESETS)
def test_preset_builds_and_augments(preset, shape):
    channels, size = SHAPES[shape]
    config = OmegaConf.load(Path(__file__).resolve().parents[1] / "configs" / "augmentation" / f"{preset}.yaml")
    data = make_synthetic(num_train=64, num_test=8, channels=channels, image_size=size)
    pipeline = build_augmentation(config.get("ops"), data.input_shape, data.train_images)
    mix = build_mix(config.get("mix"), data.num_classes)
    batch = data.train_images[:32]
    out = pipeline(batch, torch.Generator().manual_seed(0))
    assert out.shape == batch.shape and out.dtype == torch.uint8
    if preset != "none" and len(pipeline):
        assert not torch.equal(out, batch), "the pipeline changed something"
    if "mix" in config:
        mixed, targets = mix(out.float(), data.train_labels[:32], torch.Generator().manual_seed(0))
        assert mixed.shape == batch.shape and targets.shape == (32, data.num_classes)
        torch.testing.assert_close(targets.sum(dim=1), torch.ones(32))
    else:
        assert mix is None
