"""Models: MLP and CNN shapes, options and config errors; build_model from a config node."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from trainlab.config import load_option
from torch import nn

from trainlab.errors import ConfigError
from trainlab.models import build_model, count_parameters
from trainlab.models.cnn import CNN
from trainlab.models.layers import ACTIVATIONS, make_activation
from trainlab.models.mlp import MLP

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
SHAPES = [(1, 28, 28), (3, 32, 32)]


def batch(shape, n=3):
    return torch.randn(n, *shape, generator=torch.Generator().manual_seed(0))


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("num_classes", [2, 10, 17])
def test_mlp_output_shape(shape, num_classes):
    model = MLP(shape, num_classes, hidden=(16, 8))
    assert model(batch(shape)).shape == (3, num_classes)
    first = next(m for m in model.modules() if isinstance(m, nn.Linear))
    assert first.in_features == math.prod(shape)


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("num_classes", [2, 10, 17])
def test_cnn_output_shape(shape, num_classes):
    model = CNN(shape, num_classes, channels=(4, 8, 8))
    assert model(batch(shape)).shape == (3, num_classes)
    first = next(m for m in model.modules() if isinstance(m, nn.Conv2d))
    assert first.in_channels == shape[0]
    assert model.head.in_features == 8 and model.head.out_features == num_classes


def test_mlp_layer_sizes_and_parameter_count():
    model = MLP((1, 4, 5), 3, hidden=(7, 6))
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linears] == [(20, 7), (7, 6), (6, 3)]
    assert count_parameters(model) == (20 * 7 + 7) + (7 * 6 + 6) + (6 * 3 + 3)


def test_cnn_stages_and_pools():
    model = CNN((1, 16, 16), 5, channels=(4, 6, 8), blocks_per_stage=2)
    convs = [m for m in model.features if isinstance(m, nn.Conv2d)]
    assert [c.out_channels for c in convs] == [4, 4, 6, 6, 8, 8]
    assert sum(isinstance(m, nn.MaxPool2d) for m in model.features) == 2  # between the 3 stages
    # 16 -> 8 -> 4 spatially after the two pools
    assert model.features(torch.zeros(1, 1, 16, 16)).shape == (1, 8, 4, 4)


@pytest.mark.parametrize("batch_norm", [True, False])
def test_cnn_conv_bias_only_without_batch_norm(batch_norm):
    model = CNN((1, 8, 8), 3, channels=(4, 8), norm="batch" if batch_norm else "none")
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    norms = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    assert convs
    if batch_norm:
        assert all(c.bias is None for c in convs) and len(norms) == len(convs)
    else:
        assert all(c.bias is not None for c in convs) and not norms


@pytest.mark.parametrize("factory", [
    lambda **kw: MLP((1, 4, 4), 3, hidden=(5,), **kw),
    lambda **kw: CNN((1, 4, 4), 3, channels=(4,), **kw),
], ids=["mlp", "cnn"])
@pytest.mark.parametrize("name", sorted(ACTIVATIONS))
def test_every_named_activation_is_used(factory, name):
    model = factory(activation=name)
    assert any(isinstance(m, ACTIVATIONS[name]) for m in model.modules())
    assert torch.isfinite(model(torch.randn(2, 1, 4, 4))).all()


@pytest.mark.parametrize("factory", [
    lambda: MLP((1, 4, 4), 3, activation="swishy"),
    lambda: CNN((1, 4, 4), 3, channels=(4,), activation="swishy"),
    lambda: make_activation("swishy"),
], ids=["mlp", "cnn", "layers"])
def test_unknown_activation_names_the_key(factory):
    with pytest.raises(ConfigError, match=r"model\.activation='swishy'.*relu"):
        factory()


@pytest.mark.parametrize("dropout", [1.0, 1.5, -0.1])
@pytest.mark.parametrize("cls", [MLP, CNN])
def test_dropout_outside_0_1_is_rejected(cls, dropout):
    with pytest.raises(ConfigError, match=r"model\.dropout"):
        cls((1, 4, 4), 3, dropout=dropout)


def test_dropout_is_used_when_set():
    mlp = MLP((1, 4, 4), 3, hidden=(8, 8), dropout=0.5)
    assert [m.p for m in mlp.modules() if isinstance(m, nn.Dropout)] == [0.5, 0.5]
    assert not any(isinstance(m, nn.Dropout) for m in MLP((1, 4, 4), 3, hidden=(8,)).modules())
    cnn = CNN((1, 4, 4), 3, channels=(4,), dropout=0.25)
    assert isinstance(cnn.dropout, nn.Dropout) and cnn.dropout.p == 0.25
    # dropout is active in train mode only
    cnn.eval()
    x = torch.randn(4, 1, 4, 4)
    assert torch.equal(cnn(x), cnn(x))


@pytest.mark.parametrize("kwargs", [dict(channels=()), dict(channels=(4, 0)), dict(blocks_per_stage=0)])
def test_cnn_rejects_empty_stages(kwargs):
    with pytest.raises(ConfigError, match=r"model\.channels"):
        CNN((1, 8, 8), 3, **kwargs)


def test_mlp_rejects_empty_layers():
    with pytest.raises(ConfigError, match=r"model\.hidden"):
        MLP((1, 4, 4), 3, hidden=(8, 0))


@pytest.mark.parametrize("name, cls", [("mlp", MLP), ("cnn", CNN)])
def test_build_model_from_the_config_files(name, cls):
    cfg = load_option("model", name)
    model = build_model(cfg, (1, 28, 28), 10)
    assert isinstance(model, cls)
    assert model(torch.randn(2, 1, 28, 28)).shape == (2, 10)


def test_build_model_passes_the_config_values():
    cfg = OmegaConf.create({"_target_": "trainlab.models.mlp.MLP", "hidden": [12], "activation": "tanh"})
    model = build_model(cfg, (3, 8, 8), 4)
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linears] == [(192, 12), (12, 4)]
    assert any(isinstance(m, nn.Tanh) for m in model.modules())


def test_build_model_with_a_bad_target_is_a_config_error():
    cfg = OmegaConf.create({"_target_": "trainlab.models.mlp.NoSuchModel"})
    with pytest.raises(ConfigError, match=r"^model"):
        build_model(cfg, (1, 28, 28), 10)


def test_build_model_with_a_bad_option_names_the_key():
    cfg = load_option("model", "cnn")
    cfg.activation = "swishy"
    with pytest.raises(ConfigError, match=r"model\.activation"):
        build_model(cfg, (1, 28, 28), 10)


def test_build_model_requires_a_module():
    cfg = OmegaConf.create({"_target_": "builtins.dict"})
    with pytest.raises(TypeError, match="not a torch.nn.Module"):
        build_model(cfg, (1, 28, 28), 10)
