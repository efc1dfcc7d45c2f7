"""Residual models (CIFAR ResNet, pre-activation ResNet-18, Wide ResNet), stochastic depth, torchvision adapter."""

from __future__ import annotations

import inspect
from pathlib import Path

import pytest
import torch

from trainlab.config import load_option
from torch import nn
from torchvision.ops import StochasticDepth

from trainlab.transfer import TRANSFER_DEFAULTS
from trainlab.errors import ConfigError
from trainlab.models import build_model, count_parameters
from trainlab.models.droppath import drop_path_rates, make_drop_path
from trainlab.models.resnet import (BasicBlock, CifarResNet, PreActBlock, PreActResNet, ResidualBlock, WideResNet,
                                    zero_init_residual)
from trainlab.models.tv import TorchvisionModel

CONFIGS = Path(__file__).resolve().parents[1] / "configs" / "model"
RESIDUAL_CONFIGS = ["resnet20", "resnet56", "resnet18", "wrn"]
SHAPES = [(1, 28, 28), (3, 32, 32)]


def batch(shape, n=2, seed=0):
    return torch.randn(n, *shape, generator=torch.Generator().manual_seed(seed))


def from_config(config, shape=(3, 32, 32), num_classes=10, **overrides):
    cfg = load_option("model", config)
    for key, value in overrides.items():
        cfg[key] = value
    return build_model(cfg, shape, num_classes)


def blocks(model):
    return [m for m in model.modules() if isinstance(m, ResidualBlock)]


# Small versions of each architecture, for the tests that look inside (fast on 2 cores).
SMALL = {
    "cifar": lambda shape=(3, 16, 16), **kw: CifarResNet(shape, 10, depth=8, width=4, **kw),
    "preact": lambda shape=(3, 16, 16), **kw: PreActResNet(shape, 10, blocks=[2, 1], widths=[4, 8], **kw),
    "wrn": lambda shape=(3, 16, 16), **kw: WideResNet(shape, 10, depth=10, width=1, **kw),
}


# ---------------------------------------------------------------- shapes, structure, parameter counts


@pytest.mark.parametrize("num_classes", [10, 100])
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("name", [*RESIDUAL_CONFIGS, "torchvision"])
def test_every_config_builds_and_gives_logits(name, shape, num_classes):
    model = from_config(name, shape, num_classes)
    model.eval()
    assert model(batch(shape)).shape == (2, num_classes)
    assert isinstance(model.head, nn.Linear) and model.head.out_features == num_classes
    first = next(m for m in model.modules() if isinstance(m, nn.Conv2d))
    assert first.in_channels == shape[0]


@pytest.mark.parametrize("name", RESIDUAL_CONFIGS + ["torchvision"])
def test_config_files_document_every_constructor_key(name):
    cfg = load_option("model", name)
    text = (CONFIGS / f"{name}.yaml").read_text()
    target = build_model(cfg, (1, 8, 8) if name != "torchvision" else (1, 32, 32), 3).__class__
    keys = {p.name for p in inspect.signature(target.__init__).parameters.values()
            if p.kind == p.KEYWORD_ONLY}
    assert set(cfg.keys()) - {"_target_"} - set(TRANSFER_DEFAULTS) == keys, "struct mode: every key present"
    assert {"activation", "activation_params", "norm", "dropout", "drop_path"} <= keys
    for key in keys:  # each key has a comment on its line
        line = next(line for line in text.splitlines() if line.startswith(f"{key}:"))
        assert "#" in line, key


def test_children_are_in_forward_order():
    names = [n for n, _ in CifarResNet((3, 32, 32), 10).named_children()]
    assert names == ["stem", "stage1", "stage2", "stage3", "pool", "dropout", "head"]
    names = [n for n, _ in PreActResNet((3, 32, 32), 10).named_children()]
    assert names == ["stem", "stage1", "stage2", "stage3", "stage4", "final", "pool", "dropout", "head"]
    # freezing everything up to stage2: the rest still trains
    model = SMALL["cifar"]()
    for name, child in model.named_children():
        child.requires_grad_(False)
        if name == "stage2":
            break
    model(batch((3, 16, 16))).sum().backward()
    assert model.stage1[0].conv1.weight.grad is None and model.stage3[0].conv1.weight.grad is not None


def cifar_resnet_parameters(n: int, classes: int = 10, channels: int = 3) -> int:
    """Analytic count for He et al.'s CIFAR ResNet with option-B shortcuts (conv+BN where the shape changes)."""
    conv_bn = lambda cin, cout, k: k * k * cin * cout + 2 * cout  # noqa: E731
    total = conv_bn(channels, 16, 3)
    width = 16
    for out in (16, 32, 64):
        for i in range(n):
            cin = width if i == 0 else out
            total += conv_bn(cin, out, 3) + conv_bn(out, out, 3)
            if cin != out:
                total += conv_bn(cin, out, 1)
        width = out
    return total + 64 * classes + classes


@pytest.mark.parametrize("name, paper, n", [("resnet20", 0.27e6, 3), ("resnet56", 0.85e6, 9)])
def test_cifar_resnet_parameter_counts(name, paper, n):
    count = count_parameters(from_config(name))
    assert count == cifar_resnet_parameters(n)
    assert abs(count - paper) / paper < 0.03  # the paper's count (option A) plus 2.8k for the B shortcuts
    assert len(blocks(from_config(name))) == 3 * n


@pytest.mark.parametrize("name, known", [("resnet18", 11.17e6), ("wrn", 2.7e6)])
def test_preact_resnet18_and_wrn_16_4_parameter_counts(name, known):
    # preact ResNet-18 on CIFAR: 11.17M (the usual CIFAR ResNet-18); WRN-16-4: 2.7M (Zagoruyko & Komodakis, table)
    model = from_config(name)
    assert abs(count_parameters(model) - known) / known < 0.03
    assert all(isinstance(b, PreActBlock) for b in blocks(model))
    assert len(blocks(model)) == (8 if name == "resnet18" else 6)


def test_wrn_widths_and_block_dropout():
    model = WideResNet((3, 32, 32), 10, depth=16, width=4, block_dropout=0.3)
    assert [s[0].conv1.out_channels for s in (model.stage1, model.stage2, model.stage3)] == [64, 128, 256]
    assert model.stem.out_channels == 16
    assert [b.dropout.p for b in blocks(model)] == [0.3] * 6


@pytest.mark.parametrize("norm, kind", [("batch", nn.BatchNorm2d), ("group", nn.GroupNorm), ("layer", nn.GroupNorm)])
@pytest.mark.parametrize("arch", sorted(SMALL))
def test_norms_and_activation_params_reach_every_layer(arch, norm, kind):
    model = SMALL[arch](norm=norm, activation="leaky_relu", activation_params={"negative_slope": 0.2})
    norms = [m for m in model.modules() if isinstance(m, (nn.BatchNorm2d, nn.GroupNorm))]
    assert norms and all(type(m) is kind for m in norms)
    acts = [m for m in model.modules() if isinstance(m, (nn.ReLU, nn.LeakyReLU))]
    assert acts and all(isinstance(m, nn.LeakyReLU) and m.negative_slope == 0.2 for m in acts)
    assert model(batch((3, 16, 16))).shape == (2, 10)


def test_norm_none_has_no_norm_layers_and_conv_biases():
    model = SMALL["cifar"](norm="none")
    assert not any(isinstance(m, (nn.BatchNorm2d, nn.GroupNorm)) for m in model.modules())
    assert all(m.bias is not None for m in model.modules() if isinstance(m, nn.Conv2d))
    assert all(m.bias is None for m in SMALL["cifar"]().modules() if isinstance(m, nn.Conv2d))


# ---------------------------------------------------------------- zero-init residual (last_norm)


def block_inputs(model, x):
    """Each block's input during a real forward pass (eval mode)."""
    seen = {}
    hooks = [b.register_forward_pre_hook(lambda mod, args: seen.__setitem__(mod, args[0])) for b in blocks(model)]
    model.eval()
    with torch.no_grad():
        model(x)
    for hook in hooks:
        hook.remove()
    return seen


@pytest.mark.parametrize("norm", ["batch", "none"])
@pytest.mark.parametrize("arch", sorted(SMALL))
def test_zeroed_last_norm_makes_every_block_its_shortcut(arch, norm):
    torch.manual_seed(0)
    model = SMALL[arch](norm=norm)
    x = batch((3, 16, 16), n=4)
    # give the norms non-trivial running statistics first, so eval-mode norms are not the identity
    model.train()
    with torch.no_grad():
        model(x)
    assert zero_init_residual(model) == len(blocks(model)) > 0
    inputs = block_inputs(model, x)
    assert any(b.projects for b in blocks(model)) and any(not b.projects for b in blocks(model))
    with torch.no_grad():
        for block in blocks(model):
            expected_kind = (nn.Conv2d if isinstance(block, PreActBlock) or norm == "none" else nn.BatchNorm2d)
            assert isinstance(block.last_norm, expected_kind)
            h = inputs[block]
            out = block(h)
            if not block.projects:
                torch.testing.assert_close(out, h, rtol=0, atol=0)  # the identity on its input
            elif isinstance(block, BasicBlock):
                torch.testing.assert_close(out, block.act2(block.shortcut(h)), rtol=0, atol=0)
            else:
                torch.testing.assert_close(out, block.shortcut(block.act1(block.norm1(h))), rtol=0, atol=0)


@pytest.mark.parametrize("arch", sorted(SMALL))
def test_zeroed_last_norm_still_learns(arch):
    # zeroing must not kill the branch: its last_norm gets a gradient (not so for norm2 of a pre-act block)
    torch.manual_seed(0)
    model = SMALL[arch]()
    zero_init_residual(model)
    model.train()
    nn.functional.cross_entropy(model(batch((3, 16, 16), n=4)), torch.tensor([0, 1, 2, 3])).backward()
    for block in blocks(model):
        assert block.last_norm.weight.grad.abs().sum() > 0


# ---------------------------------------------------------------- stochastic depth


def test_drop_path_rates_grow_linearly_to_the_rate():
    assert drop_path_rates(0.2, 4) == pytest.approx([0.05, 0.1, 0.15, 0.2])
    model = CifarResNet((3, 16, 16), 10, depth=14, width=4, drop_path=0.3)
    rates = [b.drop_path.p for b in blocks(model)]
    assert rates == pytest.approx([0.3 * (i + 1) / 6 for i in range(6)])
    assert all(isinstance(b.drop_path, StochasticDepth) and b.drop_path.mode == "row" for b in blocks(model))
    assert all(isinstance(b.drop_path, nn.Identity) for b in blocks(SMALL["preact"]()))


def test_drop_path_module_is_per_sample_and_scaled():
    torch.manual_seed(0)
    layer = make_drop_path(0.5).train()
    out = layer(torch.ones(64, 3, 4, 4))
    per_sample = out.flatten(1)
    assert torch.equal(per_sample.amin(1), per_sample.amax(1)), "one decision per sample"
    assert set(per_sample[:, 0].tolist()) == {0.0, 2.0}, "some samples dropped, others kept and scaled by 1/(1-p)"
    x = torch.randn(8, 3)
    assert torch.equal(layer.eval()(x), x)


@pytest.mark.parametrize("block_cls", [BasicBlock, PreActBlock])
def test_block_drops_its_branch_per_sample(block_cls):
    torch.manual_seed(0)
    block = block_cls(4, 4, 1, "relu", None, "none", drop_path=0.5)
    x = torch.rand(32, 4, 6, 6)  # non-negative, like a ReLU network's activations
    with torch.no_grad():
        if block_cls is BasicBlock:
            branch = block.norm2(block.conv2(block.act1(block.norm1(block.conv1(x)))))
            dropped, kept = block.act2(x), block.act2(x + 2 * branch)
        else:
            branch = block.conv2(block.act2(block.norm2(block.conv1(block.act1(block.norm1(x))))))
            dropped, kept = x, x + 2 * branch
        block.train()
        out = block(x)
        is_dropped = [torch.allclose(o, d, atol=1e-6) for o, d in zip(out, dropped)]
        is_kept = [torch.allclose(o, k, atol=1e-6) for o, k in zip(out, kept)]
        assert all(a != b for a, b in zip(is_dropped, is_kept)), "each sample: its branch dropped or kept (x2)"
        assert 0 < sum(is_dropped) < len(x), "per sample, not per batch"
        block.eval()
        torch.testing.assert_close(block(x), dropped + (kept - dropped) / 2 if block_cls is PreActBlock
                                   else block.act2(x + branch))


@pytest.mark.parametrize("arch", sorted(SMALL))
def test_model_with_drop_path_train_random_eval_deterministic(arch):
    torch.manual_seed(1)
    with_rate = SMALL[arch](drop_path=0.5)
    torch.manual_seed(1)
    without = SMALL[arch](drop_path=0.0)
    x = batch((3, 16, 16), n=4)
    # same weights: stochastic depth adds no parameters or buffers (checkpoints interchange)
    assert with_rate.state_dict().keys() == without.state_dict().keys()
    assert all(torch.equal(a, b) for a, b in zip(with_rate.state_dict().values(), without.state_dict().values()))
    with torch.no_grad():
        with_rate.eval(), without.eval()
        assert torch.equal(with_rate(x), with_rate(x))
        torch.testing.assert_close(with_rate(x), without(x), rtol=0, atol=0)  # identity at eval
        with_rate.train()
        assert not torch.equal(with_rate(x), with_rate(x)), "train: branches dropped at random"
        # rate 0 is exactly no drop path, in training too
        for module in with_rate.modules():
            if isinstance(module, StochasticDepth):
                module.p = 0.0
        with_rate.train(), without.train()
        assert torch.equal(without(x), without(x))
        torch.testing.assert_close(with_rate(x), without(x), rtol=0, atol=0)


# ---------------------------------------------------------------- bad keys


@pytest.mark.parametrize("factory, key", [
    (lambda: CifarResNet((3, 32, 32), 10, depth=21), r"model\.depth=21: must be 6n\+2"),
    (lambda: CifarResNet((3, 32, 32), 10, depth=2), r"model\.depth"),
    (lambda: CifarResNet((3, 32, 32), 10, width=0), r"model\.width"),
    (lambda: WideResNet((3, 32, 32), 10, depth=20), r"model\.depth=20: must be 6n\+4"),
    (lambda: WideResNet((3, 32, 32), 10, width=0), r"model\.width"),
    (lambda: WideResNet((3, 32, 32), 10, block_dropout=1.0), r"model\.block_dropout"),
    (lambda: PreActResNet((3, 32, 32), 10, blocks=[2, 0]), r"model\.blocks"),
    (lambda: PreActResNet((3, 32, 32), 10, widths=[64, 128]), r"model\.widths"),
    (lambda: CifarResNet((3, 32, 32), 10, dropout=1.0), r"model\.dropout"),
    (lambda: PreActResNet((3, 32, 32), 10, drop_path=1.0), r"model\.drop_path"),
    (lambda: WideResNet((3, 32, 32), 10, drop_path=-0.1), r"model\.drop_path"),
    (lambda: CifarResNet((3, 32, 32), 10, norm="batchnorm"), r"model\.norm='batchnorm'.*batch"),
    (lambda: CifarResNet((3, 32, 32), 10, activation="swishy"), r"model\.activation='swishy'"),
    (lambda: CifarResNet((3, 32, 32), 10, activation="elu", activation_params={"slope": 1}),
     r"model\.activation_params"),
    (lambda: PreActResNet((3, 32, 32), 10, activation="maxout"), r"model\.activation=maxout.*not supported"),
], ids=lambda v: v if isinstance(v, str) else "")
def test_bad_keys_raise_config_errors_naming_them(factory, key):
    with pytest.raises(ConfigError, match=key):
        factory()


@pytest.mark.parametrize("name, key, value", [("resnet20", "depth", 21), ("wrn", "depth", 17),
                                              ("resnet18", "drop_path", 1.5), ("torchvision", "name", "resnt18")])
def test_bad_config_values_fail_through_build_model(name, key, value):
    with pytest.raises(ConfigError, match=rf"^model\.{key}"):
        from_config(name, **{key: value})


# ---------------------------------------------------------------- torchvision adapter


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("name", ["resnet18", "mobilenet_v3_small"])
def test_torchvision_models_adapt_to_small_inputs(name, shape):
    model = TorchvisionModel(shape, 10, name=name, small_input=True).eval()
    assert model(batch(shape)).shape == (2, 10)
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    assert model.head is linears[-1] and model.head.out_features == 10
    first = next(m for m in model.modules() if isinstance(m, nn.Conv2d))
    assert first.in_channels == shape[0] and first.stride == (1, 1) and first.kernel_size == (3, 3)
    assert [n for n, _ in model.named_children()] == ["net", "head"]
    assert isinstance(model.net.get_submodule(model.head_path), nn.Identity), "the head moved out of the net"


def test_torchvision_resnet_stem_with_and_without_small_input():
    big = TorchvisionModel((1, 32, 32), 7, name="resnet18")
    assert (big.net.conv1.in_channels, big.net.conv1.kernel_size, big.net.conv1.stride) == (1, (7, 7), (2, 2))
    assert isinstance(big.net.maxpool, nn.MaxPool2d) and big.head_path == "fc"
    small = TorchvisionModel((1, 32, 32), 7, name="resnet18", small_input=True)
    assert (small.net.conv1.kernel_size, small.net.conv1.stride) == ((3, 3), (1, 1))
    assert isinstance(small.net.maxpool, nn.Identity)
    small.head = nn.Linear(512, 3)  # a new classifier for another task
    assert small.eval()(batch((1, 32, 32))).shape == (2, 3)


def test_torchvision_weights_map_onto_net_and_head():
    # A torchvision state dict fits as net.<key>, its classifier as head.*; the outputs are then the same.
    import torchvision

    torch.manual_seed(0)
    reference = torchvision.models.get_model("mobilenet_v3_small", weights=None, num_classes=10).eval()
    model = TorchvisionModel((3, 32, 32), 10, name="mobilenet_v3_small").eval()
    prefix = model.head_path + "."
    assert model.head_path == "classifier.3"
    mapped = {("head." + k[len(prefix):]) if k.startswith(prefix) else "net." + k: v
              for k, v in reference.state_dict().items()}
    assert mapped.keys() == model.state_dict().keys()
    model.load_state_dict(mapped)
    x = batch((3, 32, 32))
    torch.testing.assert_close(model(x), reference(x))


def test_torchvision_dropout_and_drop_path():
    resnet = TorchvisionModel((3, 32, 32), 10, name="resnet18", dropout=0.3)  # no dropout argument: before head
    assert resnet.head is [m for m in resnet.modules() if isinstance(m, nn.Linear)][-1]
    assert [m.p for m in resnet.modules() if isinstance(m, nn.Dropout)] == [0.3]
    assert isinstance(resnet.net.fc, nn.Dropout)  # in the head's old slot: the last thing before the head
    mobile = TorchvisionModel((3, 32, 32), 10, name="mobilenet_v3_small", dropout=0.3)  # its own argument
    assert [m.p for m in mobile.modules() if isinstance(m, nn.Dropout)] == [0.3]
    default = TorchvisionModel((3, 32, 32), 10, name="mobilenet_v3_small")
    assert [m.p for m in default.modules() if isinstance(m, nn.Dropout)] == [0.2]  # torchvision's default
    effnet = TorchvisionModel((3, 32, 32), 10, name="efficientnet_b0", drop_path=0.4, small_input=True)
    rates = [m.p for m in effnet.modules() if isinstance(m, StochasticDepth)]
    assert rates and max(rates) == pytest.approx(0.4, abs=0.03) and max(rates) <= 0.4
    TorchvisionModel((3, 32, 32), 10, name="resnet18", drop_path=0.0)  # none asked, none there: fine
    with pytest.raises(ConfigError, match=r"^model\.drop_path=0.1: torchvision's resnet18 has no stochastic depth"):
        TorchvisionModel((3, 32, 32), 10, name="resnet18", drop_path=0.1)


@pytest.mark.parametrize("kwargs, message", [
    (dict(name="resnt18"), r"^model\.name='resnt18'.*did you mean resnet18"),
    (dict(name="fasterrcnn_resnet50_fpn"), r"^model\.name=.*not a torchvision classification model"),
    (dict(name="squeezenet1_1"), r"^model\.name=squeezenet1_1: has no nn\.Linear"),
    (dict(name="vit_b_32", small_input=True), r"^model\.small_input=true: no small-input stem for vit_b_32"),
    (dict(name="densenet121"), r"^model\.name=densenet121: cannot take \[1, 28, 28\] inputs \(model\.small_input"),
    (dict(activation="gelu"), r"^model\.activation='gelu'"),
    (dict(activation_params={"inplace": True}), r"^model\.activation"),
    (dict(norm="group"), r"^model\.norm='group'"),
    (dict(dropout=1.0), r"^model\.dropout"),
], ids=lambda v: v if isinstance(v, str) else "")
def test_torchvision_bad_keys(kwargs, message):
    with pytest.raises(ConfigError, match=message):
        TorchvisionModel((1, 28, 28), 10, **kwargs)
