"""Optimizers and learning-rate schedules from the `optimizer` and `schedule` groups.

Optimizers are torch.optim classes (a partial that gets the parameters here). Schedules are torch's
lr_scheduler classes too, stepped once per optimizer step; the small factories below only translate
the config's *epochs* into steps, so a schedule keeps its meaning when the batch size changes.
"""

from __future__ import annotations

import inspect
import math
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf
from torch.optim import Optimizer
from torch.optim import lr_scheduler as sched

from trainlab.checks import bad
from trainlab.config import instantiate
from trainlab.errors import ConfigError
from trainlab.param_groups import (backbone_lr_scale, check_optimizer_settings, lr_multipliers,  # noqa: F401
                                   no_decay_bias_norm, param_groups)


def build_optimizer(optimizer_cfg: DictConfig, model: torch.nn.Module) -> Optimizer:
    """The configured torch.optim class over the model's trainable parameters (frozen ones are left out).

    The trainlab keys backbone_lr_scale (default 1.0), lr_multipliers (default {}) and
    no_decay_bias_norm (default true) are taken out before the class is built; they shape the param
    groups (trainlab/param_groups.py): each group carries its "name" and learns at optimizer.lr times
    its "lr_scale". param_groups[0] is the group at optimizer.lr with weight decay whenever there is
    one ("head" when backbone_lr_scale != 1, else "main"), so param_groups[0]["lr"] is optimizer.lr.
    The torch keys are checked first (one line naming the key), then by torch itself.
    """
    settings: dict[str, Any] = (OmegaConf.to_container(optimizer_cfg, resolve=True)
                                if OmegaConf.is_config(optimizer_cfg) else dict(optimizer_cfg))
    scale = backbone_lr_scale(settings.pop("backbone_lr_scale", 1.0))
    multipliers = lr_multipliers(settings.pop("lr_multipliers", None))
    exempt = no_decay_bias_norm(settings.pop("no_decay_bias_norm", True))
    check_optimizer_settings(settings)
    factory = instantiate(OmegaConf.create(settings), "optimizer")
    params = param_groups(model, scale, multipliers, no_decay=exempt and _weight_decay(factory) > 0)
    try:
        optimizer = factory(params)
    except (ValueError, TypeError) as error:  # torch's own checks, e.g. "Invalid learning rate: -1"
        raise ConfigError(f"optimizer: {error}") from None
    for group in optimizer.param_groups:
        # each group took the optimizer's lr; scale it by the group's factor (backbone, lr_multipliers)
        group["lr"] = group["lr"] * group.get("lr_scale", 1.0)
    return optimizer


def _weight_decay(factory: Any) -> float:
    """The weight decay the optimizer will use: the config's, else the class's default (AdamW: 0.01)."""
    keywords = getattr(factory, "keywords", {}) or {}
    if "weight_decay" in keywords:
        return float(keywords["weight_decay"] or 0.0)
    try:
        default = inspect.signature(getattr(factory, "func", factory)).parameters["weight_decay"].default
    except (KeyError, TypeError, ValueError):
        return 0.0
    return float(default) if isinstance(default, (int, float)) else 0.0


# ---------------------------------------------------------------- learning-rate schedules
#
# Every factory has the signature (optimizer, *, steps_per_epoch, total_steps, **keys): the keys are the
# schedule YAML's, in EPOCHS (fractions allowed) and translated to optimizer steps here; total_steps is the
# main schedule's length (training minus warmup). The schedule is stepped once per optimizer step and
# counts from its own beginning (after the warmup, if any). Bad values raise ConfigError naming the key.


def _key_error(key: str, value: Any, wanted: str) -> ConfigError:
    return bad(f"schedule.{key}", value, wanted)


def _number(key: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise _key_error(key, value, "must be a number")
    return float(value)


def _positive(key: str, value: Any) -> float:
    if _number(key, value) <= 0:
        raise _key_error(key, value, "must be > 0")
    return float(value)


def _non_negative(key: str, value: Any) -> float:
    if _number(key, value) < 0:
        raise _key_error(key, value, "must be >= 0")
    return float(value)


def _epochs_to_steps(key: str, epochs: Any, steps_per_epoch: int) -> int:
    """A positive length in epochs as a whole number of steps (at least 1)."""
    return max(1, round(_positive(key, epochs) * steps_per_epoch))


def _base_lr(optimizer: Optimizer) -> float:
    group = optimizer.param_groups[0]
    return float(group.get("initial_lr", group["lr"]))


def _per_group(optimizer: Optimizer, value: float) -> list[float]:
    """`value` for param group 0 (at optimizer.lr), scaled for every other group by its lr ratio to group 0
    (e.g. the backbone at optimizer.lr * backbone_lr_scale keeps its share of the schedule's lrs)."""
    base = _base_lr(optimizer)
    return [value * float(g.get("initial_lr", g["lr"])) / base if base else value for g in optimizer.param_groups]


def _cycle_momentum(optimizer: Optimizer, value: Any) -> bool:
    """auto: cycle momentum only when the optimizer has some (SGD momentum > 0, or Adam-style betas)."""
    if str(value).lower() == "auto":
        defaults = optimizer.defaults
        return "betas" in defaults or float(defaults.get("momentum", 0) or 0) > 0
    if isinstance(value, bool):
        if value and "betas" not in optimizer.defaults and "momentum" not in optimizer.defaults:
            raise _key_error("cycle_momentum", value, "this optimizer has no momentum to cycle; use auto or false")
        return value
    raise _key_error("cycle_momentum", value, "must be auto, true or false")


def constant_schedule(optimizer: Optimizer, *, steps_per_epoch: int, total_steps: int) -> sched.LRScheduler:
    """lr(t) = lr."""
    return sched.ConstantLR(optimizer, factor=1.0, total_iters=0)


def step_schedule(optimizer: Optimizer, *, steps_per_epoch: int, total_steps: int,
                  step_epochs: float = 1, gamma: float = 0.5) -> sched.LRScheduler:
    """lr(t) = lr * gamma ** floor(t / step_epochs)  (StepLR)."""
    every = _epochs_to_steps("step_epochs", step_epochs, steps_per_epoch)
    return sched.StepLR(optimizer, step_size=every, gamma=_positive("gamma", gamma))


def multistep_schedule(optimizer: Optimizer, *, steps_per_epoch: int, total_steps: int,
                       milestones: list = (0.5, 0.75), gamma: float = 0.1,
                       milestone_unit: str = "fraction") -> sched.LRScheduler:
    """lr(t) = lr * gamma ** (number of milestones <= t)  (MultiStepLR). milestone_unit `fraction` (the
    default): each milestone in (0, 1) is that fraction of this schedule's length (total_steps, i.e. after any
    warmup), rounded to a whole step; `epoch`: milestones in epochs, counted from the end of the warmup. Either
    way the milestones are strictly increasing (as whole steps), after the first step and before the end."""
    if milestone_unit not in ("fraction", "epoch"):
        raise _key_error("milestone_unit", milestone_unit,
                         "must be fraction or epoch; fraction: milestones are shares of the run (e.g. [0.5, 0.75]), "
                         "epoch: milestones are epochs (e.g. [30, 60, 90])")
    fraction = milestone_unit == "fraction"
    if not isinstance(milestones, (list, tuple)) or not milestones:
        raise _key_error("milestones", milestones,
                         "must be a non-empty list; give fractions of the run, e.g. [0.5, 0.75]" if fraction else
                         "must be a non-empty list; give epochs, e.g. [30, 60, 90]")
    given = list(milestones)
    numbers = all(not isinstance(m, bool) and isinstance(m, (int, float)) and math.isfinite(m) for m in given)
    if fraction and not (numbers and all(0 < m < 1 for m in given)):
        hint = ("these look like epochs: add schedule.milestone_unit=epoch, or give fractions, e.g. [0.5, 0.75]"
                if numbers and all(m >= 1 for m in given) else
                "give fractions of the run, e.g. [0.5, 0.75], or epochs with schedule.milestone_unit=epoch")
        raise _key_error("milestones", given, f"with schedule.milestone_unit=fraction each must be in (0, 1); {hint}")
    if not fraction and not (numbers and all(m > 0 for m in given)):
        raise _key_error("milestones", given, "with schedule.milestone_unit=epoch each must be a number of epochs > 0; "
                         "e.g. [30, 60, 90], or fractions of the run with schedule.milestone_unit=fraction")
    steps = []
    for m in given:
        step = round(m * total_steps) if fraction else round(m * steps_per_epoch)
        where = f"{m:g} of {total_steps} steps" if fraction else f"epoch {m:g}"
        if step < 1:
            raise _key_error("milestones", given, f"{where} rounds to step 0, the start of this schedule; "
                             "raise it or trainer.epochs")
        if steps and step <= steps[-1]:
            if m > previous:  # increasing, but both round to the same step
                raise _key_error("milestones", given, f"{previous:g} and {m:g} fall on the same step ({step}"
                                 + (f" of {total_steps}" if fraction else "") + "); spread them or raise trainer.epochs")
            raise _key_error("milestones", given, "must be strictly increasing; sort them and drop repeats")
        if step >= total_steps:
            if fraction:
                raise _key_error("milestones", given,
                                 f"{where} rounds to step {step}, the end of this schedule (after any warmup); "
                                 "lower it or raise trainer.epochs")
            raise _key_error("milestones", given,
                             f"epoch {m} is past the last epoch ({total_steps / steps_per_epoch:g} epochs of "
                             "this schedule, after any warmup); lower it or raise trainer.epochs")
        steps.append(step)
        previous = m
    return sched.MultiStepLR(optimizer, milestones=steps, gamma=_positive("gamma", gamma))


def exponential_schedule(optimizer: Optimizer, *, steps_per_epoch: int, total_steps: int,
                         k: float = 0.1) -> sched.LRScheduler:
    """lr(t) = lr * exp(-k t), t in epochs: ExponentialLR with gamma = exp(-k / steps_per_epoch)."""
    return sched.ExponentialLR(optimizer, gamma=math.exp(-_non_negative("k", k) / steps_per_epoch))


def inverse_time_schedule(optimizer: Optimizer, *, steps_per_epoch: int, total_steps: int,
                          k: float = 1.0) -> sched.LRScheduler:
    """lr(t) = lr / (1 + k t), t in epochs (LambdaLR: torch has no such class)."""
    k = _non_negative("k", k)
    return sched.LambdaLR(optimizer, lambda step: 1.0 / (1.0 + k * step / steps_per_epoch))


def inverse_sqrt_schedule(optimizer: Optimizer, *, steps_per_epoch: int, total_steps: int,
                          t0_epochs: float = 1.0) -> sched.LRScheduler:
    """lr(t) = lr / sqrt(1 + t / t0), t and t0 in epochs, t counted from the end of the warmup (LambdaLR).

    With t0_epochs = warmup_epochs this is exactly the Transformer "1/sqrt(step) after warmup" schedule:
    lr * sqrt(W / s) at step s >= W of training equals lr / sqrt(1 + t / W) with t = s - W."""
    t0 = _positive("t0_epochs", t0_epochs) * steps_per_epoch
    return sched.LambdaLR(optimizer, lambda step: 1.0 / math.sqrt(1.0 + step / t0))


def ganin_schedule(optimizer: Optimizer, *, steps_per_epoch: int, total_steps: int, alpha: float = 10.0,
                   beta: float = 0.75) -> sched.LRScheduler:
    """DANN's annealing (Ganin et al. 2016): lr(p) = lr / (1 + alpha p)^beta over training progress p in [0, 1]
    (LambdaLR: torch has no such class)."""
    from trainlab.adaptation.reversal import ganin_lr_factor

    alpha, beta, total = _non_negative("alpha", alpha), _non_negative("beta", beta), max(1, total_steps)
    return sched.LambdaLR(optimizer, lambda step: ganin_lr_factor(min(step, total) / total, alpha, beta))


def linear_schedule(optimizer: Optimizer, *, steps_per_epoch: int, total_steps: int,
                    end_factor: float = 0.0) -> sched.LRScheduler:
    """lr(t) = lr * (1 + (end_factor - 1) t / T): straight from lr to lr * end_factor at the end (LinearLR)."""
    if not 0.0 <= _number("end_factor", end_factor) <= 1.0:
        raise _key_error("end_factor", end_factor, "must be in [0, 1]")
    return sched.LinearLR(optimizer, start_factor=1.0, end_factor=float(end_factor), total_iters=max(1, total_steps))


def cosine_schedule(optimizer: Optimizer, *, steps_per_epoch: int, total_steps: int,
                    min_lr: float = 0.0) -> sched.LRScheduler:
    """lr(t) = min_lr + (lr - min_lr) (1 + cos(pi t / T)) / 2  (CosineAnnealingLR)."""
    return sched.CosineAnnealingLR(optimizer, T_max=max(1, total_steps), eta_min=_non_negative("min_lr", min_lr))


def cosine_restarts_schedule(optimizer: Optimizer, *, steps_per_epoch: int, total_steps: int,
                             cycle_epochs: float = 10, cycle_mult: int = 1,
                             min_lr: float = 0.0) -> sched.LRScheduler:
    """SGDR (CosineAnnealingWarmRestarts): cosine from lr to min_lr over cycle_epochs, then back to lr;
    each next cycle is cycle_mult times longer (a whole number >= 1)."""
    cycle = _epochs_to_steps("cycle_epochs", cycle_epochs, steps_per_epoch)
    if isinstance(cycle_mult, bool) or not isinstance(cycle_mult, int) or cycle_mult < 1:
        raise _key_error("cycle_mult", cycle_mult, "must be a whole number >= 1")
    return sched.CosineAnnealingWarmRestarts(optimizer, T_0=cycle, T_mult=cycle_mult,
                                             eta_min=_non_negative("min_lr", min_lr))


def cyclic_schedule(optimizer: Optimizer, *, steps_per_epoch: int, total_steps: int, max_lr: float | None = None,
                    base_lr: float | None = None, half_cycle_epochs: float = 2, policy: str = "triangular",
                    cycle_momentum: Any = "auto", base_momentum: float = 0.8,
                    max_momentum: float = 0.9) -> sched.LRScheduler:
    """CyclicLR: a triangle from base_lr (null = optimizer.lr) up to max_lr in half_cycle_epochs and back
    down in as many (max_lr null = 10 x base_lr); policy triangular (every peak at max_lr) or triangular2 (the
    amplitude halves each cycle)."""
    base = _base_lr(optimizer) if base_lr is None else _positive("base_lr", base_lr)
    max_lr = 10.0 * base if max_lr is None else max_lr
    if _positive("max_lr", max_lr) < base:
        raise _key_error("max_lr", max_lr, f"must be >= the base learning rate {base:g}")
    if policy not in ("triangular", "triangular2"):
        raise _key_error("policy", policy, "must be triangular or triangular2")
    half = _epochs_to_steps("half_cycle_epochs", half_cycle_epochs, steps_per_epoch)
    return sched.CyclicLR(optimizer, base_lr=_per_group(optimizer, base), max_lr=_per_group(optimizer, float(max_lr)),
                          step_size_up=half, mode=policy,
                          cycle_momentum=_cycle_momentum(optimizer, cycle_momentum),
                          base_momentum=base_momentum, max_momentum=max_momentum)


def onecycle_schedule(optimizer: Optimizer, *, steps_per_epoch: int, total_steps: int, max_lr: float | None = None,
                      pct_start: float = 0.3, div_factor: float = 25.0, final_div_factor: float = 1e4,
                      anneal_strategy: str = "cos", cycle_momentum: Any = "auto", base_momentum: float = 0.85,
                      max_momentum: float = 0.95) -> sched.LRScheduler:
    """OneCycleLR: from max_lr / div_factor up to max_lr (null = optimizer.lr) over the first pct_start of
    training, then down to max_lr / (div_factor * final_div_factor) at the last step. Has its own warmup."""
    peak = _base_lr(optimizer) if max_lr is None else _positive("max_lr", max_lr)
    if not 0.0 < _number("pct_start", pct_start) < 1.0:
        raise _key_error("pct_start", pct_start, "must be in (0, 1)")
    if anneal_strategy not in ("cos", "linear"):
        raise _key_error("anneal_strategy", anneal_strategy, "must be cos or linear")
    return sched.OneCycleLR(optimizer, max_lr=_per_group(optimizer, peak), total_steps=max(2, total_steps), pct_start=float(pct_start),
                            div_factor=_positive("div_factor", div_factor),
                            final_div_factor=_positive("final_div_factor", final_div_factor),
                            anneal_strategy=anneal_strategy,
                            cycle_momentum=_cycle_momentum(optimizer, cycle_momentum),
                            base_momentum=base_momentum, max_momentum=max_momentum)


class PlateauLR(sched.ReduceLROnPlateau):
    """ReduceLROnPlateau for the trainer's convention: `needs_metric = True`; step(metric) once per epoch
    after validation; step() without a metric (the per-optimizer-step call) does nothing."""

    needs_metric = True

    def step(self, metrics: Any = None, epoch: Any = None) -> None:  # type: ignore[override]
        if metrics is not None:
            super().step(metrics)


class WarmupPlateau:
    """Linear warmup per optimizer step, then ReduceLROnPlateau per epoch (step(metric)); `needs_metric`.

    The warmup advances from an optimizer step post-hook, so it ramps per step even though the trainer
    calls only scheduler.step(metric) (once per epoch) for a needs_metric schedule; step() without a
    metric does nothing. Metrics that arrive before the warmup is over are ignored. state_dict() holds
    the step count and both schedulers' states (plain values: fine for torch.load(weights_only=True))."""

    needs_metric = True

    def __init__(self, optimizer: Optimizer, warmup_steps: int, plateau: PlateauLR) -> None:
        self.optimizer = optimizer
        self.plateau = plateau
        self.warmup_steps = warmup_steps
        self.warmup = sched.LinearLR(optimizer, start_factor=1.0 / warmup_steps, end_factor=1.0,
                                     total_iters=warmup_steps)
        self.steps = 0
        self._hook = optimizer.register_step_post_hook(self._after_optimizer_step)

    @property
    def in_warmup(self) -> bool:
        return self.steps < self.warmup_steps

    def _after_optimizer_step(self, optimizer: Optimizer, args: Any, kwargs: Any) -> None:
        if self.in_warmup:
            self.steps += 1
            self.warmup.step()

    def step(self, metrics: Any = None) -> None:
        if metrics is not None and not self.in_warmup:  # once per epoch, after validation
            self.plateau.step(metrics)

    def get_last_lr(self) -> list[float]:
        return [group["lr"] for group in self.optimizer.param_groups]

    def state_dict(self) -> dict[str, Any]:
        return {"steps": self.steps, "warmup_steps": self.warmup_steps,
                "warmup": self.warmup.state_dict(), "plateau": self.plateau.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.steps = state["steps"]
        self.warmup_steps = state["warmup_steps"]
        self.warmup.load_state_dict(state["warmup"])
        self.plateau.load_state_dict(state["plateau"])


def plateau_schedule(optimizer: Optimizer, *, steps_per_epoch: int, total_steps: int, mode: str = "max",
                     factor: float = 0.1, patience: int = 5, threshold: float = 1e-4,
                     threshold_mode: str = "rel", cooldown: int = 0, min_lr: float = 0.0) -> PlateauLR:
    """ReduceLROnPlateau on trainer.monitor (mode = trainer.mode): lr *= factor once the metric has not
    improved (by more than threshold) for more than `patience` epochs; never below min_lr."""
    if not 0.0 < _number("factor", factor) < 1.0:
        raise _key_error("factor", factor, "must be in (0, 1)")
    for key, value in (("patience", patience), ("cooldown", cooldown)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise _key_error(key, value, "must be a whole number of epochs >= 0")
    if threshold_mode not in ("rel", "abs"):
        raise _key_error("threshold_mode", threshold_mode, "must be rel or abs")
    if mode not in ("min", "max"):
        raise ConfigError(f"trainer.mode={mode!r}: must be max or min")
    return PlateauLR(optimizer, mode=mode, factor=float(factor), patience=patience,
                     threshold=_non_negative("threshold", threshold), threshold_mode=threshold_mode,
                     cooldown=cooldown, min_lr=_non_negative("min_lr", min_lr))


def build_schedule(schedule_cfg: DictConfig, optimizer: Optimizer, steps_per_epoch: int,
                   epochs: int, mode: str = "max") -> Any:
    """The configured schedule over epochs * steps_per_epoch steps, after `warmup_epochs` of linear warmup.

    `mode` is the run's trainer.mode (max for val/acc, min for val/loss); only `plateau` uses it. A
    scheduler with `needs_metric = True` (plateau) also wants scheduler.step(metric) after each validation.
    """
    import inspect

    settings: dict[str, Any] = (OmegaConf.to_container(schedule_cfg, resolve=True)
                                if OmegaConf.is_config(schedule_cfg) else dict(schedule_cfg))
    warmup_epochs = settings.pop("warmup_epochs", 0) or 0
    total_steps = epochs * steps_per_epoch
    if isinstance(warmup_epochs, bool) or not isinstance(warmup_epochs, (int, float)):
        raise ConfigError(f"schedule.warmup_epochs={warmup_epochs!r}: must be a number of epochs >= 0")
    warmup_steps = round(warmup_epochs * steps_per_epoch)
    if warmup_epochs < 0 or (warmup_steps and warmup_steps >= total_steps):
        raise ConfigError(
            f"schedule.warmup_epochs={warmup_epochs}: must be >= 0 and shorter than training ({epochs} epochs)"
        )
    factory = instantiate(OmegaConf.create(settings), "schedule")
    function = getattr(factory, "func", factory)
    if function is onecycle_schedule and warmup_steps:
        raise ConfigError(f"schedule.warmup_epochs={warmup_epochs}: must be 0 for onecycle "
                          "(it warms up on its own over the first pct_start of training)")
    try:  # only plateau takes the run's mode; the signature of the function itself (the partial may not bind)
        takes_mode = "mode" in inspect.signature(function).parameters
    except (TypeError, ValueError):
        takes_mode = False
    extra = {"mode": mode} if takes_mode else {}
    try:
        main = factory(optimizer, steps_per_epoch=steps_per_epoch, total_steps=total_steps - warmup_steps, **extra)
    except TypeError as error:  # an unknown or missing key in the schedule's config
        raise ConfigError(f"schedule: {error}") from None
    except ValueError as error:  # torch's own checks
        raise ConfigError(f"schedule: {error}") from None
    if not warmup_steps:
        return main
    if getattr(main, "needs_metric", False):
        return WarmupPlateau(optimizer, warmup_steps, main)
    # Linear ramp from lr/warmup_steps up to lr, then hand over to the main schedule.
    warmup = sched.LinearLR(optimizer, start_factor=1.0 / warmup_steps, end_factor=1.0, total_iters=warmup_steps)
    return sched.SequentialLR(optimizer, [warmup, main], milestones=[warmup_steps])


def default_metric(epochs: int, mode: str = "max"):
    """lr_curve's scripted validation metric: improves every epoch for the first third of the epochs
    (at least 1), then stays flat; accuracy-like (rising) for mode max, loss-like (falling) for min."""
    improving = max(1, epochs // 3)

    def metric(epoch: int) -> float:  # epoch: 0-based index of the epoch just finished
        value = 0.5 + 0.4 * min(epoch + 1, improving) / improving
        return value if mode == "max" else 1.0 - value

    return metric


def lr_curve(schedule_cfg: Any, lr: float, epochs: int, steps_per_epoch: int, metric_fn=None,
             mode: str = "max") -> list[float]:
    """The learning rate each of the epochs * steps_per_epoch optimizer steps uses under this schedule
    (a throwaway SGD without momentum on a dummy parameter). A schedule that needs a metric (plateau) gets
    metric_fn(epoch) after each epoch (epoch = 0, 1, ...); the default is default_metric(epochs, mode)."""
    param = torch.nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.SGD([param], lr=lr)
    scheduler = build_schedule(schedule_cfg, optimizer, steps_per_epoch, epochs, mode=mode)
    needs_metric = getattr(scheduler, "needs_metric", False)
    metric_fn = metric_fn or default_metric(epochs, mode)
    lrs: list[float] = []
    for epoch in range(epochs):
        for _ in range(steps_per_epoch):
            lrs.append(float(optimizer.param_groups[0]["lr"]))
            optimizer.step()
            scheduler.step()
        if needs_metric:
            scheduler.step(metric_fn(epoch))
    return lrs
