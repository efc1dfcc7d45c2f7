"""Optimizers and learning-rate schedules built from the config files, checked against their formulas."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from trainlab.config import load_option
from torch import nn

from trainlab.errors import ConfigError
from trainlab.optim import build_optimizer, build_schedule

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
OPTIMIZERS = {"adam": torch.optim.Adam, "adamw": torch.optim.AdamW, "sgd": torch.optim.SGD,
              "momentum": torch.optim.SGD, "nesterov": torch.optim.SGD, "adagrad": torch.optim.Adagrad,
              "adadelta": torch.optim.Adadelta, "rmsprop": torch.optim.RMSprop, "nadam": torch.optim.NAdam,
              "radam": torch.optim.RAdam}
SPE, EPOCHS, LR = 5, 4, 0.2  # steps per epoch, epochs, base learning rate
TOTAL = SPE * EPOCHS


def load(group: str, name: str):
    return load_option(group, name)


def test_every_optimizer_file_has_an_expected_class():
    assert sorted(p.stem for p in (CONFIGS / "optimizer").glob("*.yaml")) == sorted(OPTIMIZERS)


@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
def test_build_optimizer_from_config_files(name):
    cfg = load("optimizer", name)
    model = nn.Linear(3, 2)
    optimizer = build_optimizer(cfg, model)
    assert type(optimizer) is OPTIMIZERS[name]
    group = optimizer.param_groups[0]
    assert group["lr"] == pytest.approx(cfg.lr)
    assert group["weight_decay"] == pytest.approx(cfg.weight_decay)
    # every parameter, in one group, or two when the biases are exempt from a weight decay (adamw)
    assert {id(p) for g in optimizer.param_groups for p in g["params"]} == {id(p) for p in model.parameters()}
    assert len(optimizer.param_groups) == (2 if cfg.weight_decay > 0 else 1)


def test_build_optimizer_skips_frozen_parameters():
    model = nn.Sequential(nn.Linear(3, 4), nn.Linear(4, 2))
    for p in model[0].parameters():
        p.requires_grad_(False)
    optimizer = build_optimizer(load("optimizer", "sgd"), model)
    params = [p for g in optimizer.param_groups for p in g["params"]]
    assert {id(p) for p in params} == {id(p) for p in model[1].parameters()}


def test_build_optimizer_overrides_take_effect():
    cfg = load("optimizer", "sgd")
    cfg.lr, cfg.momentum, cfg.nesterov = 0.3, 0.9, True
    group = build_optimizer(cfg, nn.Linear(2, 2)).param_groups[0]
    assert group["lr"] == 0.3 and group["momentum"] == 0.9 and group["nesterov"] is True


@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
def test_negative_learning_rate_is_a_config_error(name):
    cfg = load("optimizer", name)
    cfg.lr = -1.0
    with pytest.raises(ConfigError, match=r"^optimizer.*-1"):
        build_optimizer(cfg, nn.Linear(2, 2))


def test_unknown_optimizer_is_a_config_error():
    cfg = OmegaConf.create({"_target_": "torch.optim.NoSuch", "_partial_": True, "lr": 0.1})
    with pytest.raises(ConfigError, match=r"^optimizer"):
        build_optimizer(cfg, nn.Linear(2, 2))


# ---------------------------------------------------------------- schedules


def run_schedule(cfg, steps_per_epoch=SPE, epochs=EPOCHS, lr=LR) -> list[float]:
    """lrs[t] = the learning rate after t optimizer+scheduler steps, t = 0 .. epochs * steps_per_epoch."""
    param = nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.SGD([param], lr=lr)
    scheduler = build_schedule(cfg, optimizer, steps_per_epoch, epochs)
    lrs = [optimizer.param_groups[0]["lr"]]
    for _ in range(epochs * steps_per_epoch):
        optimizer.step()
        scheduler.step()
        lrs.append(optimizer.param_groups[0]["lr"])
    return lrs


def cosine(t: int, steps: int, lr: float, min_lr: float) -> float:
    return min_lr + (lr - min_lr) * (1 + math.cos(math.pi * t / steps)) / 2


def test_every_schedule_file_is_covered():
    # the rest are checked against their formulas in tests/test_schedules.py
    assert {"constant", "cosine", "step"} <= {p.stem for p in (CONFIGS / "schedule").glob("*.yaml")}


@pytest.mark.parametrize("min_lr", [0.0, 0.01])
def test_cosine_schedule_follows_the_formula(min_lr):
    cfg = load("schedule", "cosine")
    cfg.min_lr = min_lr
    lrs = run_schedule(cfg)
    expected = [cosine(t, TOTAL, LR, min_lr) for t in range(TOTAL + 1)]
    assert lrs == pytest.approx(expected, rel=1e-6, abs=1e-9)
    assert lrs[0] == pytest.approx(LR) and lrs[TOTAL // 2] == pytest.approx((LR + min_lr) / 2)
    assert lrs[-1] == pytest.approx(min_lr, abs=1e-9)


@pytest.mark.parametrize("step_epochs, gamma", [(1, 0.5), (2, 0.1), (0.4, 0.5)])
def test_step_schedule_follows_the_formula(step_epochs, gamma):
    cfg = load("schedule", "step")
    cfg.step_epochs, cfg.gamma = step_epochs, gamma
    lrs = run_schedule(cfg)
    every = round(step_epochs * SPE)
    expected = [LR * gamma ** (t // every) for t in range(TOTAL + 1)]
    assert lrs == pytest.approx(expected, rel=1e-6)


def test_constant_schedule_stays():
    assert run_schedule(load("schedule", "constant")) == pytest.approx([LR] * (TOTAL + 1))


def main_expected(name: str, t: int, steps: int) -> float:
    """The main schedule's lr t steps after it starts, over `steps` steps, with the config files' values."""
    if name == "cosine":
        return cosine(t, steps, LR, 0.0)
    if name == "step":
        return LR * 0.5 ** (t // SPE)
    return LR


@pytest.mark.parametrize("name", ["cosine", "step", "constant"])
def test_warmup_ramps_linearly_then_runs_the_main_schedule(name):
    cfg = load("schedule", name)
    cfg.warmup_epochs = 1
    lrs = run_schedule(cfg)
    warmup = SPE
    # linear ramp from lr / warmup_steps, reaching the base lr when the warmup ends
    assert lrs[0] == pytest.approx(LR / warmup)
    assert lrs[warmup] == pytest.approx(LR)
    increments = [lrs[t + 1] - lrs[t] for t in range(warmup)]
    assert all(d > 0 for d in increments)
    assert increments == pytest.approx([increments[0]] * warmup, rel=1e-6)
    assert max(lrs[:warmup]) < LR
    # then the main schedule, over the remaining steps
    remaining = TOTAL - warmup
    expected = [main_expected(name, t - warmup, remaining) for t in range(warmup, TOTAL + 1)]
    assert lrs[warmup:] == pytest.approx(expected, rel=1e-6, abs=1e-9)


def test_warmup_with_fractional_epochs():
    cfg = load("schedule", "constant")
    cfg.warmup_epochs = 0.4  # round(0.4 * 5) = 2 steps
    lrs = run_schedule(cfg)
    assert lrs[0] == pytest.approx(LR / 2) and lrs[2] == pytest.approx(LR) and lrs[-1] == pytest.approx(LR)


@pytest.mark.parametrize("warmup_epochs", [EPOCHS, EPOCHS + 1, -1])
def test_warmup_must_be_shorter_than_training(warmup_epochs):
    cfg = load("schedule", "cosine")
    cfg.warmup_epochs = warmup_epochs
    optimizer = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=LR)
    with pytest.raises(ConfigError, match=r"^schedule\.warmup_epochs"):
        build_schedule(cfg, optimizer, SPE, EPOCHS)


@pytest.mark.parametrize("name, key, value, match", [
    ("cosine", "min_lr", -0.1, r"schedule\.min_lr"),
    ("step", "gamma", 0.0, r"^schedule.*gamma"),
    ("step", "step_epochs", -1, r"^schedule.*step_epochs"),
    ("cosine", "no_such_option", 1, r"^schedule.*no_such_option"),
])
def test_bad_schedule_options_are_config_errors(name, key, value, match):
    cfg = load("schedule", name)
    cfg[key] = value
    optimizer = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=LR)
    with pytest.raises(ConfigError, match=match):
        build_schedule(cfg, optimizer, SPE, EPOCHS)
