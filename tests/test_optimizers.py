"""Every optimizer config file, the param groups (no weight decay on biases/norms, lr multipliers, the
backbone's scale, names, frozen parameters) and the checks of the optimizer keys."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from trainlab.config import load_option
from torch import nn

from trainlab.data.datasets import make_synthetic
from trainlab.errors import ConfigError
from trainlab.models.cnn import CNN
from trainlab.models.mlp import MLP
from trainlab.optim import build_optimizer

CONFIGS = Path(__file__).resolve().parents[1] / "configs" / "optimizer"

# name -> (class, the documented defaults the built optimizer must use)
EXPECTED = {
    "sgd": (torch.optim.SGD, {"lr": 0.05, "momentum": 0.0, "nesterov": False, "dampening": 0.0, "weight_decay": 0.0}),
    "momentum": (torch.optim.SGD, {"momentum": 0.9, "nesterov": False, "weight_decay": 0.0}),
    "nesterov": (torch.optim.SGD, {"momentum": 0.9, "nesterov": True, "dampening": 0.0}),
    "adagrad": (torch.optim.Adagrad, {"lr": 0.01, "lr_decay": 0.0, "eps": 1e-10, "initial_accumulator_value": 0.0}),
    "adadelta": (torch.optim.Adadelta, {"lr": 1.0, "rho": 0.9, "eps": 1e-6}),
    "rmsprop": (torch.optim.RMSprop, {"alpha": 0.99, "momentum": 0.0, "centered": False, "eps": 1e-8}),
    "adam": (torch.optim.Adam, {"lr": 1e-3, "betas": (0.9, 0.999), "eps": 1e-8, "amsgrad": False,
                                "weight_decay": 0.0}),
    "adamw": (torch.optim.AdamW, {"lr": 1e-3, "betas": (0.9, 0.999), "weight_decay": 0.01, "amsgrad": False}),
    "nadam": (torch.optim.NAdam, {"betas": (0.9, 0.999), "eps": 1e-8}),
    "radam": (torch.optim.RAdam, {"lr": 1e-3, "betas": (0.9, 0.999), "eps": 1e-8}),
}
TRAINLAB_DEFAULTS = {"backbone_lr_scale": 1.0, "lr_multipliers": {}, "no_decay_bias_norm": True}


def load(name: str, **values):
    cfg = load_option("optimizer", name)
    for key, value in values.items():
        OmegaConf.update(cfg, key, value, force_add=True, merge=False)
    return cfg


def by_name(optimizer) -> dict[str, dict]:
    return {group["name"]: group for group in optimizer.param_groups}


def ids(params) -> set[int]:
    return {id(p) for p in params}


def all_params(optimizer) -> list:
    return [p for group in optimizer.param_groups for p in group["params"]]


def cnn() -> CNN:
    torch.manual_seed(0)
    return CNN((1, 12, 12), 3, channels=[4, 8])  # conv (no bias) + BatchNorm per stage, linear head


def test_every_optimizer_file_is_covered():
    assert sorted(p.stem for p in CONFIGS.glob("*.yaml")) == sorted(EXPECTED)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_config_file_builds_its_class_with_documented_defaults(name):
    cls, expected = EXPECTED[name]
    cfg = load(name)
    assert {key: cfg[key] for key in TRAINLAB_DEFAULTS} == TRAINLAB_DEFAULTS
    model = nn.Linear(3, 2)
    optimizer = build_optimizer(cfg, model)
    assert type(optimizer) is cls
    main = optimizer.param_groups[0]
    assert main["name"] == "main" and main["lr"] == pytest.approx(cfg.lr)
    for key, value in expected.items():
        got = main[key]
        assert (tuple(got) if isinstance(got, (list, tuple)) else got) == pytest.approx(value), key
    assert optimizer.defaults["weight_decay"] == pytest.approx(cfg.weight_decay)
    assert sorted(map(id, all_params(optimizer))) == sorted(map(id, model.parameters()))


@pytest.fixture(scope="module")
def problem(one_thread):
    data = make_synthetic(num_train=128, num_test=1, num_classes=4, image_size=8, generator_seed=3)
    images = data.train_images.float() / 255.0
    images = (images - images.mean()) / images.std()
    yield images, data.train_labels


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_each_optimizer_makes_the_training_loss_fall(name, problem):
    images, labels = problem
    torch.manual_seed(0)
    model = MLP(images.shape[1:], 4, hidden=[16], norm="batch")  # with BatchNorm: a no_decay group for adamw
    optimizer = build_optimizer(load(name), model)
    model.train()

    def loss() -> torch.Tensor:
        return nn.functional.cross_entropy(model(images), labels)

    with torch.no_grad():
        before = loss().item()
    for _ in range(100):
        optimizer.zero_grad(set_to_none=True)
        loss().backward()
        optimizer.step()
    with torch.no_grad():
        after = loss().item()
    assert after < 0.9 * before, (name, before, after)


# ---------------------------------------------------------------- no weight decay on biases and norms


def test_no_decay_groups_hold_exactly_the_one_dimensional_parameters():
    model = CNN((1, 12, 12), 3, channels=[4, 8], norm="batch")
    model.features[0] = nn.Conv2d(1, 4, 3, padding=1, bias=True)  # a conv with a bias too
    optimizer = build_optimizer(load("adamw"), model)
    groups = by_name(optimizer)
    assert list(groups) == ["main", "no_decay"]
    assert groups["main"]["weight_decay"] == pytest.approx(0.01) and groups["no_decay"]["weight_decay"] == 0.0
    assert groups["no_decay"]["lr"] == groups["main"]["lr"] == pytest.approx(1e-3)
    for name, param in model.named_parameters():
        where = "no_decay" if param.ndim <= 1 else "main"
        assert id(param) in ids(groups[where]["params"]), name
    bn = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    assert bn and all(id(m.weight) in ids(groups["no_decay"]["params"]) for m in bn)
    weights = [m.weight for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    assert ids(weights) == ids(groups["main"]["params"])
    assert id(model.features[0].bias) in ids(groups["no_decay"]["params"])
    assert len(all_params(optimizer)) == len(list(model.parameters()))


def test_no_decay_with_layer_norm():
    model = MLP((1, 4, 4), 3, hidden=[8], norm="layer")
    groups = by_name(build_optimizer(load("adamw"), model))
    assert ids(groups["no_decay"]["params"]) == ids(p for p in model.parameters() if p.ndim <= 1)
    assert ids(groups["main"]["params"]) == {id(model.fc1.weight), id(model.head.weight)}


def test_no_decay_switched_off_gives_one_group():
    model = cnn()
    optimizer = build_optimizer(load("adamw", no_decay_bias_norm=False), model)
    (group,) = optimizer.param_groups
    assert group["weight_decay"] == pytest.approx(0.01) and len(group["params"]) == len(list(model.parameters()))


@pytest.mark.parametrize("name", ["sgd", "adam", "momentum"])
def test_no_decay_needs_no_extra_group_without_weight_decay(name):
    assert len(build_optimizer(load(name), cnn()).param_groups) == 1
    groups = by_name(build_optimizer(load(name, weight_decay=1e-4), cnn()))
    assert list(groups) == ["main", "no_decay"] and groups["main"]["weight_decay"] == pytest.approx(1e-4)


def test_no_decay_applies_to_the_class_default_weight_decay():
    cfg = OmegaConf.create({"_target_": "torch.optim.AdamW", "_partial_": True, "lr": 1e-3})  # AdamW's 0.01
    assert [g["name"] for g in build_optimizer(cfg, cnn()).param_groups] == ["main", "no_decay"]


# ---------------------------------------------------------------- lr multipliers, backbone scale, names


def test_lr_multipliers_set_per_group_lrs():
    model = cnn()
    optimizer = build_optimizer(load("sgd", lr=0.1, lr_multipliers={"head": 10.0, "features.0": 0.1}), model)
    groups = by_name(optimizer)
    assert optimizer.param_groups[0]["name"] == "main" and optimizer.param_groups[0]["lr"] == pytest.approx(0.1)
    assert groups["head"]["lr"] == pytest.approx(1.0)
    assert groups["features.0"]["lr"] == pytest.approx(0.01)
    assert ids(groups["head"]["params"]) == ids(model.head.parameters())
    assert ids(groups["features.0"]["params"]) == ids(model.features[0].parameters())
    rest = {id(p) for n, p in model.named_parameters() if not n.startswith(("head.", "features.0."))}
    assert ids(groups["main"]["params"]) == rest


def test_first_matching_prefix_wins_and_prefixes_respect_dots():
    model = nn.Sequential(*[nn.Linear(2, 2) for _ in range(12)])
    cfg = load("sgd", lr=1.0, lr_multipliers={"1": 0.5, "1.weight": 2.0, "10": 3.0})
    groups = by_name(build_optimizer(cfg, model))
    assert ids(groups["1"]["params"]) == ids(model[1].parameters())  # "1" first: it takes 1.weight as well
    assert ids(groups["10"]["params"]) == ids(model[10].parameters())  # "1" does not match "10.weight"
    assert "1.weight" not in groups and groups["10"]["lr"] == pytest.approx(3.0)


def test_nested_lr_multipliers_read_as_dotted_prefixes():
    model = cnn()  # ++optimizer.lr_multipliers.features.0=0.1 on the command line composes {features: {0: 0.1}}
    groups = by_name(build_optimizer(load("sgd", lr=0.1, lr_multipliers={"features": {"0": 0.1}}), model))
    assert groups["features.0"]["lr"] == pytest.approx(0.01)


def test_lr_multipliers_compose_with_backbone_lr_scale():
    model = cnn()
    cfg = load("adamw", lr=0.1, backbone_lr_scale=0.1, lr_multipliers={"features.0": 0.5, "head": 2.0})
    optimizer = build_optimizer(cfg, model)
    groups = by_name(optimizer)
    assert groups["features.0"]["lr"] == pytest.approx(0.1 * 0.5 * 0.1)  # a backbone prefix: both apply
    assert groups["head"]["lr"] == pytest.approx(0.2) and groups["head/no_decay"]["lr"] == pytest.approx(0.2)
    assert groups["backbone"]["lr"] == pytest.approx(0.01) and groups["backbone/no_decay"]["lr"] == pytest.approx(0.01)
    assert optimizer.param_groups[0]["name"] == "head", "no group at optimizer.lr: the head's comes first"
    assert sorted(map(id, all_params(optimizer))) == sorted(map(id, model.parameters()))


def test_group_names_and_order_with_backbone_scale_and_no_decay():
    model = cnn()
    optimizer = build_optimizer(load("adamw", lr=0.1, backbone_lr_scale=0.1), model)
    assert [g["name"] for g in optimizer.param_groups] == ["head", "head/no_decay", "backbone", "backbone/no_decay"]
    assert optimizer.param_groups[0]["lr"] == pytest.approx(0.1)
    assert [g["weight_decay"] for g in optimizer.param_groups] == pytest.approx([0.01, 0.0, 0.01, 0.0])
    assert all(g["params"] for g in optimizer.param_groups), "no empty groups"


def test_the_trainer_logs_one_curve_per_distinct_rate():
    from trainlab.train import Trainer

    model = cnn()
    optimizer = build_optimizer(load("adamw", lr=0.1, lr_multipliers={"features.0": 0.5}), model)
    lrs = Trainer(model, optimizer, None, torch.device("cpu")).lrs()
    # the no-decay group learns at lr like the main group: no second, identical curve
    assert lrs == pytest.approx({"lr": 0.1, "lr/features.0": 0.05})


def test_frozen_parameters_are_left_out_and_give_no_empty_group():
    model = cnn()
    for p in model.features.parameters():
        p.requires_grad_(False)
    cfg = load("adamw", backbone_lr_scale=0.1, lr_multipliers={"features.0": 0.5})  # matches only frozen ones
    optimizer = build_optimizer(cfg, model)
    assert [g["name"] for g in optimizer.param_groups] == ["head", "head/no_decay"]
    assert ids(all_params(optimizer)) == ids(model.head.parameters())
    assert all(p.requires_grad for p in all_params(optimizer))


def test_unknown_prefix_names_the_key_and_the_children():
    with pytest.raises(ConfigError, match=r"^optimizer\.lr_multipliers\.backbone\.3: .*features, pool, dropout, head"):
        build_optimizer(load("sgd", lr_multipliers={"backbone.3": 0.1}), cnn())
    with pytest.raises(ConfigError, match=r"^optimizer\.lr_multipliers\.feat:"):  # a prefix of a name, not a path
        build_optimizer(load("sgd", lr_multipliers={"feat": 0.1}), cnn())


# ---------------------------------------------------------------- checks before torch's


@pytest.mark.parametrize("name, key, value", [
    ("sgd", "lr", 0.0),
    ("adam", "lr", -1e-3),
    ("sgd", "lr", "fast"),
    ("momentum", "momentum", 1.0),
    ("rmsprop", "momentum", -0.1),
    ("adam", "betas", [0.9, 1.0]),
    ("adamw", "betas", [-0.1, 0.999]),
    ("nadam", "betas", [0.9]),
    ("radam", "betas", 0.9),
    ("adam", "weight_decay", -0.01),
    ("adamw", "eps", 0.0),
    ("adagrad", "eps", -1e-10),
    ("adadelta", "rho", 1.0),
    ("adadelta", "rho", -0.5),
    ("rmsprop", "alpha", 1.5),
    ("sgd", "momentum", True),
    ("sgd", "backbone_lr_scale", -1.0),
    ("adamw", "no_decay_bias_norm", "yes"),
    ("sgd", "lr_multipliers", [0.1]),
])
def test_bad_values_are_config_errors_naming_the_key(name, key, value):
    with pytest.raises(ConfigError, match=rf"^optimizer\.{key}="):
        build_optimizer(load(name, **{key: value}), cnn())


def test_bad_multiplier_names_its_prefix():
    with pytest.raises(ConfigError, match=r"^optimizer\.lr_multipliers\.head=-1"):
        build_optimizer(load("sgd", lr_multipliers={"head": -1}), cnn())


@pytest.mark.parametrize("values", [{"momentum": 0.0}, {"momentum": 0.9, "dampening": 0.1}])
def test_nesterov_needs_momentum(values):
    with pytest.raises(ConfigError, match=r"^optimizer\.nesterov=True: needs optimizer\.(momentum|dampening)"):
        build_optimizer(load("nesterov", **values), cnn())
