"""`trainlab schedule`: draw the learning rate a schedule config gives at every step, as a PNG.

The curve comes from trainlab.optim.lr_curve: the real build_schedule on a throwaway SGD optimizer, so
what you see is what `trainlab train` with the same overrides would do. A real run derives its steps
per epoch from the dataset size and trainer.batch_size; here it is schedule_plot.steps_per_epoch (the
x axis is in epochs, so only the smoothness of the curve depends on it - except where rounding epochs to
whole steps matters). For `plateau` the validation metric is scripted: it improves for the first third
of the epochs, then stays flat (trainlab.optim.default_metric).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from trainlab.errors import ConfigError

CONFIG = "schedule_plot"


def check(cfg, context) -> None:
    steps_per_epoch = (cfg.get("schedule_plot") or {}).get("steps_per_epoch", 100)
    if isinstance(steps_per_epoch, bool) or not isinstance(steps_per_epoch, int) or steps_per_epoch < 1:
        raise ConfigError(f"schedule_plot.steps_per_epoch={steps_per_epoch!r}: must be a whole number >= 1")


def schedule_name(schedule_cfg: Any) -> str:
    """cosine_restarts for trainlab.optim.cosine_restarts_schedule."""
    target = str(schedule_cfg.get("_target_", "schedule"))
    return target.rsplit(".", 1)[-1].removesuffix("_schedule")


def schedule_title(schedule_cfg: Any, lr: float, epochs: int) -> str:
    keys = {k: v for k, v in (OmegaConf.to_container(schedule_cfg, resolve=True) if OmegaConf.is_config(schedule_cfg)
                              else dict(schedule_cfg)).items() if not k.startswith("_")}
    values = ", ".join(f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}" for k, v in keys.items())
    return f"{schedule_name(schedule_cfg)}: lr={lr:g}, epochs={epochs}" + (f"\n{values}" if values else "")


def plot_schedule(cfg: DictConfig, run_dir: Path) -> Path:
    """Write <run_dir>/schedule.png: lr (y) against epochs (x) for cfg.schedule, cfg.optimizer.lr and
    cfg.trainer.epochs, with schedule_plot.steps_per_epoch steps per epoch; print and return its path."""
    import matplotlib

    matplotlib.use("Agg")  # headless: no display needed
    import matplotlib.pyplot as plt

    from trainlab.optim import lr_curve

    plot_cfg = cfg.get("schedule_plot") or {}
    steps_per_epoch = plot_cfg.get("steps_per_epoch", 100)
    log_y = bool(plot_cfg.get("log_y", False))
    epochs, lr = int(cfg.trainer.epochs), float(cfg.optimizer.lr)
    mode = str(cfg.trainer.get("mode", "max"))
    lrs = lr_curve(cfg.schedule, lr, epochs, steps_per_epoch, mode=mode)
    xs = [step / steps_per_epoch for step in range(len(lrs))]

    figure, axes = plt.subplots(figsize=(8, 4.5), dpi=100)
    try:
        axes.plot(xs, lrs, linewidth=1.5)
        axes.set_xlabel("epoch")
        axes.set_ylabel("learning rate")
        axes.set_xlim(0, epochs)
        if log_y and min(lrs) > 0:
            axes.set_yscale("log")
        else:
            axes.set_ylim(bottom=0)
        axes.grid(True, alpha=0.3)
        axes.set_title(schedule_title(cfg.schedule, lr, epochs), fontsize=10)
        figure.tight_layout()
        run_dir = Path(run_dir)
        run_dir.mkdir(parents=True, exist_ok=True)
        path = run_dir / "schedule.png"
        figure.savefig(path)
    finally:
        plt.close(figure)
    print(f"{schedule_name(cfg.schedule)}: lr {lrs[0]:.4g} at the start, max {max(lrs):.4g}, min {min(lrs):.4g}, "
          f"{lrs[-1]:.4g} at the last step ({epochs} epochs x {steps_per_epoch} steps)\nwrote {path}")
    return path


run = plot_schedule
