"""The plain models (MLP, CNN, VGG) and DropConnect: shapes, activations, norms, pools, regularizers, configs."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from trainlab.config import load_option
from torch import nn

from trainlab.transfer import TRANSFER_DEFAULTS
from trainlab.errors import ConfigError
from trainlab.models import build_model, count_parameters
from trainlab.models.cnn import CNN
from trainlab.models.dropconnect import DropConnectLinear
from trainlab.models.layers import ACTIVATIONS, NORMS, Maxout
from trainlab.models.mlp import MLP
from trainlab.models.vgg import VGG

CONFIGS = Path(__file__).resolve().parents[1] / "configs" / "model"
SHAPES = [(1, 28, 28), (3, 32, 32)]
OWN_CONFIGS = ["mlp", "mlp_deep", "cnn", "vgg"]

# small versions of each model, so the file stays fast
FACTORIES = {
    "mlp": lambda shape, n, **kw: MLP(shape, n, hidden=[16, 8], **kw),
    "cnn": lambda shape, n, **kw: CNN(shape, n, channels=[4, 8], **kw),
    "vgg": lambda shape, n, **kw: VGG(shape, n, cfg=[4, "M", 8, "M"], hidden=[8], **kw),
}


def batch(shape, n=4, seed=0):
    return torch.randn(n, *shape, generator=torch.Generator().manual_seed(seed))


def chained(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    for child in model.children():
        x = child(x)
    return x


# --- shapes, head, children -------------------------------------------------------------------------------


@pytest.mark.parametrize("name", FACTORIES)
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("num_classes", [10, 7])
def test_output_shape_and_head(name, shape, num_classes):
    torch.manual_seed(0)
    model = FACTORIES[name](shape, num_classes)
    assert model(batch(shape)).shape == (4, num_classes)
    assert type(model.head) is nn.Linear and model.head.out_features == num_classes
    names = [n for n, _ in model.named_children()]
    assert names[-1] == "head"
    # the top-level children, run one after the other, are the whole forward pass
    model.eval()
    x = batch(shape)
    assert torch.equal(chained(model, x), model(x))


@pytest.mark.parametrize("name", FACTORIES)
def test_named_children_in_forward_order(name):
    model = FACTORIES[name]((1, 8, 8), 3, dropout=0.1)
    names = [n for n, _ in model.named_children()]
    expected = {"mlp": ["flatten", "fc1", "act1", "drop1", "fc2", "act2", "drop2", "head"],
                "cnn": ["features", "pool", "dropout", "head"],
                "vgg": ["features", "pool", "fc", "dropout", "head"]}[name]
    assert names == expected
    if name == "mlp":  # a slice of the MLP is a plain Sequential, e.g. everything before the head
        body = model[:-1]
        assert type(body) is nn.Sequential and [n for n, _ in body.named_children()] == expected[:-1]
        assert body(batch((1, 8, 8))).shape == (4, 8)


# --- activations --------------------------------------------------------------------------------------------

ACTIVATION_CASES = [(name, {}) for name in sorted(ACTIVATIONS)] + [
    ("leaky_relu", {"negative_slope": 0.2}),
    ("elu", {"alpha": 0.5}),
    ("prelu", {"init": 0.1}),
    ("maxout", {"k": 2}),
    ("maxout", {"k": 3}),
    ("maxout", {}),
]


@pytest.mark.parametrize("name", ["mlp", "cnn"])
@pytest.mark.parametrize("activation, params", ACTIVATION_CASES, ids=lambda v: str(v) if v else "default")
def test_every_activation_builds_and_runs(name, activation, params):
    torch.manual_seed(0)
    model = FACTORIES[name]((1, 8, 8), 5, activation=activation, activation_params=params)
    out = model(batch((1, 8, 8)))
    assert out.shape == (4, 5) and torch.isfinite(out).all()
    cls = Maxout if activation == "maxout" else ACTIVATIONS[activation]
    body = model.features if name == "cnn" else model  # (the CNN's unused dropout is an nn.Identity too)
    used = [m for m in body.modules() if isinstance(m, cls)]
    assert len(used) == 2  # one per hidden layer / conv block, each its own module
    assert used[0] is not used[1]
    for key, value in params.items():  # the parameters reach the modules
        if key == "init":
            assert torch.allclose(used[0].weight, torch.tensor(value))
        else:
            assert getattr(used[0], key) == value


def test_activation_params_that_do_not_fit_name_the_key():
    with pytest.raises(ConfigError, match=r"model\.activation_params"):
        MLP((1, 4, 4), 3, activation="relu", activation_params={"alpha": 1.0})
    with pytest.raises(ConfigError, match=r"model\.activation_params\.k"):
        CNN((1, 4, 4), 3, channels=[4], activation="maxout", activation_params={"k": 1})
    with pytest.raises(ConfigError, match=r"model\.activation='swishy'"):
        VGG((1, 8, 8), 3, cfg=[4], activation="swishy")
    with pytest.raises(ConfigError, match=r"model\.activation='swishy'"):
        MLP((1, 4, 4), 3, hidden=[], activation="swishy")  # even with no hidden layer


@pytest.mark.parametrize("k", [2, 3])
def test_maxout_widths(k):
    params = {"k": k}
    mlp = MLP((1, 4, 4), 3, hidden=[5, 6], activation="maxout", activation_params=params)
    assert (mlp.fc1.in_features, mlp.fc1.out_features) == (16, 5 * k)
    assert (mlp.fc2.in_features, mlp.fc2.out_features) == (5, 6 * k)
    assert mlp.head.in_features == 6
    x = batch((1, 4, 4))
    assert mlp[:3](x).shape == (4, 5)  # flatten, fc1, act1: maxout reduces k*5 to 5

    cnn = CNN((1, 8, 8), 3, channels=[4, 6], activation="maxout", activation_params=params)
    convs = [m for m in cnn.features if isinstance(m, nn.Conv2d)]
    assert [(c.in_channels, c.out_channels) for c in convs] == [(1, 4 * k), (4, 6 * k)]
    assert cnn.features(batch((1, 8, 8))).shape == (4, 6, 4, 4)
    assert cnn.head.in_features == 6

    vgg = VGG((1, 8, 8), 3, cfg=[4, "M"], hidden=[5], activation="maxout", activation_params=params)
    assert vgg.features[0].out_channels == 4 * k and vgg.fc.fc1.out_features == 5 * k
    assert vgg.head.in_features == 5 and vgg(batch((1, 8, 8))).shape == (4, 3)


# --- norms --------------------------------------------------------------------------------------------------

NORM_TYPES = {"batch": (nn.BatchNorm1d, nn.BatchNorm2d), "group": (nn.GroupNorm,),
              "layer": (nn.LayerNorm, nn.GroupNorm), "none": ()}


@pytest.mark.parametrize("name", FACTORIES)
@pytest.mark.parametrize("norm", NORMS)
def test_each_norm_kind(name, norm):
    torch.manual_seed(0)
    model = FACTORIES[name]((1, 8, 8), 3, norm=norm)
    assert torch.isfinite(model(batch((1, 8, 8)))).all()
    norms = [m for m in model.modules() if isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d, nn.GroupNorm, nn.LayerNorm))]
    weighted = [m for m in model.modules() if isinstance(m, (nn.Linear, nn.Conv2d)) and m is not model.head]
    if norm == "none":
        assert not norms
    else:
        assert len(norms) == len(weighted) and all(isinstance(m, NORM_TYPES[norm]) for m in norms)
    # batch norm's shift makes the layer's bias redundant; the other norms keep it
    assert all((m.bias is None) == (norm == "batch") for m in weighted)
    assert model.head.bias is not None


def test_layer_norm_on_feature_maps_normalizes_over_channels_and_space():
    cnn = CNN((1, 8, 8), 3, channels=[4], norm="layer")
    norm = next(m for m in cnn.modules() if isinstance(m, nn.GroupNorm))
    assert norm.num_groups == 1
    mlp = MLP((1, 4, 4), 3, hidden=[6], norm="layer")
    assert isinstance(mlp.norm1, nn.LayerNorm) and mlp.norm1.normalized_shape == (6,)


@pytest.mark.parametrize("factory", [
    lambda: MLP((1, 4, 4), 3, norm="instance"),
    lambda: CNN((1, 4, 4), 3, channels=[4], norm="instance"),
    lambda: VGG((1, 4, 4), 3, cfg=[4], norm="instance"),
], ids=["mlp", "cnn", "vgg"])
def test_unknown_norm_names_the_key(factory):
    with pytest.raises(ConfigError, match=r"model\.norm='instance'.*batch"):
        factory()


def test_batch_norm_is_a_deprecated_alias_of_norm():
    with pytest.warns(DeprecationWarning, match="model.norm"):
        off = CNN((1, 8, 8), 3, channels=[4], batch_norm=False)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in off.modules())
    with pytest.warns(DeprecationWarning):
        on = CNN((1, 8, 8), 3, channels=[4], batch_norm=True)
    assert any(isinstance(m, nn.BatchNorm2d) for m in on.modules())
    with pytest.raises(ConfigError, match=r"model\.batch_norm"), pytest.warns(DeprecationWarning):
        CNN((1, 8, 8), 3, channels=[4], norm="group", batch_norm=True)


# --- CNN pooling, kernel size -------------------------------------------------------------------------------


@pytest.mark.parametrize("pool, cls", [("max", nn.MaxPool2d), ("avg", nn.AvgPool2d),
                                       ("fractional", nn.FractionalMaxPool2d)])
def test_pool_kinds(pool, cls):
    torch.manual_seed(0)
    model = CNN((1, 28, 28), 3, channels=[4, 4, 4], pool=pool)
    assert sum(isinstance(m, cls) for m in model.features) == 2
    x = batch((1, 28, 28))
    size = {"max": 7, "avg": 7, "fractional": 13}[pool]  # 28 -> 14 -> 7, or 28 -> 19 -> 13
    assert model.features(x).shape == (4, 4, size, size)
    model.train()
    first, second = model(x), model(x)
    if pool == "fractional":
        assert not torch.equal(first, second)  # new random pooling regions on every training call
    else:
        assert torch.equal(first, second)
    model.eval()
    assert torch.equal(model(x), model(x))  # evaluation is deterministic for every pool


def test_too_many_stages_for_the_input_names_the_key():
    with pytest.raises(ConfigError, match=r"model\.channels"):
        CNN((1, 4, 4), 3, channels=[4, 4, 4, 4])
    with pytest.raises(ConfigError, match=r"model\.cfg"):
        VGG((1, 4, 4), 3, cfg=[4, "M", 4, "M", 4, "M"])


@pytest.mark.parametrize("kernel_size", [1, 3, 5])
def test_kernel_size_keeps_the_spatial_size(kernel_size):
    model = CNN((1, 9, 9), 3, channels=[4], kernel_size=kernel_size)
    conv = model.features[0]
    assert conv.kernel_size == (kernel_size, kernel_size)
    assert model.features(batch((1, 9, 9))).shape == (4, 4, 9, 9)


@pytest.mark.parametrize("kwargs, key", [
    (dict(kernel_size=4), "kernel_size"), (dict(kernel_size=0), "kernel_size"),
    (dict(pool="stochastic"), "pool"), (dict(channels=[]), "channels"), (dict(blocks_per_stage=0), "channels"),
])
def test_cnn_bad_options_name_the_key(kwargs, key):
    with pytest.raises(ConfigError, match=rf"^model\.{key}"):
        CNN((1, 8, 8), 3, **kwargs)


# --- VGG ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("shape", SHAPES)
def test_vgg_flatten_classifier_sees_all_features(shape):
    model = VGG(shape, 10, cfg=[4, "M", 8, "M", 8, "M"], classifier="flatten", hidden=[])
    side = shape[1] // 8  # 28 -> 3, 32 -> 4 (floor at each pool)
    assert model.head.in_features == 8 * side * side
    assert model(batch(shape)).shape == (4, 10)
    avg = VGG(shape, 10, cfg=[4, "M", 8, "M", 8, "M"], classifier="avg", hidden=[])
    assert avg.head.in_features == 8


def test_vgg_layers_and_dropout_placement():
    model = VGG((3, 32, 32), 10, cfg=[8, 8, "M", 16, "M"], hidden=[32, 16], dropout=0.5, norm="none")
    convs = [m for m in model.features if isinstance(m, nn.Conv2d)]
    assert [(c.out_channels, c.kernel_size, c.padding) for c in convs] == [(8, (3, 3), (1, 1))] * 2 + [(16, (3, 3), (1, 1))]
    assert sum(isinstance(m, nn.MaxPool2d) for m in model.features) == 2
    # VGG's classifier: fc -> act -> dropout -> fc -> act -> dropout -> head
    assert [n for n, _ in model.fc.named_children()] == ["fc1", "act1", "drop1", "fc2", "act2"]
    assert isinstance(model.dropout, nn.Dropout) and model.dropout.p == 0.5
    assert [(m.in_features, m.out_features) for m in model.modules() if isinstance(m, nn.Linear)] == \
        [(16, 32), (32, 16), (16, 10)]


@pytest.mark.parametrize("kwargs, key", [
    (dict(cfg=[]), "cfg"), (dict(cfg=["M"]), "cfg"), (dict(cfg=[4, "X"]), "cfg"), (dict(cfg=[0]), "cfg"),
    (dict(hidden=[0]), "hidden"), (dict(classifier="max"), "classifier"),
])
def test_vgg_bad_options_name_the_key(kwargs, key):
    with pytest.raises(ConfigError, match=rf"^model\.{key}"):
        VGG((1, 8, 8), 3, **kwargs)


# --- dropout / dropconnect ----------------------------------------------------------------------------------


@pytest.mark.parametrize("name", FACTORIES)
@pytest.mark.parametrize("value", [-0.1, 1.0, 1.5])
def test_dropout_bounds(name, value):
    with pytest.raises(ConfigError, match=rf"^model\.dropout={value}: must be in \[0, 1\)"):
        FACTORIES[name]((1, 8, 8), 3, dropout=value)


@pytest.mark.parametrize("value", [-0.1, 1.0, 2.0])
def test_dropconnect_bounds(value):
    with pytest.raises(ConfigError, match=rf"^model\.dropconnect={value}: must be in \[0, 1\)"):
        MLP((1, 4, 4), 3, dropconnect=value)
    with pytest.raises(ConfigError, match=r"^model\.dropconnect"):
        DropConnectLinear(4, 3, p=value)


def test_mlp_dropconnect_on_hidden_layers_only():
    model = MLP((1, 4, 4), 3, hidden=[8, 8], dropconnect=0.3)
    assert [type(m) for m in model.modules() if isinstance(m, nn.Linear)] == [DropConnectLinear] * 2 + [nn.Linear]
    assert model.fc1.p == 0.3 and type(model.head) is nn.Linear
    assert all(type(m) is nn.Linear for m in MLP((1, 4, 4), 3, hidden=[8]).modules() if isinstance(m, nn.Linear))


def layer_pair(p=0.5):
    torch.manual_seed(0)
    layer = DropConnectLinear(20, 10, p=p)
    plain = nn.Linear(20, 10)
    plain.load_state_dict(layer.state_dict())  # same parameter names: interchangeable state dicts
    return layer, plain


def test_dropconnect_train_is_random_and_eval_is_a_plain_linear():
    layer, plain = layer_pair()
    x = batch((20,), n=8)
    layer.train()
    assert not torch.equal(layer(x), layer(x))
    layer.eval()
    assert torch.equal(layer(x), layer(x))
    assert torch.equal(layer(x), plain(x))


def test_dropconnect_drops_weights_not_units():
    layer, _ = layer_pair(p=0.5)
    layer.train()
    eye = torch.eye(20)  # output row i = column i of the effective weight (+ bias)
    effective = (layer(eye) - layer.bias).T
    kept = effective != 0
    assert 0.3 < kept.float().mean() < 0.7  # about half of the weights
    assert torch.allclose(effective[kept], 2 * layer.weight[kept])  # kept weights scaled by 1 / (1 - p)
    assert kept.any(dim=1).all() and (~kept).any(dim=1).all()  # single weights go, not whole units


def test_dropconnect_train_expectation_matches_eval():
    layer, _ = layer_pair(p=0.5)
    x = batch((20,), n=4)
    with torch.no_grad():
        layer.eval()
        expected = layer(x)
        layer.train()
        mean = torch.stack([layer(x) for _ in range(4000)]).mean(0)
    assert (mean - expected).abs().max() < 0.1 * expected.abs().max()


def test_dropconnect_gradients_reach_kept_weights_only():
    layer, _ = layer_pair(p=0.5)
    layer.train()
    layer(torch.ones(1, 20)).sum().backward()
    grad = layer.weight.grad
    assert ((grad == 0) | (grad == 2)).all() and (grad == 0).any() and (grad == 2).any()


def test_mlp_with_dropconnect_trains_and_evaluates():
    torch.manual_seed(0)
    model = MLP((1, 4, 4), 3, hidden=[16], dropconnect=0.5)
    x = batch((1, 4, 4))
    model.train()
    assert not torch.equal(model(x), model(x))
    model.eval()
    assert torch.equal(model(x), model(x))


# --- parameter counts ---------------------------------------------------------------------------------------


def test_mlp_parameter_counts_by_hand():
    d, h1, h2, c = 2 * 3 * 2, 5, 4, 3
    plain = (d * h1 + h1) + (h1 * h2 + h2) + (h2 * c + c)
    assert count_parameters(MLP((2, 3, 2), c, hidden=[h1, h2])) == plain
    assert count_parameters(MLP((2, 3, 2), c, hidden=[h1, h2], dropconnect=0.5, dropout=0.5)) == plain
    # batch norm: no Linear bias, a scale and a shift per unit
    assert count_parameters(MLP((2, 3, 2), c, hidden=[h1, h2], norm="batch")) == \
        d * h1 + 2 * h1 + h1 * h2 + 2 * h2 + h2 * c + c
    # maxout with k=3: each hidden Linear is 3 times wider; the next layer sees the reduced width
    assert count_parameters(MLP((2, 3, 2), c, hidden=[h1, h2], activation="maxout", activation_params={"k": 3})) == \
        (d * 3 * h1 + 3 * h1) + (h1 * 3 * h2 + 3 * h2) + (h2 * c + c)
    # prelu: one learned slope per layer
    assert count_parameters(MLP((2, 3, 2), c, hidden=[h1, h2], activation="prelu")) == plain + 2
    assert count_parameters(MLP((2, 3, 2), c, hidden=[])) == d * c + c


def test_mlp_bad_hidden_names_the_key():
    with pytest.raises(ConfigError, match=r"^model\.hidden"):
        MLP((1, 4, 4), 3, hidden=[8, 0])


# --- configs ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", OWN_CONFIGS)
@pytest.mark.parametrize("shape", SHAPES)
def test_config_files_build(name, shape):
    cfg = load_option("model", name)
    assert {"_target_", "activation", "activation_params", "norm", "dropout"} <= set(cfg.keys())
    model = build_model(cfg, shape, 7)
    model.eval()
    with torch.no_grad():
        assert model(batch(shape, n=2)).shape == (2, 7)
    assert type(model.head) is nn.Linear and model.head.out_features == 7


def test_config_defaults():
    assert load_option("model", "mlp").hidden == [50]
    assert list(load_option("model", "mlp_deep").hidden) == [500] * 10
    vgg = build_model(load_option("model", "vgg"), (3, 32, 32), 10)
    assert 300_000 <= count_parameters(vgg) <= 2_000_000


@pytest.mark.parametrize("name", OWN_CONFIGS)
def test_config_keys_are_the_constructor_keywords(name):
    """Every keyword of the model is in its YAML (Hydra struct mode: only existing keys can be overridden)."""
    import inspect

    cfg = load_option("model", name)
    cls = type(build_model(cfg, (1, 28, 28), 10))
    keywords = {p.name for p in inspect.signature(cls.__init__).parameters.values()
                if p.kind is inspect.Parameter.KEYWORD_ONLY and p.name != "batch_norm"}
    assert keywords == set(cfg.keys()) - {"_target_"} - set(TRANSFER_DEFAULTS)  # transfer keys: not the class's


def test_config_overrides_reach_the_model():
    cfg = load_option("model", "cnn")
    cfg.merge_with({"activation": "leaky_relu", "activation_params": {"negative_slope": 0.3}, "norm": "group",
                    "pool": "avg", "kernel_size": 5, "dropout": 0.2})
    model = build_model(cfg, (3, 32, 32), 10)
    assert all(m.negative_slope == 0.3 for m in model.modules() if isinstance(m, nn.LeakyReLU))
    assert any(isinstance(m, nn.GroupNorm) for m in model.modules())
    assert any(isinstance(m, nn.AvgPool2d) for m in model.modules())
    assert model.features[0].kernel_size == (5, 5) and model.dropout.p == 0.2
    bad = load_option("model", "mlp")
    bad.dropconnect = 1.0
    with pytest.raises(ConfigError, match=r"^model\.dropconnect"):
        build_model(bad, (1, 28, 28), 10)

