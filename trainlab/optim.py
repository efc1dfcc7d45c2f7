"""Optimizers and learning-rate schedules from the `optimizer` and `schedule` groups.

Optimizers are torch.optim classes (a partial that gets the parameters here). Schedules are torch's
lr_scheduler classes too, stepped once per optimizer step; the small factories below only translate
the config's *epochs* into steps, so a schedule keeps its meaning when the batch size changes.
"""

from __future__ import annotations

from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf
from torch.optim import Optimizer
from torch.optim import lr_scheduler as sched

from trainlab.config import instantiate
from trainlab.errors import ConfigError


def build_optimizer(optimizer_cfg: DictConfig, model: torch.nn.Module) -> Optimizer:
    factory = instantiate(optimizer_cfg, "optimizer")
    params = [p for p in model.parameters() if p.requires_grad]
    try:
        return factory(params)
    except (ValueError, TypeError) as error:  # torch's own checks, e.g. "Invalid learning rate: -1"
        raise ConfigError(f"optimizer: {error}") from None


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
