"""The blocks shared by the options of a group live in one file under configs/_shared and are composed into
every option by its defaults list: each option still gets them (at their defaults, in the same order),
nothing else defines them, a preset changes one value of a block without copying it, and the usual
command-line overrides still reach them."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
SHARED = CONFIGS / "_shared"
OPTIMIZERS = sorted(p.stem for p in (CONFIGS / "optimizer").glob("*.yaml"))
MODELS = sorted(p.stem for p in (CONFIGS / "model").glob("*.yaml"))
PRESETS = sorted(p.stem for p in (CONFIGS / "augmentation").glob("*.yaml"))
TRAINLAB_KEYS = {"backbone_lr_scale": 1.0, "lr_multipliers": {}, "no_decay_bias_norm": True}
TRANSFER_KEYS = {"pretrained": None, "freeze": "none", "freeze_bn": True}
CROP = {"_target_": "trainlab.data.augment.RandomCrop", "padding": 4, "padding_mode": "zeros"}
FLIP = {"_target_": "trainlab.data.augment.HorizontalFlip", "p": 0.5}


def composed(*overrides: str):
    """The config `trainlab train OVERRIDES` composes, as plain containers."""
    with initialize_config_dir(config_dir=str(CONFIGS), version_base="1.3"):
        return OmegaConf.to_container(compose(config_name="train", overrides=list(overrides)))


def files_defining(pattern: str) -> set[str]:
    """The YAML files under configs/ with a (non-comment) line matching `pattern`, relative to configs/."""
    regex = re.compile(pattern)
    return {path.relative_to(CONFIGS).as_posix() for path in CONFIGS.rglob("*.yaml")
            if any(regex.search(line.split("#", 1)[0]) for line in path.read_text().splitlines())}


def key_line(key: str) -> str:
    return rf"^\s*{key}\s*:"


def test_there_are_options_to_check():
    assert len(OPTIMIZERS) == 10 and len(MODELS) == 10 and len(PRESETS) >= 13


# ---------------------------------------------------------------- optimizer: the trainlab keys


@pytest.mark.parametrize("name", OPTIMIZERS)
def test_every_optimizer_composes_with_the_trainlab_keys_at_their_defaults_last(name):
    optimizer = composed(f"optimizer={name}")["optimizer"]
    assert {key: optimizer[key] for key in TRAINLAB_KEYS} == TRAINLAB_KEYS
    assert list(optimizer)[-3:] == list(TRAINLAB_KEYS), "the torch keys first, then the trainlab ones"
    assert optimizer["_target_"].startswith("torch.optim.") and "defaults" not in optimizer


def test_only_the_shared_file_defines_the_trainlab_keys():
    # experiments (recipes) may set a value of the block under `optimizer:`; no other file may define a key of it
    for key in TRAINLAB_KEYS:
        found = {p for p in files_defining(key_line(key)) if not p.startswith("experiment/")}
        assert found == {"_shared/optimizer_trainlab_keys.yaml"}, key


def test_every_optimizer_option_takes_the_block_from_the_shared_file():
    for name in OPTIMIZERS:
        text = (CONFIGS / "optimizer" / f"{name}.yaml").read_text()
        assert "- /_shared/optimizer_trainlab_keys@_here_" in text, name


# ---------------------------------------------------------------- model: the transfer-learning keys


@pytest.mark.parametrize("name", MODELS)
def test_every_model_composes_with_the_transfer_keys_at_their_defaults_last(name):
    model = composed(f"model={name}")["model"]
    assert {key: model[key] for key in TRANSFER_KEYS} == TRANSFER_KEYS
    assert list(model)[-3:] == list(TRANSFER_KEYS), "the architecture's keys first, then the transfer ones"
    assert model["_target_"].startswith("trainlab.models.") and "defaults" not in model


def test_only_the_shared_file_defines_the_transfer_keys():
    for key in TRANSFER_KEYS:
        found = {p for p in files_defining(key_line(key)) if not p.startswith("experiment/")}
        assert found == {"_shared/model_transfer_keys.yaml"}, key
    for name in MODELS:
        text = (CONFIGS / "model" / f"{name}.yaml").read_text()
        assert "- /_shared/model_transfer_keys@_here_" in text, name


# ---------------------------------------------------------------- augmentation: the crop and flip ops


def test_the_crop_and_flip_ops_are_each_written_in_exactly_one_file():
    assert files_defining(r"_target_:\s*trainlab\.data\.augment\.RandomCrop\s*$") == {"_shared/augmentation_crop.yaml"}
    assert files_defining(r"_target_:\s*trainlab\.data\.augment\.HorizontalFlip\s*$") == \
        {"_shared/augmentation_flip.yaml"}


def test_flip_crop_changes_only_the_padding_and_keeps_crop_before_flip():
    ops = composed("augmentation=flip_crop")["augmentation"]["ops"]
    assert list(ops) == ["crop", "flip"]
    assert ops["crop"] == {**CROP, "padding": 2} and ops["flip"] == FLIP
    text = (CONFIGS / "augmentation" / "flip_crop.yaml").read_text()
    assert "RandomCrop" not in text and "padding_mode" not in text, "only the changed value is in the preset"


def test_standard_has_padding_4():
    ops = composed("augmentation=standard")["augmentation"]["ops"]
    assert list(ops) == ["crop", "flip"] and ops["crop"] == CROP and ops["flip"] == FLIP


@pytest.mark.parametrize("preset, order", [
    ("flip", ["flip"]),
    ("autoaugment", ["crop", "flip", "autoaugment"]),
    ("randaugment", ["crop", "flip", "randaugment"]),
    ("trivialaugment", ["crop", "flip", "trivialaugment"]),
    ("cutout", ["crop", "flip", "cutout"]),
    ("strong", ["crop", "flip", "trivialaugment", "erasing"]),
    ("mixup", ["crop", "flip"]),
    ("cutmix", ["crop", "flip"]),
    ("affine", ["affine", "flip"]),
    ("color", ["jitter", "lighting", "flip"]),
    ("resnet_scale", ["resized_crop", "flip"]),
    ("none", []),
])
def test_presets_keep_their_ops_in_order(preset, order):
    augmentation = composed(f"augmentation={preset}")["augmentation"]
    assert list(augmentation["ops"]) == order
    if "crop" in order:
        assert augmentation["ops"]["crop"] == CROP
    if "flip" in order:
        assert augmentation["ops"]["flip"] == FLIP
    assert ("mix" in augmentation) == (preset in ("mixup", "cutmix", "strong"))


# ---------------------------------------------------------------- overrides and --help


def test_command_line_overrides_still_reach_the_shared_keys():
    assert composed("optimizer=sgd", "optimizer.backbone_lr_scale=0.1")["optimizer"]["backbone_lr_scale"] == 0.1
    assert composed("model=resnet20", "model.pretrained=runs/best.pt")["model"]["pretrained"] == "runs/best.pt"
    assert composed("augmentation=standard", "augmentation.ops.crop.padding=2")["augmentation"]["ops"]["crop"] == \
        {**CROP, "padding": 2}
    assert list(composed("augmentation=flip_crop", "~augmentation.ops.flip")["augmentation"]["ops"]) == ["crop"]
    assert composed("augmentation=cutout", "augmentation.ops.crop.padding_mode=reflect")[
        "augmentation"]["ops"]["crop"]["padding_mode"] == "reflect"


def test_experiments_still_set_values_of_the_shared_blocks():
    cfg = composed("experiment=finetune_all")
    assert cfg["optimizer"]["backbone_lr_scale"] == 0.1 and cfg["model"]["freeze_bn"] is True
    cfg = composed("experiment=resnet_step")
    assert cfg["augmentation"]["ops"]["crop"] == CROP and list(cfg["augmentation"]["ops"]) == ["crop", "flip"]
    assert cfg["optimizer"]["no_decay_bias_norm"] is True and cfg["model"]["freeze"] == "none"


def test_the_fragments_are_not_options_of_the_groups():
    fragments = {p.stem for p in SHARED.glob("*.yaml")}
    assert fragments == {"optimizer_trainlab_keys", "model_transfer_keys", "augmentation_crop", "augmentation_flip",
                         "domain_keys"}
    assert not fragments & (set(OPTIMIZERS) | set(MODELS) | set(PRESETS))
