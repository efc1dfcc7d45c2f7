"""Weight initialization: the statistics of each initializer, the config files, what is left alone."""

from __future__ import annotations

import functools
import math
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf
from torch import nn

from trainlab.errors import ConfigError
from trainlab.init import apply_init, initialize
from trainlab.models.cnn import CNN

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
INIT_FILES = sorted(p.stem for p in (CONFIGS / "init").glob("*.yaml"))


def relative_error(actual: float, expected: float) -> float:
    return abs(actual - expected) / expected


def test_xavier_normal_std_on_a_big_linear():
    torch.manual_seed(0)
    layer = nn.Linear(1000, 1000)
    touched = initialize(layer, nn.init.xavier_normal_)
    assert touched == 1
    expected = math.sqrt(2.0 / (1000 + 1000))
    assert relative_error(layer.weight.std().item(), expected) < 0.05
    assert abs(layer.weight.mean().item()) < 0.05 * expected


def test_xavier_normal_uses_fan_in_plus_fan_out():
    torch.manual_seed(0)
    layer = nn.Linear(1500, 300)  # fan_in 1500, fan_out 300
    initialize(layer, nn.init.xavier_normal_)
    assert relative_error(layer.weight.std().item(), math.sqrt(2.0 / 1800)) < 0.05


def test_kaiming_normal_fan_in_relu_std():
    torch.manual_seed(0)
    layer = nn.Linear(500, 1000)  # weight [1000, 500]: fan_in 500
    initialize(layer, functools.partial(nn.init.kaiming_normal_, mode="fan_in", nonlinearity="relu"))
    assert relative_error(layer.weight.std().item(), math.sqrt(2.0 / 500)) < 0.05


def test_kaiming_normal_on_a_conv_uses_the_receptive_field():
    torch.manual_seed(0)
    layer = nn.Conv2d(64, 128, 3)  # fan_in = 64 * 3 * 3
    initialize(layer, functools.partial(nn.init.kaiming_normal_, mode="fan_in", nonlinearity="relu"))
    assert relative_error(layer.weight.std().item(), math.sqrt(2.0 / (64 * 9))) < 0.05


def test_bias_is_filled_with_the_constant_and_weights_kept_without_a_weight_fn():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(5, 4), nn.ReLU(), nn.Conv2d(2, 3, 3), nn.Linear(4, 2, bias=False))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    touched = initialize(model, weight=None, bias=0.25)
    assert touched == 3
    assert torch.equal(model[0].bias, torch.full((4,), 0.25))
    assert torch.equal(model[2].bias, torch.full((3,), 0.25))
    for key, value in model.state_dict().items():
        if key.endswith("weight"):
            assert torch.equal(value, before[key]), key


def test_norm_layers_are_untouched():
    torch.manual_seed(0)
    model = CNN((1, 8, 8), 3, channels=(4, 8), batch_norm=True)
    norms = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    assert norms
    with torch.no_grad():  # make the norm state distinctive, so that any overwrite shows
        for norm in norms:
            norm.weight.uniform_(0.5, 1.5)
            norm.bias.uniform_(-1, 1)
            norm.running_mean.uniform_(-1, 1)
            norm.running_var.uniform_(0.5, 2)
    before = [{k: v.clone() for k, v in norm.state_dict().items()} for norm in norms]
    conv_before = model.features[0].weight.clone()
    touched = initialize(model, nn.init.xavier_normal_, bias=0.5)
    assert touched == 3  # two convs and the head
    for norm, state in zip(norms, before):
        for key, value in norm.state_dict().items():
            assert torch.equal(value, state[key]), key
    assert not torch.equal(model.features[0].weight, conv_before)
    assert torch.equal(model.head.bias, torch.full((3,), 0.5))


def big_model() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(32, 64, 3), nn.ReLU(), nn.Flatten(), nn.Linear(600, 400))


def fans(module: nn.Module) -> tuple[int, int]:
    receptive = module.weight[0, 0].numel() if module.weight.dim() > 2 else 1
    return module.weight.shape[1] * receptive, module.weight.shape[0] * receptive


def expected_weight_std(cfg, fan_in: int, fan_out: int) -> float:
    weight = cfg.weight
    name = weight._target_.rsplit(".", 1)[-1]
    if name == "normal_":
        return weight.std
    if name in ("xavier_normal_", "xavier_uniform_"):
        return weight.gain * math.sqrt(2.0 / (fan_in + fan_out))
    if name in ("kaiming_normal_", "kaiming_uniform_"):
        assert weight.nonlinearity == "relu"
        fan = fan_in if weight.mode == "fan_in" else fan_out
        return math.sqrt(2.0) / math.sqrt(fan)
    raise AssertionError(f"no expectation for {weight._target_}")


@pytest.mark.parametrize("name", INIT_FILES)
def test_apply_init_with_each_config_file(name):
    cfg = OmegaConf.load(CONFIGS / "init" / f"{name}.yaml")
    model = big_model()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    touched = apply_init(model, cfg)
    assert touched == 2
    layers = [model[0], model[3]]
    if cfg.weight is None:
        for key, value in model.state_dict().items():
            assert torch.equal(value, before[key]), key  # bit-identical: PyTorch's own init is kept
        return
    for layer in layers:
        fan_in, fan_out = fans(layer)
        expected = expected_weight_std(cfg, fan_in, fan_out)
        assert relative_error(layer.weight.std().item(), expected) < 0.05, (name, layer)
        if "uniform" in cfg.weight._target_:
            bound = math.sqrt(3.0) * expected  # U(-b, b) has std b / sqrt(3)
            assert layer.weight.abs().max().item() <= bound * (1 + 1e-6)
        if cfg.bias is not None:
            assert torch.equal(layer.bias, torch.full_like(layer.bias, cfg.bias))


def test_default_init_config_touches_nothing_on_a_cnn():
    model = CNN((3, 16, 16), 10, channels=(8, 16))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    apply_init(model, OmegaConf.load(CONFIGS / "init" / "default.yaml"))
    after = model.state_dict()
    assert all(torch.equal(after[k], before[k]) for k in before)


def test_apply_init_with_a_bias_only():
    model = big_model()
    weights = model[3].weight.clone()
    apply_init(model, OmegaConf.create({"weight": None, "bias": 0.1}))
    assert torch.equal(model[3].weight, weights)
    assert torch.allclose(model[3].bias, torch.full((400,), 0.1))


def test_apply_init_with_an_invalid_option_is_a_config_error():
    cfg = OmegaConf.load(CONFIGS / "init" / "kaiming_normal.yaml")
    cfg.weight.nonlinearity = "swishy"
    with pytest.raises(ConfigError, match=r"^init"):
        apply_init(big_model(), cfg)


def test_apply_init_with_a_bad_target_names_init_weight():
    cfg = OmegaConf.create({"weight": {"_target_": "torch.nn.init.no_such_init_", "_partial_": True}, "bias": 0.0})
    with pytest.raises(ConfigError, match=r"^init\.weight"):
        apply_init(big_model(), cfg)
