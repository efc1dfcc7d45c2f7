"""The report's pictures (matplotlib, headless).

report_curves.png   the validation curve (the monitored metric, else val/acc) of the top runs, per epoch,
                    read back from each run's TensorBoard events with tensorboard's own reader
report_<key>.png    the monitored metric against each swept numeric hyperparameter that takes several
                    values (a random search: one point per run), on a log axis when the values span two
                    decades or more (or crowd at the low end of one or more decades, as log-spaced ones do)
"""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Optional

from trainlab.reports.grouping import REPEAT_KEYS
from trainlab.reports.runs import Run
from trainlab.reports.table import is_accuracy, label

MIN_VALUES = 3  # distinct numeric values a hyperparameter needs for its own picture


def pyplot():
    import matplotlib

    matplotlib.use("Agg")  # no display needed
    import matplotlib.pyplot as plt

    return plt


def read_curve(folder: Path, tags: list[str]) -> tuple[Optional[str], list[tuple[float, float]], str]:
    """(tag, [(x, value)], x label) of the first of `tags` the run logged: x is the epoch when the run logged
    its `epoch` scalar (trainlab's tensorboard callback does), else the step; ([] when there are no events)."""
    events = folder / "tensorboard"
    if not events.is_dir() or not any(events.glob("events.out.tfevents.*")):
        return None, [], "epoch"
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    guidance = {"scalars": 0, "images": 1, "histograms": 1, "compressedHistograms": 1, "tensors": 1, "audio": 1}
    accumulator = EventAccumulator(str(events), size_guidance=guidance)
    try:
        accumulator.Reload()
    except Exception:  # a truncated or foreign event file: no curve for this run, the report goes on
        return None, [], "epoch"
    logged = set(accumulator.Tags().get("scalars", []))
    tag = next((t for t in tags if t in logged), None)
    if tag is None:
        return None, [], "epoch"

    def by_step(name: str) -> dict[int, float]:
        points = {}
        for event in sorted(accumulator.Scalars(name), key=lambda e: e.wall_time):
            points[event.step] = event.value  # a resumed run may log a step again: the later value wins
        return points

    values = by_step(tag)
    epochs = by_step("epoch") if "epoch" in logged else {}
    if epochs and all(step in epochs for step in values):
        return tag, sorted((epochs[step], value) for step, value in values.items()), "epoch"
    return tag, sorted(values.items()), "step"


def plot_curves(runs: list[Run], keys: list[str], path: Path, metric: Optional[str]) -> Optional[Path]:
    """report_curves.png for `runs` (the top ones, best first); None when none of them has a curve."""
    tags = [t for t in (metric, "val/acc") if t]
    curves = []
    for run in runs:
        tag, points, xlabel = read_curve(run.folder, tags)
        if points:
            curves.append((run, tag, points, xlabel))
    if not curves:
        return None
    plt = pyplot()
    figure, axes = plt.subplots(figsize=(7, 4.6), dpi=100)
    scale = 100.0 if all(is_accuracy(tag) for _, tag, _, _ in curves) else 1.0
    for rank, (run, tag, points, _) in enumerate(curves, 1):
        xs, ys = zip(*points)
        width = 2.2 if rank == 1 else 1.4
        axes.plot(xs, [y * scale for y in ys], marker="o", markersize=3, linewidth=width,
                  label=f"{rank}. {label(run, keys)}" + ("" if tag == tags[0] else f" ({tag})"))
    shown = {tag for _, tag, _, _ in curves}
    name = shown.pop() if len(shown) == 1 else "validation metric"
    axes.set_xlabel(curves[0][3])
    if curves[0][3] == "epoch":
        from matplotlib.ticker import MaxNLocator

        axes.xaxis.set_major_locator(MaxNLocator(integer=True))
    axes.set_ylabel(name + (" (%)" if scale == 100.0 else ""))
    missing = len(runs) - len(curves)
    axes.set_title(f"{name}: the top {len(runs)} run{'s' if len(runs) > 1 else ''}"
                   + (f" ({missing} without TensorBoard events)" if missing else ""))
    axes.grid(True, alpha=0.3)
    axes.legend(fontsize=8, loc="best")
    figure.tight_layout()
    figure.savefig(path)
    plt.close(figure)
    return path


def number(text: Optional[str]) -> Optional[float]:
    if text is None or text.strip().lower() in ("true", "false", "nan", "inf", "-inf", "+inf"):
        return None
    try:
        value = float(text)
    except ValueError:
        return None
    return value if math.isfinite(value) else None


def numeric_keys(runs: list[Run], keys: list[str]) -> list[str]:
    """The swept keys (not seed or dataset.fold) that are numbers in every run that sets them and take at
    least MIN_VALUES values."""
    picked = []
    for key in keys:
        if key in REPEAT_KEYS:
            continue
        texts = [run.overrides[key] for run in runs if key in run.overrides]
        values = [number(text) for text in texts]
        if values and None not in values and len(set(values)) >= MIN_VALUES:
            picked.append(key)
    return picked


def log_axis(values: list[float]) -> bool:
    """True for values that read better on a log axis: all positive and spanning two decades or more, or at
    least one decade with most of them in the lower half of the range (as log-spaced values are)."""
    if not values or min(values) <= 0:
        return False
    low, high = min(values), max(values)
    if high / low >= 100:
        return True
    if high / low >= 10:
        middle = (low + high) / 2
        return sum(v < middle for v in values) / len(values) >= 0.7
    return False


def file_name(key: str) -> str:
    return "report_" + re.sub(r"[^A-Za-z0-9._-]+", "_", key) + ".png"


def plot_param(runs: list[Run], key: str, path: Path, metric: Optional[str], mode: str) -> Optional[Path]:
    """The monitored metric (y) of each run against its value of `key` (x); runs that did not complete are
    marked on the bottom edge (where a learning rate diverged, say); the best run is a star."""
    done = [(number(run.overrides[key]), run.best) for run in runs
            if key in run.overrides and run.ok and run.best is not None and run.metric == metric]
    failed = [number(run.overrides[key]) for run in runs if key in run.overrides and not run.ok]
    if not done and not failed:
        return None
    plt = pyplot()
    scale = 100.0 if is_accuracy(metric) else 1.0
    figure, axes = plt.subplots(figsize=(7, 4.6), dpi=100)
    if done:
        xs, ys = zip(*done)
        axes.scatter(xs, [y * scale for y in ys], s=36, alpha=0.8, label=f"completed ({len(done)})")
        pick = max if mode == "max" else min
        best_x, best_y = pick(done, key=lambda point: point[1])
        axes.scatter([best_x], [best_y * scale], marker="*", s=220, color="gold", edgecolors="black", zorder=3,
                     label=f"best: {key}={best_x:g}")
    if failed:
        bottom = axes.get_ylim()[0] if done else 0.0
        axes.scatter(failed, [bottom] * len(failed), marker="x", color="red", s=50, clip_on=False,
                     label=f"not completed ({len(failed)})")
    if log_axis([x for x, _ in done] + failed):
        axes.set_xscale("log")
    axes.set_xlabel(key)
    axes.set_ylabel(f"best {metric}" + (" (%)" if scale == 100.0 else ""))
    axes.set_title(f"best {metric} against {key} ({len(done) + len(failed)} runs)")
    axes.grid(True, alpha=0.3, which="both")
    axes.legend(fontsize=8, loc="best")
    figure.tight_layout()
    figure.savefig(path)
    plt.close(figure)
    return path
