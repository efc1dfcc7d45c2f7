"""Optimizers and learning-rate schedules from the `optimizer` and `schedule` groups.

Optimizers are torch.optim classes (a partial that gets the parameters here). Schedules are torch's
lr_scheduler classes too, stepped once per optimizer step; the small factories below only translate
the config's *epochs* into steps, so a schedule keeps its meaning when the batch size changes.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf
from torch.optim import Optimizer
from torch.optim import lr_scheduler as sched

from trainlab.config import instantiate
from trainlab.errors import ConfigError


def backbone_lr_scale(value: Any) -> float:
    """optimizer.backbone_lr_scale (a trainlab key, not the torch class's): a number >= 0; null = 1."""
    if value is None:
        return 1.0
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
        raise ConfigError(f"optimizer.backbone_lr_scale={value!r}: must be a number >= 0 "
                          "(the backbone learns at optimizer.lr times it; the head at optimizer.lr)")
    return float(value)


def param_groups(model: torch.nn.Module, scale: float = 1.0, head_name: str = "head") -> list:
    """The trainable parameters (requires_grad) for the optimizer: one plain list when scale == 1; else a
    group "head" (the model's `head` module, at the optimizer's lr) and a group "backbone" (every other
    trainable parameter; build_optimizer sets its lr to lr * scale). Empty groups are left out."""
    trainable = [p for p in model.parameters() if p.requires_grad]
    if not trainable:
        raise ConfigError("optimizer: the model has no trainable parameters (all have requires_grad=False; "
                          "does model.freeze freeze everything?)")
    if scale == 1.0:
        return trainable
    head = getattr(model, head_name, None)
    if not isinstance(head, torch.nn.Module):
        raise ConfigError(f"optimizer.backbone_lr_scale={scale:g}: this model has no `{head_name}` module to tell "
                          "the classifier from the backbone; leave the scale at 1.0")
    in_head = {id(p) for p in head.parameters()}
    groups = [{"name": "head", "params": [p for p in trainable if id(p) in in_head]},
              {"name": "backbone", "params": [p for p in trainable if id(p) not in in_head], "lr_scale": scale}]
    return [group for group in groups if group["params"]]


def build_optimizer(optimizer_cfg: DictConfig, model: torch.nn.Module) -> Optimizer:
    """The configured torch.optim class over the model's trainable parameters (frozen ones are left out).

    optimizer.backbone_lr_scale (default 1.0) is taken out before the class is built: with a scale other
    than 1 the head trains at optimizer.lr and the rest at optimizer.lr * scale, in two param groups
    (head first, so param_groups[0]["lr"] is still optimizer.lr; each group carries its "name").
    """
    settings: dict[str, Any] = (OmegaConf.to_container(optimizer_cfg, resolve=True)
                                if OmegaConf.is_config(optimizer_cfg) else dict(optimizer_cfg))
    scale = backbone_lr_scale(settings.pop("backbone_lr_scale", 1.0))
    factory = instantiate(OmegaConf.create(settings), "optimizer")
    params = param_groups(model, scale)
    try:
        optimizer = factory(params)
    except (ValueError, TypeError) as error:  # torch's own checks, e.g. "Invalid learning rate: -1"
        raise ConfigError(f"optimizer: {error}") from None
    for group in optimizer.param_groups:
        if "lr_scale" in group:  # the group took the optimizer's lr; the backbone learns at a fraction of it
            group["lr"] = group["lr"] * group["lr_scale"]
    return optimizer


def constant_schedule(optimizer: Optimizer, *, steps_per_epoch: int, total_steps: int) -> sched.LRScheduler:
    return sched.ConstantLR(optimizer, factor=1.0, total_iters=0)


def step_schedule(optimizer: Optimizer, *, steps_per_epoch: int, total_steps: int,
                  step_epochs: float = 1, gamma: float = 0.5) -> sched.LRScheduler:
    if step_epochs <= 0 or gamma <= 0:
        raise ConfigError(f"schedule: step_epochs={step_epochs} and gamma={gamma} must be > 0")
    return sched.StepLR(optimizer, step_size=max(1, round(step_epochs * steps_per_epoch)), gamma=gamma)


def cosine_schedule(optimizer: Optimizer, *, steps_per_epoch: int, total_steps: int,
                    min_lr: float = 0.0) -> sched.LRScheduler:
    if min_lr < 0:
        raise ConfigError(f"schedule.min_lr={min_lr}: must be >= 0")
    return sched.CosineAnnealingLR(optimizer, T_max=max(1, total_steps), eta_min=min_lr)


def build_schedule(schedule_cfg: DictConfig, optimizer: Optimizer, steps_per_epoch: int,
                   epochs: int) -> sched.LRScheduler:
    """The configured schedule over epochs * steps_per_epoch steps, after `warmup_epochs` of linear warmup."""
    settings: dict[str, Any] = OmegaConf.to_container(schedule_cfg, resolve=True)
    warmup_epochs = settings.pop("warmup_epochs", 0) or 0
    total_steps = epochs * steps_per_epoch
    warmup_steps = round(warmup_epochs * steps_per_epoch)
    if warmup_epochs < 0 or (warmup_steps and warmup_steps >= total_steps):
        raise ConfigError(
            f"schedule.warmup_epochs={warmup_epochs}: must be >= 0 and shorter than training ({epochs} epochs)"
        )
    factory = instantiate(OmegaConf.create(settings), "schedule")
    try:
        main = factory(optimizer, steps_per_epoch=steps_per_epoch, total_steps=total_steps - warmup_steps)
    except TypeError as error:  # an unknown or missing key in the schedule's config
        raise ConfigError(f"schedule: {error}") from None
    if not warmup_steps:
        return main
    # Linear ramp from lr/warmup_steps up to lr, then hand over to the main schedule.
    warmup = sched.LinearLR(optimizer, start_factor=1.0 / warmup_steps, end_factor=1.0, total_iters=warmup_steps)
    return sched.SequentialLR(optimizer, [warmup, main], milestones=[warmup_steps])
