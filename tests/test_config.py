"""config.validate / config.instantiate: typed sections, defaults, and one-line errors naming the key."""

from __future__ import annotations

from pathlib import Path

import pytest
from omegaconf import OmegaConf

from trainlab.config import load_option, DatasetSchema, TrainerSchema, instantiate, switch, validate
from trainlab.errors import ConfigError

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
GROUPS = ("dataset", "augmentation", "model", "init", "optimizer", "schedule", "trainer")
DEFAULTS = dict(dataset="fashion_mnist", augmentation="none", model="cnn", init="default", optimizer="adam",
                schedule="cosine", trainer="default")


def composed(**choices: str):
    """A config composed like Hydra does for `trainlab train group=option ...`, from the YAML files."""
    picked = {**DEFAULTS, **choices}
    cfg = OmegaConf.create({"seed": 0})
    for group in GROUPS:
        cfg[group] = load_option(group, picked[group])
    return cfg


def options(group: str) -> list[str]:
    return sorted(p.stem for p in (CONFIGS / group).glob("*.yaml"))


def with_value(key: str, value):
    cfg = composed()
    OmegaConf.update(cfg, key, value, force_add=True)
    return cfg


# ---------------------------------------------------------------- valid configs


def test_composed_default_config_passes_and_keeps_values():
    cfg = composed()
    checked = validate(cfg)
    trainer_yaml = OmegaConf.load(CONFIGS / "trainer" / "default.yaml")
    for key, value in trainer_yaml.items():
        assert checked.trainer[key] == value, key
    assert checked.dataset.name == "fashion_mnist"
    assert checked.dataset.val_size == 5000
    assert checked.dataset.train_size is None
    assert checked.seed == 0
    assert checked.model._target_ == "trainlab.models.cnn.CNN"


@pytest.mark.parametrize("group", GROUPS)
def test_every_option_of_every_group_validates(group):
    for option in options(group):
        checked = validate(composed(**{group: option}))
        assert set(GROUPS) <= set(checked.keys()), option


def test_missing_trainer_and_dataset_keys_are_filled_from_the_schema():
    cfg = composed()
    cfg.trainer = {"epochs": 2}
    cfg.dataset = {"name": "fashion_mnist"}
    checked = validate(cfg)
    assert checked.trainer.epochs == 2
    trainer_defaults = TrainerSchema()
    for key in ("batch_size", "eval_batch_size", "device", "monitor", "mode", "label_smoothing", "log_every",
                "amp", "channels_last", "drop_last", "resume", "deterministic"):
        assert checked.trainer[key] == getattr(trainer_defaults, key), key
    dataset_defaults = DatasetSchema()
    for key in ("root", "train_size", "val_size", "download"):
        assert checked.dataset[key] == getattr(dataset_defaults, key), key
    # the input is not modified: validate returns a checked copy
    assert set(cfg.trainer.keys()) == {"epochs"}


def test_strings_that_are_numbers_are_converted_to_the_schema_type():
    checked = validate(with_value("trainer.epochs", "7"))
    assert checked.trainer.epochs == 7 and isinstance(checked.trainer.epochs, int)


def test_interpolations_are_resolved():
    cfg = composed()
    cfg.trainer.eval_batch_size = "${trainer.batch_size}"
    cfg.trainer.batch_size = 64
    checked = validate(cfg)
    assert checked.trainer.eval_batch_size == 64
    assert isinstance(checked.trainer.eval_batch_size, int)


def test_unresolvable_interpolation_is_a_config_error():
    cfg = composed()
    cfg.trainer.epochs = "${no_such_key}"
    with pytest.raises(ConfigError, match="cannot be resolved"):
        validate(cfg)


def test_extra_dataset_keys_are_kept():
    checked = validate(composed(dataset="synthetic"))
    assert checked.dataset.num_train == OmegaConf.load(CONFIGS / "dataset" / "synthetic.yaml").num_train
    assert checked.dataset.generator_seed == 0


@pytest.mark.parametrize("value", [0.1, 0.5, 0, 1, 100])
def test_val_size_accepts_counts_and_fractions(value):
    assert validate(with_value("dataset.val_size", value)).dataset.val_size == value


@pytest.mark.parametrize("device", ["auto", "cpu", "cuda", "mps", "cuda:1"])
def test_known_devices_are_accepted(device):
    assert validate(with_value("trainer.device", device)).trainer.device == device


# ---------------------------------------------------------------- wrong types / impossible values


@pytest.mark.parametrize(
    "key, value",
    [
        ("trainer.epochs", "abc"),
        ("trainer.epochs", 2.5),
        ("trainer.epochs", True),
        ("trainer.drop_last", "maybe"),
        ("trainer.label_smoothing", "abc"),
        ("dataset.train_size", "abc"),
    ],
)
def test_wrong_type_names_the_key_and_the_expected_type(key, value):
    with pytest.raises(ConfigError, match=rf"^{key}=.*expected"):
        validate(with_value(key, value))


@pytest.mark.parametrize(
    "key, value",
    [
        ("trainer.epochs", 0),
        ("trainer.epochs", -3),
        ("trainer.batch_size", 0),
        ("trainer.eval_batch_size", 0),
        ("trainer.log_every", 0),
        ("trainer.mode", "avg"),
        ("trainer.monitor", "val/f1"),
        ("trainer.label_smoothing", 1.0),
        ("trainer.label_smoothing", -0.1),
        ("trainer.device", "tpu"),
        ("trainer.amp", "yes"),
        ("trainer.channels_last", "sometimes"),
        ("dataset.val_size", -1),
        ("dataset.val_size", 1.5),
        ("dataset.val_size", 1.0),
        ("dataset.val_size", True),
        ("dataset.val_size", "abc"),
        ("dataset.train_size", 0),
        ("dataset.train_size", -5),
    ],
)
def test_out_of_range_value_names_the_key(key, value):
    with pytest.raises(ConfigError, match=rf"^{key}=.*must be"):
        validate(with_value(key, value))


def test_unknown_trainer_key_is_rejected_and_known_keys_listed():
    with pytest.raises(ConfigError, match=r"^trainer\.epoch: unknown key.*epochs"):
        validate(with_value("trainer.epoch", 3))


@pytest.mark.parametrize("group", GROUPS)
def test_missing_group_is_named(group):
    cfg = composed()
    del cfg[group]
    with pytest.raises(ConfigError, match=rf"^{group}: missing config group"):
        validate(cfg)


@pytest.mark.parametrize("seed", ["x", 1.5, None, True])
def test_seed_must_be_a_whole_number(seed):
    with pytest.raises(ConfigError, match=r"^seed="):
        validate(with_value("seed", seed))


def test_augmentation_ops_must_be_a_named_mapping():
    cfg = composed()
    cfg.augmentation.ops = [{"_target_": "trainlab.data.augment.HorizontalFlip"}]
    with pytest.raises(ConfigError, match=r"^augmentation\.ops"):
        validate(cfg)


# ---------------------------------------------------------------- switch / instantiate


@pytest.mark.parametrize(
    "value, auto, expected",
    [("auto", True, True), ("auto", False, False), ("true", False, True), ("TRUE", False, True),
     ("false", True, False), ("False", True, False)],
)
def test_switch(value, auto, expected):
    assert switch(value, auto) is expected


def test_instantiate_builds_the_target_with_kwargs():
    node = OmegaConf.create({"_target_": "trainlab.models.mlp.MLP", "hidden": [4]})
    model = instantiate(node, "model", input_shape=[1, 2, 3], num_classes=5)
    assert model[1].in_features == 6 and model[-1].out_features == 5


def test_instantiate_with_a_bad_target_names_the_key_and_target():
    node = OmegaConf.create({"_target_": "torch.optim.NoSuchOptimizer", "_partial_": True, "lr": 0.1})
    with pytest.raises(ConfigError, match=r"^optimizer\._target_=torch\.optim\.NoSuchOptimizer: torch\.optim has no"):
        instantiate(node, "optimizer")


def test_instantiate_with_a_misspelt_target_suggests_the_close_names():
    node = OmegaConf.create({"_target_": "torch.optim.Adamm", "_partial_": True})
    with pytest.raises(ConfigError, match=r"did you mean torch\.optim\.Adam"):
        instantiate(node, "optimizer")


def test_instantiate_with_a_bad_module_names_the_key():
    node = OmegaConf.create({"_target_": "no_such_module.Thing"})
    with pytest.raises(ConfigError, match=r"^model\._target_=no_such_module\.Thing: no module 'no_such_module'"):
        instantiate(node, "model")


def test_instantiate_with_an_unknown_argument_names_the_key_and_argument():
    node = OmegaConf.create({"_target_": "trainlab.models.mlp.MLP", "hiddden": [4]})
    with pytest.raises(ConfigError, match=r"^model\.hiddden: unknown key; known keys: hidden, activation"):
        instantiate(node, "model", input_shape=[1, 2, 2], num_classes=3)


def test_instantiate_error_is_one_line():
    node = OmegaConf.create({"_target_": "no_such_module.Thing"})
    with pytest.raises(ConfigError) as caught:
        instantiate(node, "schedule")
    assert "\n" not in str(caught.value)


@pytest.mark.parametrize("monitor, mode, wanted", [("val/loss", "max", "min"), ("val/acc", "min", "max")])
def test_monitor_and_mode_that_would_keep_the_worst_epoch_are_refused(monitor, mode, wanted):
    cfg = composed()
    cfg.trainer.monitor, cfg.trainer.mode = monitor, mode
    with pytest.raises(ConfigError, match=f"trainer.mode={mode} .* use trainer.mode={wanted}"):
        validate(cfg)


def test_monitor_val_loss_with_min_mode_is_accepted():
    cfg = composed()
    cfg.trainer.monitor, cfg.trainer.mode = "val/loss", "min"
    assert validate(cfg).trainer.mode == "min"
