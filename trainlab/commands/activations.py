"""`trainlab activations`: forward one batch through the model at initialization (or with a checkpoint's
weights) and show what each layer does to the signal: mean, std, dead units, saturated outputs.

The model and data are what `trainlab train` with the same overrides builds (trainlab.build), the batch is
the first trainer.eval_batch_size validation images (preprocessed, not augmented). dataset=gaussian is the
exception: its batch is `dataset.samples` unit-Gaussian vectors of `dataset.dim` features, as they are (the
classic initialization experiment). Layers and statistics: trainlab/diagnostics/activations.py.

Writes into the run folder: activations.json (one entry per layer), activations.png (mean, std and
dead/saturated fractions against depth; one histogram per layer) and tensorboard/ (a histogram per layer;
mean/std/dead/saturated as scalars whose step is the layer's depth).
"""

from __future__ import annotations

import json
import math
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

CONFIG = "activations"
MODES = ("train", "eval")
DEFAULTS = {"mode": "train", "margin": 0.01, "histograms": 20, "sample": 100_000}


def settings(cfg) -> dict[str, Any]:
    """The `activations` section with its defaults, checked."""
    from trainlab.checks import bad, is_int, is_number

    given = dict(cfg.get("activations") or {})
    unknown = sorted(set(given) - set(DEFAULTS))
    if unknown:
        raise bad(f"activations.{unknown[0]}", given[unknown[0]], "unknown key",
                  f"known keys: {', '.join(DEFAULTS)}")
    merged = {**DEFAULTS, **given}
    if merged["mode"] not in MODES:
        raise bad("activations.mode", merged["mode"], "must be train or eval")
    if not (is_number(merged["margin"]) and 0 <= merged["margin"] < 0.5):
        raise bad("activations.margin", merged["margin"], "must be a number in [0, 0.5)",
                  "e.g. 0.01: tanh outputs beyond 0.99 count as saturated")
    for key in ("histograms", "sample"):
        if not (is_int(merged[key]) and merged[key] >= 1):
            raise bad(f"activations.{key}", merged[key], "must be a whole number >= 1")
    return merged


def checkpoint_path(value: Any) -> Optional[Path]:
    """`checkpoint`: null, a checkpoint file, or a trainlab run folder (its checkpoints/best.pt)."""
    from trainlab.commands.eval import checkpoint_file

    return None if value is None else checkpoint_file(value, "checkpoint")


def check(cfg, context) -> None:
    settings(cfg)
    path = checkpoint_path(cfg.get("checkpoint"))
    if path is not None:  # readable and ours, before the output folder is made (tensors mapped, not read)
        read_state(path, cfg.checkpoint, mmap=True)


# ---------------------------------------------------------------- the model and the batch


def gaussian_inputs(dataset_cfg):
    """dataset=gaussian: ([samples, 1, 1, dim] float32 N(0, 1) inputs, [samples] random int64 labels),
    drawn from dataset.generator_seed alone."""
    import torch

    generator = torch.Generator().manual_seed(int(dataset_cfg.get("generator_seed", 0)))
    samples, dim = int(dataset_cfg.get("samples", 1000)), int(dataset_cfg.get("dim", 500))
    inputs = torch.randn(samples, 1, 1, dim, generator=generator)
    labels = torch.randint(int(dataset_cfg.get("num_classes", 10)), (samples,), generator=generator)
    return inputs, labels


def gaussian_model(cfg):
    """(model, batch) for dataset=gaussian: the model build_experiment would build for inputs of shape
    (1, 1, dim), initialized by `init` (LSUV gets the Gaussian batch), on trainer.device."""
    from torch import nn

    from trainlab.build import initialize_weights, to_device
    from trainlab.data.loader import DeviceLoader
    from trainlab.models import build_model
    from trainlab.runtime import resolve_device, seed_everything
    from trainlab.transfer import setup_transfer, split_model_config

    device = resolve_device(cfg.trainer.device)
    seed_everything(cfg.seed, cfg.trainer.deterministic)
    inputs, labels = gaussian_inputs(cfg.dataset)
    inputs, labels = inputs.to(device), labels.to(device)
    classes = [f"class_{k}" for k in range(int(cfg.dataset.get("num_classes", 10)))]
    model = to_device(build_model(cfg.model, tuple(inputs.shape[1:]), len(classes)), device, channels_last=False)
    loader = DeviceLoader(inputs, labels, len(inputs), normalize=nn.Identity(), shuffle=True, seed=cfg.seed + 1)
    initialize_weights(model, cfg, loader)
    setup_transfer(model, split_model_config(cfg.model)[1], classes=classes)
    return model, inputs


def read_state(path: Path, value: str, mmap: bool = False) -> dict:
    """The model state dict of the trainlab checkpoint at `path`, or one line naming checkpoint=<value>."""
    from trainlab import checkpoint
    from trainlab.errors import ConfigError

    source, wanted = f"checkpoint={value}", "best.pt/last.pt"
    payload = checkpoint.read_checkpoint(path, source, wanted, mmap=mmap)
    if not isinstance(payload, dict) or payload.get("format") != checkpoint.FORMAT:
        raise ConfigError(f"{source}: {path} is a PyTorch file but not a trainlab checkpoint; give the {wanted} "
                          "of a trainlab run")
    return payload["model"]


def load_checkpoint(model, path: Path, value: str) -> None:
    """The checkpoint's model weights into `model` (which must have the same structure)."""
    from trainlab.errors import ConfigError

    state = read_state(path, value)
    try:
        model.load_state_dict(state)
    except RuntimeError as error:
        first = next((line.strip() for line in str(error).splitlines()[1:] if line.strip()), str(error))
        raise ConfigError(f"checkpoint={value}: its weights do not fit this model ({first[:200]}); "
                          "give the model/dataset overrides of the run that saved it") from None


def model_and_batch(cfg):
    """(model, batch): the model `trainlab train` builds for cfg (weights from `checkpoint` when given)
    and the batch to measure it on (see the module note)."""
    if cfg.dataset.name == "gaussian":
        model, batch = gaussian_model(cfg)
    else:
        from trainlab.build import build_experiment

        experiment = build_experiment(cfg)
        model = experiment.model
        batch = next(iter(experiment.data.val))[0]
    path = checkpoint_path(cfg.get("checkpoint"))
    if path is not None:
        load_checkpoint(model, path, cfg.checkpoint)
    return model, batch


@dataclass
class Measurement:
    rows: list[dict]                 # ActivationRecorder.read(): one dict per layer
    outputs: list[tuple[str, Any]]   # (layer, kept outputs as a CPU tensor)
    title: str                       # what was measured, in one line


def describe_setup(cfg, batch) -> str:
    """e.g. `MLP, tanh · init normal_(mean=0, std=0.01), bias 0 · 1000 inputs [1, 1, 500] · at init`."""
    from trainlab.init import resolve_weight

    model = str(cfg.model.get("_target_", "model")).rsplit(".", 1)[-1]
    activation = cfg.model.get("activation")
    weight = cfg.init.get("weight")
    if weight is None:
        init = "PyTorch default"
    else:
        spec = resolve_weight(weight, activation or "relu", cfg.model.get("activation_params"))  # autos resolved
        arguments = ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
                              for k, v in spec.items() if not k.startswith("_"))
        init = f"{str(spec['_target_']).rsplit('.', 1)[-1]}({arguments})" + (" + LSUV" if cfg.init.get("lsuv") else "")
    bias = cfg.init.get("bias")
    norm = cfg.model.get("norm")
    parts = [model + (f", {activation}" if activation else "")
             + (f", norm {norm}" if norm not in (None, "none") else "")]
    if not cfg.get("checkpoint"):
        parts.append(f"init {init}" + (f", bias {bias:g}" if isinstance(bias, (int, float)) else ""))
    parts.append(f"{batch.shape[0]} inputs {list(batch.shape[1:])} ({cfg.dataset.name})")
    parts.append(f"weights of {cfg.checkpoint}" if cfg.get("checkpoint") else "at init")
    return " · ".join(parts)


def measure_config(cfg, keep_outputs: bool = True) -> Measurement:
    """Build as `trainlab train` would (checked cfg), forward one batch, return the statistics."""
    from trainlab.diagnostics.activations import measure

    options = settings(cfg)
    model, batch = model_and_batch(cfg)
    rows, outputs = measure(model, batch, keep_outputs=keep_outputs, sample=options["sample"],
                            margin=options["margin"], train_mode=options["mode"] == "train")
    if not rows:
        from trainlab.errors import ConfigError

        raise ConfigError(f"model._target_={cfg.model.get('_target_')}: no activation or Linear/Conv layer "
                          "ran in the forward pass; nothing to measure")
    return Measurement(rows, outputs, describe_setup(cfg, batch))


def compose(overrides: list[str]):
    """The checked config `trainlab activations OVERRIDES` runs with (no run folder, no Hydra job): for
    scripts and tests that measure in-process (tools/activation_table.py)."""
    from hydra import compose as hydra_compose, initialize_config_dir

    from trainlab.commands import Context, check_all, config_dir

    module = sys.modules[__name__]
    with initialize_config_dir(version_base="1.3", config_dir=str(config_dir()), job_name=CONFIG):
        composed = hydra_compose(CONFIG, overrides=list(overrides))
    return check_all(module, composed, Context(CONFIG))


def measure_overrides(overrides: list[str], keep_outputs: bool = False) -> Measurement:
    """measure_config(compose(overrides)): what `trainlab activations OVERRIDES` measures, in-process."""
    return measure_config(compose(overrides), keep_outputs=keep_outputs)


# ---------------------------------------------------------------- reporting


def finite(value: Any) -> Any:
    """JSON has no NaN/inf: a non-finite float becomes null."""
    return None if isinstance(value, float) and not math.isfinite(value) else value


def percent(value: Optional[float]) -> str:
    return "-" if value is None else f"{100 * value:.1f}%"


def print_table(measured: Measurement) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console(width=max(100, len(measured.title) + 2))
    console.print(measured.title, highlight=False)
    table = Table()
    for column, justify in (("#", "right"), ("layer", "left"), ("kind", "left"), ("mean", "right"),
                            ("std", "right"), ("dead", "right"), ("saturated", "right")):
        table.add_column(column, justify=justify)
    for row in measured.rows:
        table.add_row(str(row["index"]), row["name"], row["kind"], f"{row['mean']:+.3g}", f"{row['std']:.3g}",
                      percent(row["dead"]), percent(row["saturated"]))
    console.print(table)


def histogram_range(rows: list[dict], outputs: list) -> tuple[float, float]:
    """One x range for every histogram (so layers compare at a glance): the activation's bounds when every
    layer is tanh or sigmoid, else the kept outputs' extent."""
    kinds = {row["kind"] for row in rows}
    if kinds == {"tanh"}:
        return -1.0, 1.0
    if kinds == {"sigmoid"}:
        return 0.0, 1.0
    low = min(float(values.min()) for _, values in outputs)
    high = max(float(values.max()) for _, values in outputs)
    if not (math.isfinite(low) and math.isfinite(high)) or high <= low:
        return (low - 1.0, low + 1.0) if math.isfinite(low) else (-1.0, 1.0)
    return low, high


def shown_layers(count: int, limit: int) -> list[int]:
    """Indices of at most `limit` layers spread over the depth, the first and last included."""
    if count <= limit:
        return list(range(count))
    if limit == 1:
        return [count - 1]
    return sorted({round(i * (count - 1) / (limit - 1)) for i in range(limit)})


def plot(measured: Measurement, path: Path, histograms: int = 20) -> Path:
    """activations.png: mean, std (log scale when it spans decades) and dead/saturated fractions against
    depth, then one histogram per layer on a shared x range."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker
    import numpy as np

    rows = measured.rows
    depth = [row["index"] for row in rows]
    picked = shown_layers(len(measured.outputs), histograms)
    columns = min(5, max(1, len(picked)))
    hist_rows = math.ceil(len(picked) / columns)
    height = 3.6 + 1.9 * hist_rows
    figure = plt.figure(figsize=(13, height), dpi=100)
    grid = figure.add_gridspec(1 + hist_rows, 3 * columns, height_ratios=[1.7] + [1.0] * hist_rows,
                               hspace=0.85, wspace=1.2, top=1 - 0.85 / height)
    try:
        def curve(axes, values, label, color):
            xs = [d for d, v in zip(depth, values) if v is not None and math.isfinite(v)]
            ys = [v for v in values if v is not None and math.isfinite(v)]
            axes.plot(xs, ys, "o-", color=color, markersize=4, label=label)
            axes.set_xlabel("layer")
            axes.set_xticks(depth if len(depth) <= 12 else depth[:: math.ceil(len(depth) / 10)])
            axes.grid(True, alpha=0.3)
            return ys

        third = 3 * columns // 3
        mean_axes = figure.add_subplot(grid[0, :third])
        curve(mean_axes, [row["mean"] for row in rows], "mean", "tab:blue")
        mean_axes.set_title("layer mean", fontsize=10)
        std_axes = figure.add_subplot(grid[0, third:2 * third])
        stds = curve(std_axes, [row["std"] for row in rows], "std", "tab:red")
        positive = [s for s in stds if s > 0]
        if positive and len(positive) == len(stds) and max(positive) / min(positive) > 20:
            std_axes.set_yscale("log")
            decades = math.log10(max(positive) / min(positive))
            labels = matplotlib.ticker.FuncFormatter(lambda value, _: f"{value:g}")
            std_axes.yaxis.set_major_formatter(labels)
            std_axes.yaxis.set_minor_locator(matplotlib.ticker.LogLocator(subs=(2.0, 5.0) if decades < 3 else ()))
            std_axes.yaxis.set_minor_formatter(labels if decades < 3 else matplotlib.ticker.NullFormatter())
            std_axes.set_title("layer std (log scale)", fontsize=10)
        else:
            std_axes.set_ylim(0, 1.15 * max(stds) if stds and max(stds) > 0 else 1.0)
            std_axes.set_title("layer std", fontsize=10)
        frac_axes = figure.add_subplot(grid[0, 2 * third:])
        drawn = False
        for key, color in (("dead", "tab:purple"), ("saturated", "tab:orange")):
            values = [row[key] for row in rows]
            if any(v is not None for v in values):
                curve(frac_axes, values, f"{key} units" if key == "dead" else "saturated outputs", color)
                drawn = True
        frac_axes.set_ylim(-0.03, 1.03)
        frac_axes.set_title("dead / saturated fraction", fontsize=10)
        if drawn:
            frac_axes.legend(fontsize=8, loc="best")
        else:
            frac_axes.text(0.5, 0.5, "no ReLU, tanh or sigmoid layer", ha="center", va="center",
                           transform=frac_axes.transAxes, fontsize=9)
            frac_axes.set_xlabel("layer")

        low, high = histogram_range(rows, measured.outputs)
        bins = np.linspace(low, high, 51)
        by_name = {row["name"]: row for row in rows}
        for slot, index in enumerate(picked):
            name, values = measured.outputs[index]
            row = by_name[name]
            axes = figure.add_subplot(grid[1 + slot // columns, 3 * (slot % columns):3 * (slot % columns) + 3])
            data = values.numpy()
            data = np.clip(data[np.isfinite(data)], low, high)
            title = f"{row['index']}. {name}\nstd {row['std']:.2g}"
            if row["kind"] == "relu":  # the zeros would dwarf the rest: drawn is the non-zero part
                zeros = float((data == 0).mean()) if data.size else 0.0
                data = data[data != 0]
                title += f", {zeros:.0%} zero"
            if row["saturated"] is not None:
                title += f", {row['saturated']:.0%} sat."
            axes.hist(data, bins=bins, color="tab:green" if row["kind"] == "relu" else "tab:blue")
            axes.set_xlim(low, high)
            axes.set_yticks([])
            axes.tick_params(axis="x", labelsize=7)
            axes.set_title(title, fontsize=8)
        shown = "" if len(picked) == len(measured.outputs) else f" ({len(picked)} of {len(measured.outputs)} layers)"
        relu = "; ReLU-family layers: the non-zero outputs" if any(r["kind"] == "relu" for r in rows) else ""
        figure.suptitle(f"{measured.title}\nhistograms of each layer's outputs{shown}{relu}", fontsize=10)
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        figure.savefig(path, bbox_inches="tight")
    finally:
        plt.close(figure)
    return path


def tag(row: dict) -> str:
    return f"activations/{row['index']:02d}_" + re.sub(r"[^\w.\-]+", "_", row["name"]).strip("_")


def write_tensorboard(measured: Measurement, folder: Path) -> None:
    """A histogram per layer (tag activations/<NN>_<layer>); mean, std, dead and saturated as scalars
    (activations/std ...) whose step is the layer's depth, so TensorBoard draws them against depth."""
    from torch.utils.tensorboard import SummaryWriter

    by_name = {row["name"]: row for row in measured.rows}
    with SummaryWriter(log_dir=str(folder)) as writer:
        for name, values in measured.outputs:
            writer.add_histogram(tag(by_name[name]), values, 0)
        for row in measured.rows:
            for key in ("mean", "std", "dead", "saturated"):
                if row[key] is not None and math.isfinite(row[key]):
                    writer.add_scalar(f"activations/{key}", row[key], row["index"])
        writer.add_text("activations/setup", measured.title, 0)


def run(cfg, run_dir: Path) -> list[dict]:
    options = settings(cfg)
    measured = measure_config(cfg)
    run_dir = Path(run_dir)
    rows = [{key: finite(value) for key, value in row.items()} for row in measured.rows]
    (run_dir / "activations.json").write_text(json.dumps(rows, indent=2) + "\n")
    print_table(measured)
    png = plot(measured, run_dir / "activations.png", options["histograms"])
    write_tensorboard(measured, run_dir / "tensorboard")
    print(f"wrote {run_dir / 'activations.json'}, {png} and {run_dir / 'tensorboard'}")
    return rows
