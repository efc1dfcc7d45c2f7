"""`trainlab lr-find`: the learning-rate range test (Smith 2017), as fastai's and Lightning's lr_find.

From the freshly built model and optimizer (trainlab.build, exactly what `trainlab train` builds with the
same overrides), the lr rises exponentially from lr_find.start_lr to lr_find.end_lr over lr_find.steps
optimizer steps on training batches (the loader is cycled when it has fewer). Every param group learns
at the step's lr times its own "lr_scale" (backbone_lr_scale, lr_multipliers), so the lr reported is
optimizer.lr's. The configured schedule is ignored. Each step's loss is recorded and smoothed (a
debiased exponential moving average, lr_find.beta); the test stops early when the smoothed loss exceeds
lr_find.diverge times its minimum or the loss is no longer finite.

The suggestion is the lr of the steepest descent of the smoothed loss (most negative d loss / d log lr,
the first and last few points skipped); min_loss_lr / 10 is reported as an alternative. Outputs, in the
run folder only: lr_find.png, lr_find.json, tensorboard/ (lr_find/loss, lr_find/smoothed_loss,
lr_find/lr against step). The model is thrown away: no checkpoint is written.
"""

from __future__ import annotations

import json
import math
import shlex
from pathlib import Path
from typing import Any, Callable, Optional

from trainlab.checks import bad, is_int, is_number

CONFIG = "lr_find"
DEFAULTS = {"start_lr": 1e-7, "end_lr": 10.0, "steps": 100, "beta": 0.98, "diverge": 4.0}
WEAK_FALL = 0.05  # a smoothed loss that fell less than this (relative to its start) makes a weak suggestion


# ---------------------------------------------------------------- settings


def settings(cfg) -> dict[str, Any]:
    """lr_find.* with the defaults filled in (plain Python values)."""
    given = cfg.get("lr_find") or {}
    return {key: given.get(key, default) for key, default in DEFAULTS.items()}


def check(cfg, context) -> None:
    """lr_find.* keys, one line naming the key; trainer.resume makes no sense here."""
    given = cfg.get("lr_find") or {}
    for key in given:
        if key not in DEFAULTS:
            raise bad(f"lr_find.{key}", given[key], "unknown key", f"known keys: {', '.join(DEFAULTS)}")
    s = settings(cfg)
    for key in ("start_lr", "end_lr"):
        if not is_number(s[key]) or not math.isfinite(s[key]) or s[key] <= 0:
            raise bad(f"lr_find.{key}", s[key], "must be a number > 0", f"e.g. lr_find.{key}={DEFAULTS[key]:g}")
    if s["end_lr"] <= s["start_lr"]:
        raise bad("lr_find.end_lr", s["end_lr"], f"must be greater than lr_find.start_lr ({s['start_lr']:g})",
                  "the range test raises the lr from start_lr to end_lr")
    if not is_int(s["steps"]) or s["steps"] < 10:
        raise bad("lr_find.steps", s["steps"], "must be a whole number >= 10", "100 to 300 is usual")
    if not is_number(s["beta"]) or not 0.0 <= s["beta"] < 1.0:
        raise bad("lr_find.beta", s["beta"], "must be a number in [0, 1)", "0.98 is usual; 0 = no smoothing")
    if s["diverge"] is not None and (not is_number(s["diverge"]) or not math.isfinite(s["diverge"])
                                     or s["diverge"] <= 1):
        raise bad("lr_find.diverge", s["diverge"], "must be a number > 1",
                  "stop once the smoothed loss exceeds that many times its minimum (null: only on nan/inf)")
    if cfg.trainer.get("resume"):
        raise bad("trainer.resume", cfg.trainer.resume, "lr-find starts from the freshly built model",
                  "leave trainer.resume out")


# ---------------------------------------------------------------- the range test (no torch)


def lr_at(step: int, steps: int, start_lr: float, end_lr: float) -> float:
    """The lr of step `step` (0-based) of `steps`: start_lr at the first, end_lr at the last, exponential."""
    return start_lr * (end_lr / start_lr) ** (step / (steps - 1))


def smooth(losses: list[float], beta: float) -> list[float]:
    """The debiased exponential moving average of `losses` (Adam's bias correction, as fastai)."""
    average, out = 0.0, []
    for index, loss in enumerate(losses):
        average = beta * average + (1 - beta) * loss
        out.append(average / (1 - beta ** (index + 1)))
    return out


def range_test(step: Callable[[float], float], start_lr: float, end_lr: float, steps: int, beta: float,
               diverge: Optional[float]) -> dict[str, Any]:
    """Call step(lr) -> loss for the exponential lrs; stop when the smoothed loss exceeds `diverge` x its
    minimum (the point that crossed is kept) or the loss is not finite (that point is left out)."""
    lrs: list[float] = []
    losses: list[float] = []
    smoothed: list[float] = []
    average, best, stopped, reason = 0.0, math.inf, "completed", ""
    for index in range(steps):
        lr = lr_at(index, steps, start_lr, end_lr)
        loss = float(step(lr))
        if not math.isfinite(loss):
            stopped, reason = f"diverged at step {index + 1}", f"the loss became {loss}"
            break
        average = beta * average + (1 - beta) * loss
        value = average / (1 - beta ** (index + 1))
        if not math.isfinite(value):  # a finite loss too large to average
            stopped, reason = f"diverged at step {index + 1}", f"the smoothed loss became {value}"
            break
        lrs.append(lr)
        losses.append(loss)
        smoothed.append(value)
        best = min(best, value)
        if diverge is not None and index > 0 and value > diverge * best:
            stopped = f"diverged at step {index + 1}"
            reason = f"the smoothed loss {value:.4g} exceeded {diverge:g} x its minimum {best:.4g}"
            break
    return {"lrs": lrs, "losses": losses, "smoothed": smoothed, "stopped": stopped, "reason": reason}


def skips(points: int) -> tuple[int, int]:
    """Points left out at the start and the end before the steepest descent is looked for (fastai: the
    first tenth and the last 5), fewer on a short curve, none when fewer than 3 would remain."""
    begin, end = max(1, points // 10), max(1, min(5, points // 20))
    return (begin, end) if points - begin - end >= 3 else (0, 0)


def steepest(lrs: list[float], smoothed: list[float]) -> Optional[dict[str, Any]]:
    """The lr of the most negative d smoothed / d log lr (central differences), the first and last few
    points skipped, looked for up to the smoothed loss's minimum (a dip among the rising points of a
    diverging loss is no descent); None when there are fewer than 3 points."""
    import numpy as np

    if len(lrs) < 3:
        return None
    begin, end = skips(len(lrs))
    y = np.asarray(smoothed[begin:len(smoothed) - end], dtype=float)
    slope = np.gradient(y, np.log(np.asarray(lrs[begin:len(lrs) - end], dtype=float)))
    lowest = int(np.argmin(y))
    descent = slope[:lowest + 1] if lowest >= 2 else slope  # no descent at all: the whole curve
    index = int(np.argmin(descent))
    return {"lr": float(lrs[begin + index]), "index": begin + index, "slope": float(slope[index]),
            "skipped": [begin, end], "searched_until_lr": float(lrs[begin + len(descent) - 1])}


def min_loss_lr(lrs: list[float], smoothed: list[float]) -> Optional[float]:
    if not lrs:
        return None
    return float(lrs[min(range(len(smoothed)), key=smoothed.__getitem__)])


def fmt(lr: float) -> str:
    """An lr as an override value: 3.2e-03."""
    return f"{lr:.1e}"


# ---------------------------------------------------------------- one optimizer step (torch)


def group_scales(optimizer, base_lr: float) -> list[float]:
    """Each param group's lr relative to optimizer.lr: its "lr_scale" (trainlab's groups), else its lr's
    ratio to base_lr."""
    return [float(group["lr_scale"]) if "lr_scale" in group else float(group.get("initial_lr", group["lr"])) / base_lr
            for group in optimizer.param_groups]


class NoSchedule:
    """Stands in for the configured schedule: the range test sets the lr itself."""

    def step(self, *args) -> None:
        pass


def make_step(trainer, loader, scales: list[float], settings) -> Callable[[float], float]:
    """step(lr) -> the loss (mean over trainer.accumulate micro-batches) of one optimizer step at lr,
    on the next training batches (cycled), computed as the Trainer computes it (autocast, mixing,
    label smoothing, weight penalty, then Trainer.optimizer_step: fp16 scaling and clipping)."""
    import torch.nn.functional as F

    from trainlab.runtime import autocast

    def batches():
        while True:
            yield from loader

    stream = batches()
    k = settings.accumulate
    trainer.model.train()

    def step(lr: float) -> float:
        for group, scale in zip(trainer.optimizer.param_groups, scales):
            group["lr"] = lr * scale
        trainer.optimizer.zero_grad(set_to_none=True)
        total = 0.0
        for position in range(k):
            images, labels = next(stream)
            targets = labels
            if trainer.mix is not None:
                images, targets = trainer.mix(images, labels, loader.generator)
            with autocast(trainer.device, trainer.amp_dtype):
                loss = F.cross_entropy(trainer.forward(images), targets, label_smoothing=settings.label_smoothing)
            objective = loss / k if k > 1 else loss
            if trainer.penalty is not None and position == k - 1:
                objective = objective + trainer.penalty()
            (trainer.scaler.scale(objective) if trainer.scaler is not None else objective).backward()
            total += loss.detach().float().item()
        value = total / k
        if math.isfinite(value):
            trainer.optimizer_step(want_norm=False)
        return value

    return step


# ---------------------------------------------------------------- outputs


def plot(result: dict[str, Any], path: Path, title: str) -> None:
    """Loss (y) against lr (x, log): raw and smoothed, the suggestion as a vertical line with its value."""
    import matplotlib

    matplotlib.use("Agg")  # headless
    import matplotlib.pyplot as plt

    lrs, losses, smoothed = result["lrs"], result["losses"], result["smoothed"]
    figure, axes = plt.subplots(figsize=(8, 5), dpi=110)
    try:
        axes.plot(lrs, losses, color="tab:blue", alpha=0.4, linewidth=1, label="loss")
        axes.plot(lrs, smoothed, color="tab:blue", linewidth=2, label=f"smoothed (beta {result['settings']['beta']:g})")
        axes.set_xscale("log")
        if smoothed:  # up to a little above the starting loss: the last, diverging points may be huge
            low, high = min(min(losses), min(smoothed)), min(max(losses), 1.25 * max(smoothed[0], losses[0]))
            if high > low:
                axes.set_ylim(low - 0.05 * (high - low), high)
        alternative = result.get("min_loss_lr_div_10")
        if alternative is not None:
            axes.axvline(alternative, color="tab:gray", linestyle=":", linewidth=1.2,
                         label=f"alternative: min-loss lr / 10 = {fmt(alternative)}")
        if result["suggestion"] is not None:
            lr = result["suggestion"]
            axes.axvline(lr, color="tab:red", linestyle="--", linewidth=1.5,
                         label="suggested: steepest descent of the smoothed loss"
                         + (" (unreliable: the loss hardly fell)" if result.get("notes") else ""))
            axes.plot([lr], [smoothed[result["suggestion_index"]]], "o", color="tab:red", markersize=6)
            left, right = (math.log(v) for v in axes.get_xlim())
            on_right = (math.log(lr) - left) / (right - left) > 0.7  # keep the label inside the axes
            axes.annotate(f"optimizer.lr={fmt(lr)}", xy=(lr, axes.get_ylim()[1]), xytext=(-6 if on_right else 6, -16),
                          textcoords="offset points", ha="right" if on_right else "left", color="tab:red",
                          fontsize=10, fontweight="bold")
        axes.set_xlabel("learning rate (optimizer.lr; log scale)")
        axes.set_ylabel("training loss")
        axes.grid(True, which="both", alpha=0.25)
        axes.legend(loc="lower left", fontsize=9, framealpha=0.9)
        axes.set_title(title, fontsize=10)
        figure.tight_layout()
        figure.savefig(path)
    finally:
        plt.close(figure)


def write_tensorboard(result: dict[str, Any], folder: Path) -> None:
    from torch.utils.tensorboard import SummaryWriter

    with SummaryWriter(log_dir=str(folder)) as writer:
        for step, (lr, loss, smoothed) in enumerate(zip(result["lrs"], result["losses"], result["smoothed"]), 1):
            writer.add_scalar("lr_find/loss", loss, step)
            writer.add_scalar("lr_find/smoothed_loss", smoothed, step)
            writer.add_scalar("lr_find/lr", lr, step)
        if result["suggestion"] is not None:
            writer.add_text("lr_find/suggestion", f"optimizer.lr={fmt(result['suggestion'])} ({result['rule']})", 0)


def task_overrides() -> list[str]:
    """The command line's overrides (Hydra's task overrides), when running under Hydra."""
    from hydra.core.hydra_config import HydraConfig

    return list(HydraConfig.get().overrides.task) if HydraConfig.initialized() else []


def train_command(overrides: list[str], lr: float) -> str:
    """`trainlab train <the same overrides> optimizer.lr=<lr>`: lr_find.*, hydra.* and optimizer.lr dropped."""
    kept = [o for o in overrides if not o.lstrip("+~").startswith(("lr_find.", "hydra."))
            and o.lstrip("+~").partition("=")[0] != "optimizer.lr"]
    return shlex.join(["trainlab", "train", *kept, f"optimizer.lr={fmt(lr)}"])


def run(cfg, run_dir: Path) -> dict[str, Any]:
    """The range test for the experiment `cfg` (checked); writes the outputs into run_dir; returns the json."""
    from dataclasses import replace

    from trainlab.build import build_experiment, build_trainer
    from trainlab.commands.schedule import schedule_name
    from trainlab.errors import ConfigError
    from trainlab.optim import build_optimizer

    s = settings(cfg)
    experiment = build_experiment(cfg)
    if len(experiment.data.train) == 0:
        raise ConfigError("dataset: the training split has no batch (trainer.drop_last with too few examples?)")
    # a fresh optimizer: the schedule built with the experiment may have moved its lr or momentum already
    optimizer = build_optimizer(cfg.optimizer, experiment.model)
    trainer = build_trainer(replace(experiment, optimizer=optimizer, scheduler=NoSchedule()), callbacks={})
    scales = group_scales(optimizer, float(cfg.optimizer.lr))
    schedule = schedule_name(cfg.schedule)
    optimizer_name = type(optimizer).__name__
    batch = experiment.data.train.batch_size * cfg.trainer.accumulate
    print(f"lr-find: {s['steps']} steps of {optimizer_name}, lr {s['start_lr']:g} -> {s['end_lr']:g} (exponential), "
          f"batch {batch}, {len(experiment.data.train)} batches per epoch, on {experiment.device}; "
          f"the configured schedule ({schedule}) is ignored", flush=True)

    result = range_test(make_step(trainer, experiment.data.train, scales, cfg.trainer), s["start_lr"], s["end_lr"],
                        s["steps"], s["beta"], s["diverge"])
    summarize(result)
    result["settings"] = {**s, "optimizer": optimizer_name, "batch_size": batch, "accumulate": cfg.trainer.accumulate,
                          "param_groups": [{"name": g.get("name", str(i)), "lr_scale": scale}
                                           for i, (g, scale) in enumerate(zip(optimizer.param_groups, scales))],
                          "schedule_ignored": schedule, "device": str(experiment.device), "seed": cfg.seed}
    result["train_command"] = (train_command(task_overrides(), result["suggestion"])
                               if result["suggestion"] is not None else None)

    run_dir = Path(run_dir)
    model_name = str(cfg.model.get("_target_", "model")).rsplit(".", 1)[-1]
    steps_run = result["steps_run"]
    title = (f"lr range test: {optimizer_name}, {model_name} on {cfg.dataset.name}, batch {batch} - "
             f"{result['stopped']}" + (f" (of {s['steps']})" if result["stopped"] != "completed" else f", {steps_run} steps"))
    plot(result, run_dir / "lr_find.png", title)
    write_tensorboard(result, run_dir / "tensorboard")
    (run_dir / "lr_find.json").write_text(json.dumps(result, indent=2) + "\n")
    report(result, run_dir)
    return result


def summarize(result: dict[str, Any]) -> None:
    """Add the suggestion, the alternative and notes to a range_test result."""
    lrs, smoothed = result["lrs"], result["smoothed"]
    found = steepest(lrs, smoothed)
    lowest = min_loss_lr(lrs, smoothed)
    begin, end = found["skipped"] if found else (0, 0)
    fall = 1 - min(smoothed) / smoothed[0] if smoothed and smoothed[0] > 0 else 0.0
    result.update(
        suggestion=found["lr"] if found else None,
        suggestion_index=found["index"] if found else None,
        rule=(f"steepest descent of the smoothed loss: the most negative d smoothed_loss / d log(lr) up to the "
              f"smoothed loss's minimum, the first {begin} and last {end} points skipped"),
        min_loss_lr=lowest,
        min_loss_lr_div_10=lowest / 10 if lowest is not None else None,
        alternative_rule="min_loss_lr / 10: a tenth of the lr at the smoothed loss's minimum",
        steps_run=len(lrs),
        notes=[] if found is None or fall >= WEAK_FALL else [
            f"the smoothed loss fell by only {max(fall, 0):.0%} from its start ({smoothed[0]:.4g} -> min "
            f"{min(smoothed):.4g}): the suggestion is unreliable; look at the plot, try more lr_find.steps or "
            "another lr range"],
    )


def report(result: dict[str, Any], run_dir: Path) -> None:
    """The console lines: how the test ended, the suggestion as an override, the command to train with it."""
    print(result["stopped"] + (f": {result['reason']}" if result["reason"] else f" ({result['steps_run']} steps)"))
    if result["suggestion"] is None:
        print("no suggestion: fewer than 3 points before the loss diverged; lower lr_find.start_lr")
    else:
        for note in result["notes"]:
            print(f"note: {note}")
        lowest = result["min_loss_lr"]
        print(f"suggested: optimizer.lr={fmt(result['suggestion'])}   (steepest descent of the smoothed loss)")
        print(f"alternative: optimizer.lr={fmt(lowest / 10)}   (min-loss lr {fmt(lowest)} / 10)")
        print(f"train with: {result['train_command']}")
    print(f"wrote {run_dir / 'lr_find.png'}, {run_dir / 'lr_find.json'} and {run_dir / 'tensorboard'}")
