"""Every augmentation preset composes, builds, and runs on grey 28x28 and RGB 32x32 images."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from trainlab.data import build_augmentation, build_mix
from trainlab.data.datasets import make_synthetic

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
PRESETS = sorted(p.stem for p in (CONFIGS / "augmentation").glob("*.yaml"))
SHAPES = {"grey28": (1, 28), "rgb32": (3, 32)}


@lru_cache(maxsize=None)
def _composed(preset: str) -> str:
    with initialize_config_dir(config_dir=str(CONFIGS), version_base="1.3"):
        return OmegaConf.to_yaml(compose(config_name="train", overrides=[f"augmentation={preset}"]).augmentation)


def preset_config(preset: str):
    """augmentation=PRESET as `trainlab train` composes it (the presets take crop and flip from configs/_shared)."""
    return OmegaConf.create(_composed(preset))


def test_the_presets_the_issue_names_exist():
    wanted = {"none", "flip", "flip_crop", "standard", "resnet_scale", "color", "randaugment", "trivialaugment",
              "autoaugment", "cutout", "mixup", "cutmix", "strong"}
    assert wanted <= set(PRESETS)


@pytest.mark.parametrize("shape", sorted(SHAPES))
@pytest.mark.parametrize("preset", PRESETS)
def test_preset_builds_and_augments(preset, shape):
    channels, size = SHAPES[shape]
    config = preset_config(preset)
    data = make_synthetic(num_train=64, num_test=8, channels=channels, image_size=size)
    pipeline = build_augmentation(config.get("ops"), data.input_shape, data.train_images)
    mix = build_mix(config.get("mix"), data.num_classes)
    batch = data.train_images[:32]
    out = pipeline(batch, torch.Generator().manual_seed(0))
    assert out.shape == batch.shape and out.dtype == torch.uint8
    if preset != "none":
        assert len(pipeline) == len(config.ops) > 0, "every op of the composed preset is in the pipeline"
        assert not torch.equal(out, batch), "the pipeline changed something"
    if "mix" in config:
        mixed, targets = mix(out.float(), data.train_labels[:32], torch.Generator().manual_seed(0))
        assert mixed.shape == batch.shape and targets.shape == (32, data.num_classes)
        torch.testing.assert_close(targets.sum(dim=1), torch.ones(32))
    else:
        assert mix is None
