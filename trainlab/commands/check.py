"""`trainlab check`: sanity checks of a training config before spending hours on it.

On the config `trainlab train` would use, with regularization switched off (weight decay, dropout /
dropconnect / drop path / block dropout, augmentation ops and mixing, label smoothing, l1/l2; the report
and check.json say which were on), three checks, each from its own copy of the freshly built model with
its own freshly built optimizer at optimizer.lr (no schedule, no warmup), each seeded with `seed`:

1. initial loss: the untrained model's mean cross-entropy on the first check.overfit_batches training
   batches (training mode: what the first step sees) must be within check.initial_tolerance nats of
   log(C), the loss of a uniform guess over C classes. An absolute bound in nats, whatever C: a model that
   starts with small random logits z has a loss of about log(C) + var(z) / 2, so the excess measures how
   confident the init is, not how many classes there are.
2. overfit: those same batches, fixed, trained on over and over for at most check.overfit_steps optimizer
   steps; passes once one pass over them (training mode, each batch scored just before its own step)
   reaches check.overfit_accuracy.
3. loss falls: check.steps optimizer steps on the whole (shuffled) training split; passes when the mean
   loss of the last check.window steps is below check.fall_ratio x the mean of the first check.window
   (and every loss is finite).

The training itself is trainlab's Trainer (trainlab.build.build_trainer), on the pieces
trainlab.build.build_experiment builds. Exit status 1 when a check fails, 0 when all pass.
"""

from __future__ import annotations

import json
import math
import sys
import time
from pathlib import Path
from typing import Any, Optional

from trainlab.callbacks.base import Callback  # no torch import: `--help` stays fast

CONFIG = "check"

# check.* keys: their defaults (also in configs/check.yaml) and what each must be
DEFAULTS: dict[str, Any] = {
    "initial_tolerance": 0.5,
    "overfit_batches": 5,
    "overfit_steps": 500,
    "overfit_accuracy": 0.99,
    "steps": 100,
    "window": 10,
    "fall_ratio": 0.9,
}
WHOLE = ("overfit_batches", "overfit_steps", "steps", "window")
FRACTIONS = ("overfit_accuracy", "fall_ratio")
# model keys that regularize (the model groups' dropout-like keys), switched off to 0
MODEL_REGULARIZERS = ("dropout", "dropconnect", "drop_path", "block_dropout")
TRAINER_REGULARIZERS = ("label_smoothing", "l1", "l2")


# ---------------------------------------------------------------- config: keys and the transformation


def settings(cfg) -> dict[str, Any]:
    """check.* as a plain dict (missing keys at their defaults)."""
    given = cfg.get("check") or {}
    return {key: given.get(key, default) for key, default in DEFAULTS.items()}


def check(cfg, context) -> None:
    """The check.* keys, before anything is built: one line naming the first bad key."""
    from trainlab.checks import bad, is_int, is_number

    given = cfg.get("check")
    if given is not None and not hasattr(given, "keys"):
        raise bad("check", given, "must be a mapping of the check keys", "e.g. check.steps=100")
    for key in (given or {}).keys():
        if key not in DEFAULTS:
            raise bad(f"check.{key}", given[key], "no such key", f"the check keys are {', '.join(DEFAULTS)}")
    values = settings(cfg)
    for key in WHOLE:
        if not is_int(values[key]) or values[key] < 1:
            raise bad(f"check.{key}", values[key], "must be a whole number >= 1", f"e.g. check.{key}={DEFAULTS[key]}")
    for key in FRACTIONS:
        if not is_number(values[key]) or not 0 < values[key] <= 1:
            raise bad(f"check.{key}", values[key], "must be a fraction in (0, 1]", f"e.g. check.{key}={DEFAULTS[key]}")
    tolerance = values["initial_tolerance"]
    if not is_number(tolerance) or not 0 < tolerance < math.inf:
        raise bad("check.initial_tolerance", tolerance, "must be a number of nats > 0",
                  "e.g. check.initial_tolerance=0.5")
    if 2 * values["window"] > values["steps"]:
        raise bad("check.window", values["window"], f"must be at most half of check.steps ({values['steps']}): "
                  "the first and last windows must not overlap", "lower check.window or raise check.steps")
    if values["overfit_steps"] < values["overfit_batches"]:
        raise bad("check.overfit_steps", values["overfit_steps"],
                  f"must be >= check.overfit_batches ({values['overfit_batches']}): one pass over the sample "
                  "takes that many steps", "raise check.overfit_steps or lower check.overfit_batches")


def _plain(value: Any) -> Any:
    from omegaconf import OmegaConf

    return OmegaConf.to_container(value, resolve=True) if OmegaConf.is_config(value) else value


def optimizer_default_decay(optimizer_cfg) -> float:
    """The weight decay the optimizer class uses when its config has no weight_decay key (AdamW: 0.01)."""
    import inspect

    from hydra.utils import get_class

    try:
        parameter = inspect.signature(get_class(optimizer_cfg.get("_target_"))).parameters.get("weight_decay")
    except Exception:  # not a class we can look at: nothing to switch off
        return 0.0
    default = getattr(parameter, "default", 0.0)
    return float(default) if isinstance(default, (int, float)) and not isinstance(default, bool) else 0.0


def without_regularization(cfg):
    """(a copy of cfg with regularization switched off, what was on): a list of {key, was, now}."""
    from omegaconf import OmegaConf, open_dict

    off = OmegaConf.create(OmegaConf.to_container(cfg, resolve=True))
    switched: list[dict[str, Any]] = []

    def switch(node, key: str, path: str, value: Any) -> None:
        if node.get(key) != value:
            switched.append({"key": path, "was": _plain(node.get(key)), "now": value})
            with open_dict(node):
                node[key] = value

    if "weight_decay" in off.optimizer or optimizer_default_decay(off.optimizer):
        switch(off.optimizer, "weight_decay", "optimizer.weight_decay", 0.0)
    for key in MODEL_REGULARIZERS:
        if key in off.model:  # torchvision's null (its own default dropout) becomes 0 too
            switch(off.model, key, f"model.{key}", 0.0)
    if off.augmentation.get("ops"):
        switch(off.augmentation, "ops", "augmentation.ops", {})
    if off.augmentation.get("mix"):
        switch(off.augmentation, "mix", "augmentation.mix", None)
    for key in TRAINER_REGULARIZERS:
        switch(off.trainer, key, f"trainer.{key}", 0.0)
    return off, switched


def as_overrides(switched: list[dict[str, Any]]) -> list[str]:
    """The switches as the command-line overrides that would make them."""
    def shown(value):
        return "{}" if value == {} else "null" if value is None else str(value)

    return [f"{item['key']}={shown(item['now'])}" for item in switched]


# ---------------------------------------------------------------- verdicts (plain numbers in, no torch)


def finite(value: Optional[float]) -> bool:
    return value is not None and math.isfinite(value)


def _number(value: Optional[float]) -> Any:
    """A figure for JSON: non-finite values as the strings 'nan' / 'inf' / '-inf' (JSON has no NaN)."""
    if value is None or finite(value):
        return value
    return str(value)


def initial_verdict(loss: float, classes: int, tolerance: float) -> dict[str, Any]:
    log_c = math.log(classes)
    difference = loss - log_c if finite(loss) else math.nan
    passed = finite(loss) and abs(difference) <= tolerance
    advice = None
    if not finite(loss):
        advice = ("the untrained model's loss is not finite: the initialization (or the data) gives NaN/Inf; "
                  "check init and the preprocessing")
    elif difference > tolerance:
        advice = (f"the initial loss is {difference:.2f} nats above log({classes}): the model starts confidently "
                  "wrong, so the head or the initialization is off (too large an init scale, a biased head); "
                  "try init=default, or init.zero_init_head=true")
    elif difference < -tolerance:
        advice = (f"the initial loss is {-difference:.2f} nats below log({classes}), better than guessing before "
                  "any training: the head or the initialization is off, or the labels leak into the inputs")
    return {"passed": passed, "initial_loss": _number(loss), "log_classes": log_c, "classes": classes,
            "difference": _number(difference), "tolerance": tolerance, "advice": advice}


def overfit_verdict(accuracy: float, steps: int, target: float, max_steps: int, *, final_loss: Optional[float],
                    diverged: bool, samples: int, batches: int) -> dict[str, Any]:
    passed = not diverged and accuracy >= target
    advice = None
    if diverged:
        advice = ("the loss became NaN/Inf while overfitting the sample: the lr is too high (lower optimizer.lr, "
                  "e.g. 10x) or the initialization is bad")
    elif not passed:
        advice = (f"cannot overfit {samples} examples in {max_steps} steps: the model may be too small, the lr too "
                  "low or too high, the initialization unable to break symmetry (init=zeros/constant), or the data "
                  "and labels do not match (a bug in the data pipeline)")
    return {"passed": passed, "accuracy": accuracy, "target": target, "steps": steps, "max_steps": max_steps,
            "final_loss": _number(final_loss), "diverged": diverged, "samples": samples, "batches": batches,
            "advice": advice}


def falling_verdict(losses: list[float], steps: int, window: int, ratio: float,
                    diverged_at: Optional[int] = None) -> dict[str, Any]:
    """losses: the mean training loss of each optimizer step, in order (shorter when training diverged)."""
    non_finite = next((i + 1 for i, loss in enumerate(losses) if not finite(loss)), None)
    diverged_at = diverged_at if diverged_at is not None else non_finite
    enough = len(losses) >= 2 * window
    first = sum(losses[:window]) / window if enough else None
    last = sum(losses[-window:]) / window if enough else None
    measured = diverged_at is None and enough and finite(first) and finite(last) and first > 0
    observed = last / first if measured else None
    passed = measured and last < ratio * first
    advice = None
    if diverged_at is not None:
        advice = (f"the loss became NaN/Inf at step {diverged_at}: the lr is too high (lower optimizer.lr, e.g. "
                  "10x, or add schedule.warmup_epochs) or the initialization is bad")
    elif not measured:
        advice = f"too few steps to compare: raise check.steps (at least 2 x check.window = {2 * window})"
    elif last >= first:
        advice = ("the loss rises: the lr is too high (lower optimizer.lr, e.g. 10x) or the initialization "
                  "is bad")
    elif not passed:
        advice = ("the loss barely falls: the lr is too low (raise optimizer.lr, e.g. 3-10x) or the "
                  "initialization is bad (init=zeros/constant cannot break symmetry)")
    return {"passed": passed, "first_mean": _number(first), "last_mean": _number(last), "ratio": observed,
            "required_ratio": ratio, "steps": steps, "steps_run": len(losses), "window": window,
            "diverged_at_step": diverged_at, "losses": [_number(loss) for loss in losses], "advice": advice}


# ---------------------------------------------------------------- the checks (torch from here on)


class Batches:
    """A loader the Trainer can run an epoch over: a fixed list of batches (the overfit sample), or `count`
    batches drawn from `loader` across as many of its epochs as that takes."""

    def __init__(self, generator, batches: Optional[list] = None, loader=None, count: int = 0):
        self.generator, self.batches, self.loader = generator, batches, loader
        self.count = len(batches) if batches is not None else count

    def __len__(self) -> int:
        return self.count

    def __iter__(self):
        if self.batches is not None:
            yield from self.batches
            return
        given = 0
        while given < self.count:
            for batch in self.loader:
                yield batch
                given += 1
                if given == self.count:
                    return


class StepLosses(Callback):
    """Keeps train/loss of every log point (with log_every = 1: of every optimizer step)."""

    def __init__(self):
        self.losses: list[float] = []

    def on_log(self, trainer, scalars: dict[str, float]) -> None:
        self.losses.append(scalars["train/loss"])


def fresh_trainer(experiment, initial, callbacks=None):
    """The Trainer on a new copy of the initial model, a new optimizer at optimizer.lr and a constant lr."""
    import copy
    import dataclasses

    import torch

    from trainlab.build import build_trainer
    from trainlab.optim import build_optimizer
    from trainlab.runtime import seed_everything

    cfg = experiment.cfg
    seed_everything(cfg.seed, cfg.trainer.deterministic)
    model = copy.deepcopy(initial)
    optimizer = build_optimizer(cfg.optimizer, model)
    constant = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)
    pieces = dataclasses.replace(experiment, model=model, optimizer=optimizer, scheduler=constant, forward=None,
                                 penalty=None)
    return build_trainer(pieces, callbacks or {})


def initial_loss(experiment, initial, batches) -> float:
    """Mean cross-entropy of a copy of the untrained model on `batches`, in training mode, no step."""
    import copy

    import torch
    import torch.nn.functional as F

    from trainlab.runtime import autocast, seed_everything

    seed_everything(experiment.cfg.seed, experiment.cfg.trainer.deterministic)
    model = copy.deepcopy(initial).train()
    total, seen = torch.zeros((), device=experiment.device), 0
    with torch.no_grad():
        for images, labels in batches:
            with autocast(experiment.device, experiment.amp_dtype):
                logits = model(images)
            total += F.cross_entropy(logits.float(), labels, reduction="sum")
            seen += labels.shape[0]
    return total.item() / max(seen, 1)


def overfit(experiment, initial, batches, values) -> dict[str, Any]:
    from trainlab.errors import TrainingDiverged

    trainer = fresh_trainer(experiment, initial)
    sample = Batches(experiment.data.train.generator, batches=batches)
    per_pass = math.ceil(len(batches) / trainer.settings.accumulate)
    accuracy, loss, diverged = 0.0, None, False
    while trainer.step + per_pass <= values["overfit_steps"]:
        try:
            metrics = trainer.train_epoch(sample)
        except TrainingDiverged:
            diverged = True
            break
        accuracy, loss = metrics["train/acc"], metrics["train/loss"]
        if not finite(loss):
            diverged = True
            break
        if accuracy >= values["overfit_accuracy"]:
            break
    return overfit_verdict(accuracy, trainer.step, values["overfit_accuracy"], values["overfit_steps"],
                           final_loss=loss, diverged=diverged, samples=sum(len(b[1]) for b in batches),
                           batches=len(batches))


def loss_falls(experiment, initial, values, loader_state) -> dict[str, Any]:
    from trainlab.errors import TrainingDiverged

    recorder = StepLosses()
    trainer = fresh_trainer(experiment, initial, {"losses": recorder})
    trainer.log_every = 1  # every step's loss (one host sync per step: fine for a check)
    train = experiment.data.train
    train.generator.set_state(loader_state)
    diverged_at = None
    try:
        trainer.train_epoch(Batches(train.generator, loader=train, count=values["steps"] * trainer.settings.accumulate))
    except TrainingDiverged:
        diverged_at = trainer.step
    return falling_verdict(recorder.losses, values["steps"], values["window"], values["fall_ratio"], diverged_at)


def run_checks(cfg) -> dict[str, Any]:
    """Build what `cfg` (checked) describes with regularization off and run the three checks; the figures."""
    import copy
    import itertools

    from trainlab.build import build_experiment

    started = time.perf_counter()
    values = settings(cfg)
    off_cfg, switched = without_regularization(cfg)
    experiment = build_experiment(off_cfg)
    initial = copy.deepcopy(experiment.model)
    train = experiment.data.train
    state = train.generator.get_state()
    batches = list(itertools.islice(iter(train), values["overfit_batches"]))
    train.generator.set_state(state)
    checks = {
        "initial_loss": {**initial_verdict(initial_loss(experiment, initial, batches), experiment.data.num_classes,
                                           values["initial_tolerance"]),
                         "batches": len(batches)},
        "overfit": overfit(experiment, initial, batches, values),
        "loss_falls": loss_falls(experiment, initial, values, state),
    }
    return {
        "passed": all(c["passed"] for c in checks.values()),
        "checks": checks,
        "switched_off": switched,
        "overrides": as_overrides(switched),
        "optimizer": {"target": off_cfg.optimizer.get("_target_"), "lr": float(off_cfg.optimizer.lr),
                      "schedule": "constant (the configured schedule and its warmup are not used)"},
        "settings": values,
        "device": str(experiment.device),
        "params": experiment.params,
        "train_size": train.num_samples,
        "seconds": round(time.perf_counter() - started, 3),
    }


# ---------------------------------------------------------------- the report


def _fmt(value: Any, spec: str = ".4f") -> str:
    return format(value, spec) if isinstance(value, (int, float)) and finite(value) else str(value)


def report_table(result: dict[str, Any]):
    from rich.table import Table

    checks = result["checks"]
    table = Table(title="trainlab check", title_justify="left")
    for column in ("check", "result", "figure", "passes when"):
        table.add_column(column)
    init, fit, fall = checks["initial_loss"], checks["overfit"], checks["loss_falls"]

    def verdict(check):
        return "[green]pass[/]" if check["passed"] else "[bold red]FAIL[/]"

    table.add_row("initial loss", verdict(init),
                  f"{_fmt(init['initial_loss'])} vs log({init['classes']}) {init['log_classes']:.4f}",
                  f"within {init['tolerance']:g} nats")
    fit_figure = (f"NaN/Inf by step {fit['steps']}" if fit["diverged"] else
                  f"{100 * fit['accuracy']:.2f}% of {fit['samples']} in {fit['steps']} steps")
    table.add_row("overfit", verdict(fit), fit_figure,
                  f">= {100 * fit['target']:g}% in {fit['max_steps']} steps")
    fall_figure = (f"NaN/Inf at step {fall['diverged_at_step']}" if fall["diverged_at_step"] is not None else
                   f"{_fmt(fall['first_mean'])} -> {_fmt(fall['last_mean'])} (x{_fmt(fall['ratio'], '.3g')})")
    table.add_row("loss falls", verdict(fall), fall_figure,
                  f"< {fall['required_ratio']:g}x in {fall['steps']} steps")
    return table


def was_shown(value: Any) -> str:
    """A switched-off value in a few words: ops by name, mix settings as key=value, else the value."""
    if isinstance(value, dict):
        if all(isinstance(v, dict) for v in value.values()):
            return ", ".join(value)
        return ", ".join(f"{k}={v}" for k, v in value.items())
    return "null" if value is None else str(value)


def print_report(result: dict[str, Any], path: Path, console=None) -> None:
    from rich.console import Console
    from rich.markup import escape

    console = console or Console()
    console.print(report_table(result))
    lr = result["optimizer"]
    console.print(f"lr {lr['lr']:g}, constant; on {result['train_size']} training examples, {result['device']}")
    off = ", ".join(f"{item['key']} (was {escape(was_shown(item['was']))})" for item in result["switched_off"])
    console.print(f"regularization switched off: {off}" if off else "regularization: none was on")
    for name, check_result in result["checks"].items():
        if check_result["advice"]:
            console.print(f"[bold red]{name}[/]: {escape(check_result['advice'])}")
    console.print("all checks pass" if result["passed"] else "[bold red]some checks fail[/]")
    console.print(f"wrote {path}", soft_wrap=True)


def run(cfg, run_dir: Path) -> dict[str, Any]:
    result = run_checks(cfg)
    path = Path(run_dir) / "check.json"
    path.write_text(json.dumps(result, indent=2) + "\n")
    print_report(result, path)
    if not result["passed"]:
        sys.exit(1)
    return result
