"""Weight initialization: the statistics of each initializer, the config files, what is left alone."""

from __future__ import annotations

import functools
import math
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from trainlab.config import load_option
from torch import nn

from trainlab.errors import ConfigError
from trainlab.init import INITIALIZED, apply_init, initialize, needs_batch
from trainlab.models.cnn import CNN
from trainlab.models.mlp import MLP

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
    model = CNN((1, 8, 8), 3, channels=(4, 8), norm="batch")
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
    return nn.Sequential(nn.Conv2d(32, 64, 3), nn.ReLU(), nn.Flatten(), nn.Linear(576, 400))  # input [N, 32, 5, 5]


def fans(module: nn.Module) -> tuple[int, int]:
    receptive = module.weight[0, 0].numel() if module.weight.dim() > 2 else 1
    return module.weight.shape[1] * receptive, module.weight.shape[0] * receptive


def load(name: str):
    return load_option("init", name)


RELU_GAIN = math.sqrt(2.0)


def expected_weight_std(cfg, fan_in: int, fan_out: int, out_features: int) -> float:
    """The std each config file's weights should have for a ReLU model (gain/nonlinearity auto -> relu)."""
    weight = cfg.weight
    name = weight._target_.rsplit(".", 1)[-1]
    if name == "normal_":
        return weight.std
    if name == "uniform_":
        return (weight.b - weight.a) / math.sqrt(12.0)
    if name in ("xavier_normal_", "xavier_uniform_"):
        gain = RELU_GAIN if weight.gain == "auto" else weight.gain
        return gain * math.sqrt(2.0 / (fan_in + fan_out))
    if name in ("kaiming_normal_", "kaiming_uniform_"):
        gain = {"auto": RELU_GAIN, "relu": RELU_GAIN, "linear": 1.0}[weight.nonlinearity]
        return gain / math.sqrt(fan_in if weight.mode == "fan_in" else fan_out)
    if name == "orthogonal_":  # flattened [out, fan_in]: mean square gain^2 / max(out, fan_in)
        gain = RELU_GAIN if weight.gain == "auto" else weight.gain
        return gain / math.sqrt(max(fan_in, out_features))
    raise AssertionError(f"no expectation for {weight._target_}")


def test_every_requested_option_has_a_config_file():
    wanted = {"default", "zeros", "constant", "normal", "uniform", "xavier_normal", "xavier_uniform", "kaiming_normal",
              "kaiming_uniform", "lecun_normal", "lecun_uniform", "orthogonal", "lsuv"}
    assert wanted <= set(INIT_FILES)


@pytest.mark.parametrize("name", INIT_FILES)
def test_apply_init_with_each_config_file(name):
    cfg = load(name)
    model = big_model()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    batch = torch.randn(4, 32, 5, 5) if cfg.get("lsuv") else None
    report = apply_init(model, cfg, batch=batch)
    assert report["layers"] == 2
    layers = [model[0], model[3]]
    if cfg.weight is None:
        for key, value in model.state_dict().items():
            assert torch.equal(value, before[key]), key  # bit-identical: PyTorch's own init is kept
        return
    for layer in layers:
        if cfg.bias is not None:
            assert torch.equal(layer.bias, torch.full_like(layer.bias, cfg.bias))
        if cfg.get("lsuv") or name in ("zeros", "constant"):
            continue  # checked by their own tests
        fan_in, fan_out = fans(layer)
        expected = expected_weight_std(cfg, fan_in, fan_out, layer.weight.shape[0])
        assert relative_error(layer.weight.std().item(), expected) < 0.05, (name, layer)
        if "uniform" in cfg.weight._target_:
            bound = math.sqrt(3.0) * expected  # U(-b, b) has std b / sqrt(3)
            assert layer.weight.abs().max().item() <= bound * (1 + 1e-6)


def small_mlp(activation: str = "relu") -> MLP:
    torch.manual_seed(0)
    return MLP((1, 8, 8), 5, hidden=(32, 16), activation=activation)


def small_cnn(batch_norm: bool = True) -> CNN:
    torch.manual_seed(0)
    return CNN((3, 8, 8), 5, channels=(8, 16), norm="batch" if batch_norm else "none")


@pytest.mark.parametrize("name", INIT_FILES)
@pytest.mark.parametrize("kind", ["mlp", "cnn"])
def test_each_config_file_applies_to_the_mlp_and_the_cnn(name, kind):
    model = small_mlp() if kind == "mlp" else small_cnn()
    batch = torch.randn(16, 1, 8, 8) if kind == "mlp" else torch.randn(16, 3, 8, 8)
    report = apply_init(model, load(name), batch=batch)
    assert report["layers"] == 3
    assert torch.isfinite(model(batch)).all()


def test_default_init_config_touches_nothing_on_a_cnn():
    model = CNN((3, 16, 16), 10, channels=(8, 16))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    apply_init(model, load("default"))
    after = model.state_dict()
    assert all(torch.equal(after[k], before[k]) for k in before)


def test_default_init_config_touches_nothing_on_an_mlp_whatever_the_activation():
    model = small_mlp("tanh")
    before = {k: v.clone() for k, v in model.state_dict().items()}
    report = apply_init(model, load("default"), activation="tanh")
    assert report["weight"] is None and report["bias"] is None
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())


def test_apply_init_with_a_bias_only():
    model = big_model()
    weights = model[3].weight.clone()
    apply_init(model, OmegaConf.create({"weight": None, "bias": 0.1}))
    assert torch.equal(model[3].weight, weights)
    assert torch.allclose(model[3].bias, torch.full((400,), 0.1))


# ---------------------------------------------------------------------------- statistics per formula


def init_big(cfg_name: str, layer: nn.Module, **overrides) -> nn.Module:
    cfg = load(cfg_name)
    for key, value in overrides.items():
        OmegaConf.update(cfg, key, value)
    torch.manual_seed(0)
    activation = overrides.pop("activation", None)
    apply_init(layer, cfg, **({"activation": activation} if activation else {}))
    return layer


def test_kaiming_normal_fan_out_on_a_conv():
    torch.manual_seed(0)
    layer = nn.Conv2d(64, 128, 3)  # fan_out = 128 * 3 * 3
    initialize(layer, functools.partial(nn.init.kaiming_normal_, mode="fan_out", nonlinearity="relu"))
    assert relative_error(layer.weight.std().item(), math.sqrt(2.0 / (128 * 9))) < 0.05


@pytest.mark.parametrize("name", ["kaiming_normal", "kaiming_uniform"])
@pytest.mark.parametrize("activation, params, gain", [
    ("relu", None, math.sqrt(2.0)),
    ("leaky_relu", {"negative_slope": 0.1}, math.sqrt(2.0 / (1 + 0.1 ** 2))),
    ("leaky_relu", None, math.sqrt(2.0 / (1 + 0.01 ** 2))),  # nn.LeakyReLU's default slope
    ("tanh", None, 5.0 / 3.0),
])
def test_he_std_follows_the_activation_with_nonlinearity_auto(name, activation, params, gain):
    torch.manual_seed(0)
    layer = nn.Linear(1000, 1000)
    report = apply_init(layer, load(name), activation=activation, activation_params=params)
    assert relative_error(layer.weight.std().item(), gain / math.sqrt(1000)) < 0.05
    if activation == "leaky_relu":
        assert report["weight"]["nonlinearity"] == "leaky_relu"
        assert report["weight"]["a"] == pytest.approx((params or {}).get("negative_slope", 0.01))
    if name.endswith("uniform"):
        assert layer.weight.abs().max().item() <= gain * math.sqrt(3.0 / 1000) * (1 + 1e-6)


def test_an_explicit_nonlinearity_is_kept_whatever_the_activation():
    cfg = load("kaiming_normal")
    cfg.weight.nonlinearity = "tanh"
    cfg.weight.mode = "fan_out"
    torch.manual_seed(0)
    layer = nn.Linear(500, 1000)  # fan_out 1000
    report = apply_init(layer, cfg, activation="relu")
    assert report["weight"]["nonlinearity"] == "tanh"
    assert relative_error(layer.weight.std().item(), (5.0 / 3.0) / math.sqrt(1000)) < 0.05


def test_activation_params_may_be_a_dict_config_as_in_cfg_model():
    model_cfg = OmegaConf.create({"activation": "leaky_relu", "activation_params": {"negative_slope": 0.2}})
    report = apply_init(nn.Linear(10, 10), load("xavier_normal"), model_cfg.activation, model_cfg.activation_params)
    assert report["weight"]["gain"] == pytest.approx(math.sqrt(2.0 / 1.04))
    report = apply_init(nn.Linear(10, 10), load("orthogonal"), "prelu")  # nn.PReLU starts at slope 0.25
    assert report["weight"]["gain"] == pytest.approx(math.sqrt(2.0 / 1.0625))


def test_needs_batch_only_for_lsuv():
    assert [name for name in INIT_FILES if needs_batch(load(name))] == ["lsuv"]


def test_kaiming_with_an_explicit_leaky_relu_and_a_auto_takes_the_slope():
    cfg = load("kaiming_normal")
    cfg.weight.nonlinearity = "leaky_relu"
    cfg.weight.a = "auto"
    torch.manual_seed(0)
    layer = nn.Linear(1000, 1000)
    report = apply_init(layer, cfg, activation="leaky_relu", activation_params={"negative_slope": 0.3})
    assert report["weight"]["a"] == 0.3
    assert relative_error(layer.weight.std().item(), math.sqrt(2.0 / 1.09) / math.sqrt(1000)) < 0.05


@pytest.mark.parametrize("activation, gain", [
    ("relu", math.sqrt(2.0)), ("tanh", 5.0 / 3.0), ("selu", 0.75), ("sigmoid", 1.0), ("identity", 1.0),
    ("gelu", math.sqrt(2.0)),  # ReLU-like per layers.GAIN_NONLINEARITY
])
def test_xavier_gain_auto_follows_the_activation(activation, gain):
    torch.manual_seed(0)
    layer = nn.Linear(1000, 1000)
    report = apply_init(layer, load("xavier_normal"), activation=activation)
    assert report["weight"]["gain"] == pytest.approx(gain)
    assert relative_error(layer.weight.std().item(), gain * math.sqrt(2.0 / 2000)) < 0.05


def test_an_explicit_gain_is_kept_whatever_the_activation():
    cfg = load("xavier_uniform")
    cfg.weight.gain = 1.0
    torch.manual_seed(0)
    layer = nn.Linear(1000, 1000)
    apply_init(layer, cfg, activation="tanh")
    bound = math.sqrt(6.0 / 2000)
    assert relative_error(layer.weight.std().item(), bound / math.sqrt(3.0)) < 0.05
    assert layer.weight.abs().max().item() <= bound * (1 + 1e-6)


@pytest.mark.parametrize("name", ["lecun_normal", "lecun_uniform"])
def test_lecun_variance_is_one_over_fan_in_whatever_the_activation(name):
    torch.manual_seed(0)
    layer = nn.Linear(800, 1000)  # fan_in 800, fan_out 1000
    apply_init(layer, load(name), activation="relu")  # no gain for LeCun
    assert relative_error(layer.weight.std().item(), math.sqrt(1.0 / 800)) < 0.05
    if name == "lecun_uniform":
        assert layer.weight.abs().max().item() <= math.sqrt(3.0 / 800) * (1 + 1e-6)
    torch.manual_seed(0)
    conv = nn.Conv2d(64, 128, 3)  # fan_in 64 * 9
    apply_init(conv, load(name), activation="selu")
    assert relative_error(conv.weight.std().item(), math.sqrt(1.0 / (64 * 9))) < 0.05


def test_normal_std_and_uniform_bounds():
    torch.manual_seed(0)
    layer = nn.Linear(1000, 1000)
    cfg = load("normal")
    cfg.weight.std = 0.02
    apply_init(layer, cfg)
    assert relative_error(layer.weight.std().item(), 0.02) < 0.05
    assert abs(layer.weight.mean().item()) < 0.05 * 0.02
    cfg = load("uniform")
    cfg.weight.a, cfg.weight.b = -0.1, 0.3
    apply_init(layer, cfg)
    assert layer.weight.min().item() >= -0.1 and layer.weight.max().item() <= 0.3
    assert layer.weight.min().item() < -0.099 and layer.weight.max().item() > 0.299  # fills the interval
    assert relative_error(layer.weight.mean().item(), 0.1) < 0.05
    assert relative_error(layer.weight.std().item(), 0.4 / math.sqrt(12)) < 0.05


@pytest.mark.parametrize("activation, gain", [("identity", 1.0), ("relu", math.sqrt(2.0)), ("tanh", 5.0 / 3.0)])
def test_orthogonal_rows_are_orthogonal_with_norm_gain(activation, gain):
    torch.manual_seed(0)
    wide = nn.Linear(600, 300)  # weight [300, 600]: rows <= cols
    conv = nn.Conv2d(16, 32, 3)  # weight [32, 16*3*3 = 144] flattened
    tall = nn.Linear(100, 250)  # weight [250, 100]: columns are orthogonal instead
    for layer in (wide, conv, tall):
        apply_init(layer, load("orthogonal"), activation=activation)
    for layer in (wide, conv):
        w = layer.weight.flatten(1)
        assert torch.allclose(w @ w.T, gain ** 2 * torch.eye(w.shape[0]), atol=1e-4), layer
    w = tall.weight
    assert torch.allclose(w.T @ w, gain ** 2 * torch.eye(w.shape[1]), atol=1e-4)


def test_weights_are_drawn_the_same_in_any_memory_format():
    a, b = small_cnn(), small_cnn().to(memory_format=torch.channels_last)
    for model in (a, b):
        torch.manual_seed(1)
        apply_init(model, load("orthogonal"))  # orthogonal_ reshapes: needs a contiguous tensor
    for (key, x), y in zip(a.state_dict().items(), b.state_dict().values()):
        assert torch.equal(x, y), key


# ------------------------------------------------------------------------------------------ symmetry


def hidden_linears(model: nn.Module) -> list[nn.Linear]:
    return [m for m in model.modules() if isinstance(m, nn.Linear)][:-1]


@pytest.mark.parametrize("name", ["zeros", "constant"])
def test_zeros_and_constant_make_every_hidden_unit_the_same(name):
    model = small_mlp("tanh")
    apply_init(model, load(name), activation="tanh")
    outputs = []
    handles = [layer.register_forward_hook(lambda m, i, o: outputs.append(o)) for layer in hidden_linears(model)]
    x = torch.randn(32, 1, 8, 8)
    nn.functional.cross_entropy(model(x), torch.randint(0, 5, (32,))).backward()
    for handle in handles:
        handle.remove()
    for layer, out in zip(hidden_linears(model), outputs):
        assert torch.equal(layer.weight, layer.weight[:1].expand_as(layer.weight))  # identical rows
        assert torch.allclose(out, out[:, :1].expand_as(out))  # every unit computes the same thing
        grad = layer.weight.grad
        assert torch.allclose(grad, grad[:1].expand_as(grad))  # ... and learns the same thing
    if name == "zeros":
        assert all(m.weight.abs().sum() == 0 for m in model.modules() if isinstance(m, INITIALIZED))
    else:
        assert all(torch.all(m.weight == 0.01) for m in model.modules() if isinstance(m, INITIALIZED))


# ---------------------------------------------------------------------------------- head and residual


class ResidualBlock(nn.Module):
    """A tiny residual block, x + norm2(conv2(relu(norm1(conv1(x))))), whose `last_norm` is norm2, or
    conv2 when there is no norm (as in a pre-activation block): the layer whose zero weight (and bias)
    makes the block the identity."""

    def __init__(self, channels: int, norm: str):
        super().__init__()
        make = {"batch": lambda: nn.BatchNorm2d(channels), "group": lambda: nn.GroupNorm(2, channels),
                "none": nn.Identity}[norm]
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
        self.norm1 = nn.BatchNorm2d(channels)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1, bias=norm == "none")
        self.norm2 = make()

    @property
    def last_norm(self) -> nn.Module:
        return self.conv2 if isinstance(self.norm2, nn.Identity) else self.norm2

    def forward(self, x):
        return x + self.norm2(self.conv2(torch.relu(self.norm1(self.conv1(x)))))


class AbstractBlock(nn.Module):
    @property
    def last_norm(self) -> nn.Module:
        raise NotImplementedError


class TinyResNet(nn.Module):
    def __init__(self, norm: str = "batch"):
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, padding=1)
        self.blocks = nn.Sequential(ResidualBlock(8, norm), ResidualBlock(8, norm))
        self.pool = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.head = nn.Linear(8, 5)

    def forward(self, x):
        return self.head(self.pool(self.blocks(torch.relu(self.stem(x)))))


def with_flags(name: str, **flags):
    cfg = load(name)
    for key, value in flags.items():
        cfg[key] = value
    return cfg


@pytest.mark.parametrize("norm", ["batch", "group", "none"])
@pytest.mark.parametrize("name", ["default", "kaiming_normal", "lsuv"])
def test_zero_init_residual_zeros_every_last_norm_and_blocks_start_as_identity(norm, name):
    torch.manual_seed(0)
    model = TinyResNet(norm)
    batch = torch.randn(16, 3, 6, 6)
    report = apply_init(model, with_flags(name, zero_init_residual=True), batch=batch)
    assert report["zeroed_residual"] == 2
    for block in model.blocks:
        assert torch.equal(block.last_norm.weight, torch.zeros_like(block.last_norm.weight))
        if block.last_norm.bias is not None:
            assert torch.equal(block.last_norm.bias, torch.zeros_like(block.last_norm.bias))
        assert torch.equal(block.norm1.weight, torch.ones(8))  # other norms untouched
        assert block.conv1.weight.abs().sum() > 0
    if name == "lsuv":  # a zeroed conv (last_norm when no norm follows it) is left out, not scaled to variance 1
        skipped = {"blocks.0.conv2", "blocks.1.conv2"} if norm == "none" else set()
        assert set(report["lsuv_iterations"]) == {n for n, m in model.named_modules()
                                                  if isinstance(m, INITIALIZED)} - skipped
    x = torch.randn(2, 8, 6, 6)
    for block in model.blocks:
        assert torch.equal(block(x), x)


def test_zero_init_residual_skips_models_without_last_norm_weights():
    for model in (small_cnn(), small_mlp(), nn.Sequential(AbstractBlock(), nn.Linear(3, 3))):
        before = {k: v.clone() for k, v in model.state_dict().items()}
        report = apply_init(model, with_flags("default", zero_init_residual=True))
        assert report["zeroed_residual"] == 0
        assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())


@pytest.mark.parametrize("name", ["default", "kaiming_uniform", "lsuv"])
def test_zero_init_head_zeros_the_head_weight(name):
    model = small_cnn()
    batch = torch.randn(8, 3, 8, 8)
    report = apply_init(model, with_flags(name, zero_init_head=True), batch=batch)
    assert report["zeroed_head"]
    assert torch.equal(model.head.weight, torch.zeros_like(model.head.weight))
    assert model.features[0].weight.abs().sum() > 0
    if name == "lsuv":
        assert "head" not in report["lsuv_iterations"]  # its output is zero: nothing to scale
    model.eval()
    assert torch.allclose(model(batch), model.head.bias.expand(8, 5))


def test_zero_init_head_without_a_head_names_the_key_and_changes_nothing():
    model = big_model()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(ConfigError, match=r"^init\.zero_init_head=true: Sequential has no `head`"):
        apply_init(model, with_flags("kaiming_normal", zero_init_head=True))
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())


# ----------------------------------------------------------------------------------------------- LSUV


def output_variances(model: nn.Module, batch: torch.Tensor) -> dict[str, float]:
    """Each linear/conv layer's output variance on `batch`, with the model in eval mode."""
    variances: dict[str, float] = {}

    def hook(name: str):
        def record(module, inputs, output):
            variances.setdefault(name, output.var().item())  # the first call (returns None: output kept)
        return record

    handles = [module.register_forward_hook(hook(name))
               for name, module in model.named_modules() if isinstance(module, INITIALIZED)]
    training = model.training
    model.eval()
    with torch.no_grad():
        model(batch)
    model.train(training)
    for handle in handles:
        handle.remove()
    return variances


@pytest.mark.parametrize("kind", ["deep_tanh_mlp", "cnn", "cnn_without_bn", "resnet", "deep_dropconnect_mlp"])
def test_lsuv_gives_every_layer_unit_output_variance(kind):
    torch.manual_seed(0)
    if kind == "deep_tanh_mlp":
        model, activation = MLP((1, 12, 12), 10, hidden=(128,) * 10, activation="tanh"), "tanh"
        batch = torch.randn(128, 1, 12, 12)
    elif kind == "deep_dropconnect_mlp":  # DropConnectLinear (an nn.Linear subclass) and dropout, off in eval
        model = MLP((1, 12, 12), 10, hidden=(64,) * 6, activation="relu", dropout=0.5, dropconnect=0.5)
        activation, batch = "relu", torch.randn(128, 1, 12, 12)
    else:
        model = {"cnn": lambda: CNN((3, 12, 12), 10, channels=(8, 16, 32), blocks_per_stage=2),
                 "cnn_without_bn": lambda: CNN((3, 12, 12), 10, channels=(8, 16), norm="none"),
                 "resnet": TinyResNet}[kind]()
        activation = "relu"
        batch = torch.randn(64, 3, 12, 12)
    cfg = load("lsuv")
    tol = cfg.lsuv.tol
    running = {k: v.clone() for k, v in model.state_dict().items() if "running" in k or "num_batches" in k}
    report = apply_init(model, cfg, activation=activation, batch=batch)
    variances = output_variances(model, batch)
    assert set(report["lsuv_iterations"]) == set(variances) and len(variances) == report["layers"]
    for name, var in variances.items():
        assert abs(var - 1.0) < tol, (name, var)
        assert report["lsuv_variance"][name] == pytest.approx(var, rel=1e-4)
    assert report["lsuv_unconverged"] == [] and report["lsuv_unreached"] == []
    assert all(m.bias is None or torch.equal(m.bias, torch.zeros_like(m.bias))
               for m in model.modules() if isinstance(m, INITIALIZED))
    for key, value in running.items():  # eval mode: batch norm statistics not updated
        assert torch.equal(model.state_dict()[key], value), key


def test_lsuv_restores_every_module_mode():
    for train in (True, False):
        model = small_cnn()
        model.train(train)
        model.features[1].train(not train)  # a module in the other mode stays so
        modes = {name: m.training for name, m in model.named_modules()}
        apply_init(model, load("lsuv"), batch=torch.randn(16, 3, 8, 8))
        assert {name: m.training for name, m in model.named_modules()} == modes


def test_lsuv_takes_an_images_labels_pair_and_moves_the_batch_to_the_model():
    model = small_mlp()
    batch = (torch.randn(64, 1, 8, 8, dtype=torch.float32), torch.zeros(64, dtype=torch.long))
    report = apply_init(model, load("lsuv"), batch=batch)
    assert len(report["lsuv_iterations"]) == 3


def test_lsuv_without_a_batch_is_a_config_error():
    with pytest.raises(ConfigError, match=r"^init=lsuv needs a batch of training data$"):
        apply_init(small_mlp(), load("lsuv"))


def test_lsuv_on_a_zero_batch_or_a_non_finite_one_names_the_layer():
    with pytest.raises(ConfigError, match=r"^init\.lsuv: layer fc1 gives output variance 0\.0 on the batch"):
        apply_init(small_mlp(), load("lsuv"), batch=torch.zeros(8, 1, 8, 8))
    with pytest.raises(ConfigError, match=r"^init\.lsuv: layer fc1 gives output variance nan on the batch"):
        apply_init(small_mlp(), load("lsuv"), batch=torch.full((8, 1, 8, 8), float("nan")))


def test_lsuv_stops_after_max_iters_and_reports_the_layers_left_unconverged():
    cfg = load("lsuv")
    cfg.bias = None  # keep the biases below: their spread alone gives fc1's output a variance > 1
    model = small_mlp()
    with torch.no_grad():
        model.fc1.bias.copy_(torch.linspace(-3.0, 3.0, model.fc1.bias.numel()))
    report = apply_init(model, cfg, batch=torch.randn(64, 1, 8, 8))
    assert report["lsuv_iterations"]["fc1"] == cfg.lsuv.max_iters
    assert report["lsuv_unconverged"] == ["fc1"] and report["lsuv_variance"]["fc1"] > 1 + cfg.lsuv.tol
    assert abs(report["lsuv_variance"]["fc2"] - 1.0) < cfg.lsuv.tol  # the next layers are still scaled


# ---------------------------------------------------------------------------------------- bad values


@pytest.mark.parametrize("name, key, value, match", [
    ("normal", "weight.std", -0.01, r"^init\.weight\.std=-0\.01: must be a number >= 0"),
    ("kaiming_normal", "weight.nonlinearity", "swishy", r"^init\.weight\.nonlinearity='swishy'"),
    ("kaiming_uniform", "weight.mode", "fan_avg", r"^init\.weight\.mode='fan_avg'"),
    ("kaiming_normal", "weight.a", "steep", r"^init\.weight\.a='steep'"),
    ("xavier_normal", "weight.gain", -1.0, r"^init\.weight\.gain=-1\.0"),
    ("orthogonal", "weight.gain", "big", r"^init\.weight\.gain='big'"),
    ("uniform", "weight.a", 0.5, r"^init\.weight\.b=0\.05: must be >= init\.weight\.a=0\.5"),
    ("constant", "weight.val", "x", r"^init\.weight\.val='x'"),
    ("xavier_normal", "weight._partial_", False, r"^init\.weight\._partial_"),
    ("normal", "bias", "zero", r"^init\.bias='zero'"),
    ("normal", "zero_init_head", "yes", r"^init\.zero_init_head='yes'"),
    ("normal", "zero_init_residual", 1, r"^init\.zero_init_residual=1"),
    ("normal", "zero_init_heads", True, r"^init\.zero_init_heads: unknown key"),
    ("lsuv", "lsuv.tol", 0.0, r"^init\.lsuv\.tol=0\.0: must be a number > 0"),
    ("lsuv", "lsuv.tol", -0.1, r"^init\.lsuv\.tol=-0\.1"),
    ("lsuv", "lsuv.max_iters", 0, r"^init\.lsuv\.max_iters=0"),
    ("lsuv", "lsuv.max_iters", 2.5, r"^init\.lsuv\.max_iters=2\.5"),
    ("lsuv", "lsuv.tolerance", 0.1, r"^init\.lsuv\.tolerance: unknown key"),
    ("xavier_normal", "weight.gaim", 1.0, r"^init\.weight"),  # not an argument of xavier_normal_
])
def test_bad_values_name_the_key(name, key, value, match):
    cfg = load(name)
    OmegaConf.update(cfg, key, value, force_add=True)
    with pytest.raises(ConfigError, match=match):
        apply_init(big_model(), cfg, batch=torch.randn(2, 32, 5, 5))


def test_auto_gain_for_an_activation_without_a_known_gain_names_the_key():
    with pytest.raises(ConfigError, match=r"^init\.weight\.gain=auto: no gain is known for model\.activation='swish'"):
        apply_init(big_model(), load("xavier_normal"), activation="swish")
    with pytest.raises(ConfigError, match=r"^init\.weight\.nonlinearity=auto"):
        apply_init(big_model(), load("kaiming_normal"), activation="swish")


def test_apply_init_with_an_invalid_option_is_a_config_error():
    cfg = load("kaiming_normal")
    cfg.weight.nonlinearity = "swishy"
    with pytest.raises(ConfigError, match=r"^init"):
        apply_init(big_model(), cfg)


def test_apply_init_with_a_bad_target_names_init_weight():
    cfg = OmegaConf.create({"weight": {"_target_": "torch.nn.init.no_such_init_", "_partial_": True}, "bias": 0.0})
    with pytest.raises(ConfigError, match=r"^init\.weight"):
        apply_init(big_model(), cfg)
