"""Transfer learning: load_pretrained, freeze, per-group learning rates, the experiment configs, end to end.

The end-to-end demonstration pretrains a small CNN with the CLI on one synthetic dataset, then starts a
5-class model on a *different* synthetic dataset from its best.pt, in process, the way a run does it:
split_model_config -> build_model -> apply_init -> load_pretrained -> freeze -> build_optimizer.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torchvision
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf
from torch import nn
from torchvision.ops.misc import FrozenBatchNorm2d

from conftest import run_folders, run_trainlab
from trainlab import checkpoint
from trainlab.config import load_option, validate
from trainlab.errors import ConfigError
from trainlab.models.cnn import CNN
from trainlab.optim import build_optimizer
from trainlab.transfer import (FrozenBatchNorm, freeze, load_pretrained, setup_transfer, split_model_config,
                               trainable_parameters)

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
CHANNELS = [8, 16]
SMALL = ["dataset=synthetic", f"model.channels=[{','.join(map(str, CHANNELS))}]", "callbacks.console.progress=false",
         "optimizer=adam"]  # Adam learns the synthetic data in two epochs at lr 0.003
HEAD = {"head.weight", "head.bias"}


def cnn(num_classes: int = 10, in_channels: int = 1, seed: int = 0) -> CNN:
    torch.manual_seed(seed)
    return CNN((in_channels, 28, 28), num_classes, channels=CHANNELS)


def snapshot(model: nn.Module) -> dict[str, torch.Tensor]:
    return {name: tensor.detach().clone() for name, tensor in model.state_dict().items()}


def train_step(model: nn.Module, optimizer: torch.optim.Optimizer, images, labels) -> None:
    model.train()
    optimizer.zero_grad(set_to_none=True)
    nn.functional.cross_entropy(model(images), labels).backward()
    optimizer.step()


def optimizer_cfg(name: str = "sgd", **values):
    cfg = load_option("optimizer", name)
    for key, value in values.items():
        OmegaConf.update(cfg, key, value, force_add=True)
    return cfg


def composed(*overrides: str):
    """The config `trainlab train OVERRIDES` composes (transfer keys with ++: added or overridden)."""
    with initialize_config_dir(config_dir=str(CONFIGS), version_base="1.3"):
        return validate(compose(config_name="train", overrides=list(overrides)))


# ---------------------------------------------------------------- load_pretrained


def test_same_model_loads_every_tensor_exactly(tmp_path):
    source, target = cnn(seed=1), cnn(seed=2)
    torch.save(source.state_dict(), tmp_path / "weights.pt")
    report = load_pretrained(target, tmp_path / "weights.pt")
    assert set(report["loaded"]) == set(target.state_dict()) and report["new"] == []
    assert report["source"] == str(tmp_path / "weights.pt")
    for name, tensor in source.state_dict().items():
        assert torch.equal(target.state_dict()[name], tensor), name


def test_other_number_of_classes_keeps_the_initialised_head(tmp_path):
    source, target = cnn(10, seed=1), cnn(5, seed=2)
    head_before = snapshot(target.head)
    torch.save(source.state_dict(), tmp_path / "weights.pt")
    report = load_pretrained(target, tmp_path / "weights.pt")
    assert set(report["new"]) == HEAD
    assert set(report["loaded"]) == set(target.state_dict()) - HEAD
    assert torch.equal(target.features[0].weight, source.features[0].weight)
    assert all(torch.equal(head_before[k], v) for k, v in target.head.state_dict().items())


@pytest.mark.parametrize("wrap", ["module_prefix", "state_dict", "lightning", "trainlab_run_folder"])
def test_wrapped_and_prefixed_files(tmp_path, wrap):
    source, target = cnn(seed=1), cnn(seed=2)
    state = source.state_dict()
    path = tmp_path / "weights.pt"
    if wrap == "module_prefix":  # torch.nn.DataParallel
        torch.save({f"module.{k}": v for k, v in state.items()}, path)
    elif wrap == "state_dict":
        torch.save({"state_dict": state, "epoch": 3}, path)
    elif wrap == "lightning":  # a LightningModule holding the network as self.model
        torch.save({"state_dict": {f"model.{k}": v for k, v in state.items()}, "epoch": 3}, path)
    else:  # a trainlab run folder: its checkpoints/best.pt
        checkpoint.save_atomic({"format": checkpoint.FORMAT, "model": state, "config": {}}, tmp_path / "run" /
                               "checkpoints" / "best.pt")
        path = tmp_path / "run"
    report = load_pretrained(target, path)
    assert set(report["loaded"]) == set(state)
    assert torch.equal(target.features[0].weight, source.features[0].weight)


class TorchvisionAdapter(nn.Module):
    """A model that wraps a torchvision network as `net` and puts its own classifier at `head`."""

    def __init__(self, num_classes: int):
        super().__init__()
        self.net = torchvision.models.shufflenet_v2_x0_5(weights=None)
        self.net.fc = nn.Identity()
        self.head = nn.Linear(1024, num_classes)

    def forward(self, x):
        return self.head(self.net(x))


def test_torchvision_weights_file_into_a_net_prefixed_adapter(tmp_path):
    torch.manual_seed(0)
    weights = torchvision.models.shufflenet_v2_x0_5(weights=None)  # what a downloaded weights file holds
    torch.save(weights.state_dict(), tmp_path / "shufflenet.pth")
    model = TorchvisionAdapter(num_classes=7)
    report = load_pretrained(model, tmp_path / "shufflenet.pth")
    assert report["prefix"] == {"strip": "", "add": "net."}
    assert set(report["new"]) == HEAD
    assert set(report["skipped"]) == {"fc.weight", "fc.bias"}, "the file's 1000-class classifier"
    assert set(report["loaded"]) == {f"net.{k}" for k in weights.state_dict()} - {"net.fc.weight", "net.fc.bias"}
    assert torch.equal(model.net.conv1[0].weight, weights.conv1[0].weight)


def test_files_that_do_not_fit_name_the_keys(tmp_path):
    torch.save(cnn(in_channels=1).state_dict(), tmp_path / "grey.pt")
    with pytest.raises(ConfigError) as error:
        load_pretrained(cnn(in_channels=3), tmp_path / "grey.pt")
    message = str(error.value)
    assert message.startswith(f"model.pretrained={tmp_path / 'grey.pt'}: 1 key does not fit: ")
    assert "features.0.weight [8,1,3,3] in the file vs [8,3,3,3] in the model" in message
    assert "does not fit this model" in message

    wider = CNN((1, 28, 28), 10, channels=[8, 32])
    torch.save(wider.state_dict(), tmp_path / "wider.pt")
    with pytest.raises(ConfigError, match=r"features\.4\.weight \[32,8,3,3\] in the file vs \[16,8,3,3\]"):
        load_pretrained(cnn(), tmp_path / "wider.pt")


def test_missing_unreadable_and_foreign_files(tmp_path):
    with pytest.raises(ConfigError, match=r"^model\.pretrained=.*nope\.pt: no such file"):
        load_pretrained(cnn(), tmp_path / "nope.pt")
    (tmp_path / "text.pt").write_text("not weights")
    with pytest.raises(ConfigError, match=r"^model\.pretrained=.*text\.pt: cannot read it as a weights file"):
        load_pretrained(cnn(), tmp_path / "text.pt")
    torch.save({"epoch": 3, "note": "no tensors"}, tmp_path / "empty.pt")
    with pytest.raises(ConfigError, match=r"^model\.pretrained=.*empty\.pt: holds no tensors"):
        load_pretrained(cnn(), tmp_path / "empty.pt")


# ---------------------------------------------------------------- freeze


class DenseNet(nn.Module):
    """Dense layers with BatchNorm1d (like MLP with norm=batch) and a head."""

    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(nn.Linear(4, 8), nn.BatchNorm1d(8), nn.ReLU())
        self.head = nn.Linear(8, 3)

    def forward(self, x):
        return self.head(self.body(x))


def test_freeze_none_and_unknown_names():
    model = cnn()
    assert freeze(model, "none") == [] and freeze(model, None) == []
    assert all(p.requires_grad for p in model.parameters())
    with pytest.raises(ConfigError) as error:
        freeze(model, "backbone_")
    assert str(error.value) == ("model.freeze=backbone_: no child named 'backbone_'; the model's children, in "
                                "order: features, pool, dropout, head (or none | backbone)")
    with pytest.raises(ConfigError, match=r"^model\.freeze=features\.99: features has no child '99'; its children: 0, 1,"):
        freeze(model, "features.99")
    with pytest.raises(ConfigError, match=r"^model\.freeze=head: freezes every parameter"):
        freeze(model, "head")
    assert all(p.requires_grad for p in model.parameters()), "a rejected spec freezes nothing"


def test_freeze_backbone_keeps_only_the_head_training_and_the_function_unchanged():
    model = cnn()
    model.train()
    model(torch.randn(16, 1, 28, 28))  # running statistics away from their start
    model.eval()
    x = torch.randn(4, 1, 28, 28)
    before = model(x)
    frozen = freeze(model, "backbone")
    assert frozen == [n for n, _ in CNN((1, 28, 28), 10, channels=CHANNELS).named_parameters() if n not in HEAD]
    assert {n for n, p in model.named_parameters() if p.requires_grad} == HEAD
    assert trainable_parameters(model) == sum(p.numel() for p in model.head.parameters())
    norms = [m for m in model.features if "Norm" in type(m).__name__]
    assert norms and all(isinstance(m, FrozenBatchNorm2d) for m in norms)
    assert torch.allclose(model(x), before, atol=1e-5), "freezing changes what trains, not what the model computes"
    model.train()
    assert torch.allclose(model(x), before, atol=1e-5), "frozen BatchNorm uses the stored statistics in training"


def test_freeze_a_child_freezes_it_and_everything_before():
    model = cnn()  # features: conv bn relu pool conv bn relu
    frozen = freeze(model, "features.2", freeze_bn=False)
    assert frozen == ["features.0.weight", "features.1.weight", "features.1.bias"]
    assert isinstance(model.features[1], nn.BatchNorm2d), "freeze_bn=false keeps the BatchNorm layer"
    assert all(p.requires_grad for p in model.features[4:].parameters()) and model.head.weight.requires_grad
    other = cnn()
    assert freeze(other, "features.-5") == frozen, "negative indices count from the end of a Sequential"
    third = cnn()
    everything_but_the_head = {n for n, _ in third.named_parameters()} - HEAD
    assert set(freeze(third, "features")) == everything_but_the_head


def test_without_freeze_bn_the_statistics_move_and_with_it_they_do_not():
    x = torch.randn(16, 1, 28, 28) * 3 + 1
    for freeze_bn, should_move in ((False, True), (True, False)):
        model = cnn()
        freeze(model, "backbone", freeze_bn=freeze_bn)
        before = snapshot(model.features)
        model.train()
        model(x)
        moved = not torch.equal(model.features.state_dict()["1.running_mean"], before["1.running_mean"])
        assert moved == should_move, f"freeze_bn={freeze_bn}"


def test_batchnorm1d_is_frozen_too():
    model = DenseNet()
    model.train()
    model(torch.randn(32, 4) * 2 + 1)
    model.eval()
    x = torch.randn(5, 4)
    expected = model(x)
    freeze(model, "backbone")
    assert type(model.body[1]) is FrozenBatchNorm
    assert set(model.body.state_dict()) == set(DenseNet().body.state_dict()), "BatchNorm1d's names, kept"
    stats = snapshot(model.body)
    model.train()
    assert torch.allclose(model(x), expected, atol=1e-6)
    assert all(torch.equal(v, stats[k]) for k, v in model.body.state_dict().items())


def test_a_frozen_models_checkpoint_loads_into_a_fresh_model_and_back(tmp_path):
    frozen = cnn(seed=1)
    frozen.train()
    frozen(torch.randn(8, 1, 28, 28))
    freeze(frozen, "backbone")
    state = frozen.state_dict()
    fresh = cnn(seed=2)
    assert set(state) == set(fresh.state_dict()), "a frozen model keeps the state-dict names of the plain one"
    fresh.load_state_dict(state)  # strict, as a user rebuilding best.pt's model with build_model does
    assert torch.equal(fresh.features[1].running_var, frozen.features[1].running_var)
    assert fresh.features[1].num_batches_tracked.item() == 1
    torch.save(state, tmp_path / "frozen.pt")
    refrozen = cnn(seed=3)
    freeze(refrozen, "backbone")
    assert load_pretrained(refrozen, tmp_path / "frozen.pt")["new"] == []
    # a file from torchvision's own FrozenBatchNorm2d has no counters: the model keeps its own
    torch.save({k: v for k, v in state.items() if not k.endswith("num_batches_tracked")}, tmp_path / "tv.pt")
    report = load_pretrained(cnn(seed=4), tmp_path / "tv.pt")
    assert "features.1.num_batches_tracked" not in report["loaded"] and report["new"] == []


def test_a_resumed_run_rebuilds_the_frozen_model_without_the_pretrained_file(tmp_path):
    settings = {"pretrained": str(tmp_path / "moved_away.pt"), "freeze": "backbone", "freeze_bn": True}
    trained = cnn(seed=1)
    setup_transfer(trained, {**settings, "pretrained": None})
    last = trained.state_dict()  # what best.pt / last.pt of a frozen run hold
    rebuilt = cnn(seed=2)
    summary = setup_transfer(rebuilt, settings, load_weights=False)
    assert summary["loaded"] == 0 and summary["frozen"] == len(list(cnn().parameters())) - 2
    rebuilt.load_state_dict(last)  # strict: the same structure (frozen BatchNorm included)
    assert torch.equal(rebuilt.features[1].running_mean, trained.features[1].running_mean)


# ---------------------------------------------------------------- optimizer param groups


def test_backbone_lr_scale_makes_two_groups():
    model = cnn()
    optimizer = build_optimizer(optimizer_cfg("sgd", lr=0.2, backbone_lr_scale=0.1), model)
    head, backbone = optimizer.param_groups
    assert head["name"] == "head" and head["lr"] == pytest.approx(0.2)
    assert backbone["name"] == "backbone" and backbone["lr"] == pytest.approx(0.02)
    assert {id(p) for p in head["params"]} == {id(p) for p in model.head.parameters()}
    assert len(backbone["params"]) == len(list(model.parameters())) - 2


@pytest.mark.parametrize("name", ["adam", "adamw", "sgd"])
def test_scale_one_keeps_a_single_group(name):
    model = cnn()
    for cfg in (optimizer_cfg(name), optimizer_cfg(name, backbone_lr_scale=1.0)):
        optimizer = build_optimizer(cfg, model)
        # one lr group (adamw's decay also splits off a weight-decay-free `no_decay` group at the same lr)
        lr_groups = [g for g in optimizer.param_groups if not g["name"].endswith("no_decay")]
        assert len(lr_groups) == 1 and all(g["lr"] == pytest.approx(cfg.lr) for g in optimizer.param_groups)


def test_frozen_parameters_never_reach_the_optimizer():
    model = cnn()
    freeze(model, "backbone")
    optimizer = build_optimizer(optimizer_cfg("adam", backbone_lr_scale=0.1), model)
    assert [g["name"] for g in optimizer.param_groups] == ["head"]
    assert {id(p) for g in optimizer.param_groups for p in g["params"]} == {id(p) for p in model.head.parameters()}


def test_bad_backbone_lr_scale_is_a_config_error():
    for value in (-0.5, "fast", True):
        with pytest.raises(ConfigError, match=r"^optimizer\.backbone_lr_scale="):
            build_optimizer(optimizer_cfg("sgd", backbone_lr_scale=value), cnn())
    with pytest.raises(ConfigError, match=r"^optimizer\.backbone_lr_scale=0\.1: this model has no `head`"):
        build_optimizer(optimizer_cfg("sgd", backbone_lr_scale=0.1), nn.Sequential(nn.Linear(2, 2)))


def test_split_model_config():
    build, settings = split_model_config(OmegaConf.create({"_target_": "x.Y", "channels": [8], "pretrained": "a.pt",
                                                           "freeze": "backbone"}))
    assert OmegaConf.to_container(build) == {"_target_": "x.Y", "channels": [8]}
    assert settings == {"pretrained": "a.pt", "freeze": "backbone", "freeze_bn": True}
    _, settings = split_model_config(OmegaConf.create({"_target_": "x.Y"}))
    assert settings == {"pretrained": None, "freeze": "none", "freeze_bn": True}
    with pytest.raises(ConfigError, match=r"^model\.freeze_bn='yes': must be true or false"):
        split_model_config(OmegaConf.create({"_target_": "x.Y", "freeze_bn": "yes"}))


# ---------------------------------------------------------------- end to end


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory) -> Path:
    """best.pt of a small CNN trained by the CLI on synthetic data (generator_seed 0, 10 classes)."""
    root = tmp_path_factory.mktemp("pretrain")
    result = run_trainlab(["train", *SMALL, "dataset.generator_seed=0", "trainer.epochs=2", "optimizer.lr=0.003"],
                          root)
    assert result.returncode == 0, result.stderr[-3000:]
    (run,) = run_folders(root)
    return run / "checkpoints" / "best.pt"


def fine_tune_setup(experiment: str, pretrained: Path | None, *extra: str):
    """What a wired run builds for `trainlab train experiment=... model.pretrained=...` on a different dataset."""
    from trainlab.data import build_data
    from trainlab.init import apply_init
    from trainlab.models import build_model

    weights = [f"++model.pretrained={pretrained}"] if pretrained else []
    cfg = composed(*SMALL, "dataset.generator_seed=1", "dataset.num_classes=5", f"experiment={experiment}",
                   *weights, *extra)
    build_cfg, settings = split_model_config(cfg.model)
    data = build_data(cfg, torch.device("cpu"), cfg.seed)
    torch.manual_seed(cfg.seed)
    model = build_model(build_cfg, data.input_shape, data.num_classes)
    apply_init(model, cfg.init)
    summary = setup_transfer(model, settings)
    return cfg, data, model, summary


def test_experiment_configs_compose_from_the_command_line(tmp_path):
    expected = {"linear_probe": ("backbone", 1.0), "finetune_top": ("features.-8", 1.0), "finetune_all": ("none", 0.1)}
    for name, (spec, scale) in expected.items():
        result = run_trainlab(["train", "--cfg", "job", f"experiment={name}", "++model.pretrained=w/best.pt"], tmp_path)
        assert result.returncode == 0, result.stderr
        config = OmegaConf.create(result.stdout)
        assert config.model.freeze == spec and config.model.freeze_bn is True, name
        assert config.model.pretrained == "w/best.pt" and config.optimizer.backbone_lr_scale == scale, name


@pytest.mark.slow
def test_linear_probe_from_a_cli_checkpoint_on_another_dataset(pretrained):
    payload = torch.load(pretrained, weights_only=True)
    assert payload["config"]["dataset"]["num_classes"] == 10
    cfg, data, model, summary = fine_tune_setup("linear_probe", pretrained, "optimizer.lr=0.01")
    assert data.num_classes == 5
    assert summary["pretrained"] == str(pretrained) and set(summary["new"]) == HEAD
    assert summary["loaded"] == len(payload["model"]) - 2, "everything but the 10-class head came from the file"
    assert summary["freeze"] == "backbone"
    assert summary["trainable_params"] == sum(p.numel() for p in model.head.parameters())
    for name, tensor in model.state_dict().items():
        if not name.startswith("head."):
            assert torch.equal(tensor, payload["model"][name]), name

    optimizer = build_optimizer(cfg.optimizer, model)
    before = snapshot(model)
    images, labels = next(iter(data.train))
    train_step(model, optimizer, images, labels)
    after = model.state_dict()
    for name, tensor in before.items():  # parameters and BatchNorm running statistics alike
        if name.startswith("head."):
            assert not torch.equal(after[name], tensor), f"{name} should train"
        else:
            assert torch.equal(after[name], tensor), f"{name} is frozen but changed"

    # The pretrained features carry over to the new classes: two epochs of the probe on them score far
    # above the same probe on the random features of an untrained backbone (about chance, 20%).
    probe = probe_accuracy(model, optimizer, data)
    cfg, data, scratch, summary = fine_tune_setup("linear_probe", None, "optimizer.lr=0.01")
    assert summary["pretrained"] is None and summary["loaded"] == 0
    baseline = probe_accuracy(scratch, build_optimizer(cfg.optimizer, scratch), data)
    assert probe > 0.45 and probe > baseline + 0.2, (probe, baseline)


def probe_accuracy(model, optimizer, data, epochs: int = 2) -> float:
    for _ in range(epochs):
        for images, labels in data.train:
            train_step(model, optimizer, images, labels)
    model.eval()
    with torch.no_grad():
        correct = sum((model(x).argmax(1) == y).sum().item() for x, y in data.val)
    return correct / data.val.num_samples


@pytest.mark.slow
def test_finetune_top_trains_the_last_stage_and_the_head(pretrained):
    cfg, data, model, summary = fine_tune_setup("finetune_top", pretrained)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    # channels [8, 16], 2 blocks per stage: features = conv bn act conv bn act | pool conv bn act conv bn act:
    # stage 1 fixed, stage 2 and the head train
    assert trainable == {"features.7.weight", "features.8.weight", "features.8.bias", "features.10.weight",
                         "features.11.weight", "features.11.bias"} | HEAD
    assert all(isinstance(model.features[k], FrozenBatchNorm2d) for k in (1, 4))
    assert all(isinstance(model.features[k], nn.BatchNorm2d) for k in (8, 11))
    optimizer = build_optimizer(cfg.optimizer, model)
    before = snapshot(model)
    train_step(model, optimizer, *next(iter(data.train)))
    after = model.state_dict()
    assert all(torch.equal(after[f"features.{k}"], before[f"features.{k}"])
               for k in ("0.weight", "1.weight", "1.bias", "1.running_mean", "1.running_var", "3.weight"))
    assert not torch.equal(after["features.7.weight"], before["features.7.weight"])
    assert not torch.equal(after["features.11.running_mean"], before["features.11.running_mean"])


@pytest.mark.slow
def test_finetune_all_gives_the_backbone_a_tenth_of_the_lr(pretrained):
    cfg, data, model, summary = fine_tune_setup("finetune_all", pretrained, "optimizer.lr=0.004")
    assert summary["frozen"] == 0 and summary["trainable_params"] == sum(p.numel() for p in model.parameters())
    optimizer = build_optimizer(cfg.optimizer, model)
    head, backbone = optimizer.param_groups
    assert (head["name"], backbone["name"]) == ("head", "backbone")
    assert head["lr"] == pytest.approx(0.004) and backbone["lr"] == pytest.approx(0.0004)
    assert len(head["params"]) + len(backbone["params"]) == len(list(model.parameters()))


@pytest.mark.slow
def test_a_checkpoint_of_another_model_is_refused_naming_keys(pretrained, tmp_path):
    from trainlab.models.mlp import MLP

    mlp = MLP((1, 28, 28), 10, hidden=[32])
    checkpoint.save_atomic({"format": checkpoint.FORMAT, "model": mlp.state_dict(),
                            "config": {"model": {"_target_": "trainlab.models.mlp.MLP"}}}, tmp_path / "best.pt")
    with pytest.raises(ConfigError) as error:
        fine_tune_setup("linear_probe", tmp_path / "best.pt")
    message = str(error.value)
    assert message.startswith(f"model.pretrained={tmp_path / 'best.pt'}: ")
    assert "keys do not fit: features.0.weight [8,1,3,3] is not in the file" in message
    assert "(saved from trainlab.models.mlp.MLP) does not fit this model" in message
    assert "\n" not in message


def test_a_checkpoint_for_other_classes_keeps_the_new_models_head(tmp_path):
    from trainlab.checkpoint import FORMAT
    from trainlab.models.cnn import CNN
    from trainlab.transfer import load_pretrained

    torch.manual_seed(0)
    source = CNN([1, 8, 8], 3, channels=[4])
    path = tmp_path / "best.pt"
    torch.save({"format": FORMAT, "model": source.state_dict(), "classes": ["a", "b", "c"]}, path)
    same = CNN([1, 8, 8], 3, channels=[4])
    report = load_pretrained(same, path, classes=["a", "b", "c"])
    assert report["new"] == [] and torch.equal(same.head.weight, source.head.weight)
    other = CNN([1, 8, 8], 3, channels=[4])
    head_before = other.head.weight.clone()
    report = load_pretrained(other, path, classes=["x", "y", "z"])
    assert report["new"] == ["head.weight", "head.bias"]
    assert torch.equal(other.head.weight, head_before), "the head keeps its own initialisation"
    assert torch.equal(other.features[0].weight, source.features[0].weight), "the rest is loaded"


def test_trainer_logs_the_backbone_learning_rate_beside_lr():
    from omegaconf import OmegaConf

    from trainlab.models.cnn import CNN
    from trainlab.optim import build_optimizer
    from trainlab.train import Trainer

    model = CNN([1, 8, 8], 3, channels=[4])
    cfg = OmegaConf.create({"_target_": "torch.optim.SGD", "_partial_": True, "lr": 0.1, "backbone_lr_scale": 0.1})
    trainer = Trainer(model, build_optimizer(cfg, model), None, torch.device("cpu"))
    assert trainer.lrs() == pytest.approx({"lr": 0.1, "lr/backbone": 0.01})
