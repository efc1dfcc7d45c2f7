"""One `trainlab train` run: validated config -> built pieces -> fit -> test with best weights -> summary.json."""

from __future__ import annotations

import copy
import json
import math
import os
import random
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf

from trainlab import checkpoint
from trainlab.config import TrainerSchema, switch, validate
from trainlab.ema import build_ema
from trainlab.data import build_data
from trainlab.errors import ConfigError, TrainingDiverged
from trainlab.init import apply_init, check_init, needs_batch
from trainlab.models import build_model, count_parameters
from trainlab.monitor.console import ConsoleReporter
from trainlab.monitor.model_summary import summarize
from trainlab.optim import build_optimizer, build_schedule
from trainlab.regularization import build_penalty
from trainlab.train import EarlyStopping, Trainer
from trainlab.transfer import setup_transfer, split_model_config
from trainlab.tta import build_views


def resolve_device(name: str) -> torch.device:
    """auto: cuda > mps > cpu. An explicit device that is not there is an error, not a silent fallback."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"trainer.device={name}: CUDA is not available here; use trainer.device=auto or cpu")
    if name == "mps" and not torch.backends.mps.is_available():
        raise ConfigError("trainer.device=mps: MPS is not available here; use trainer.device=auto or cpu")
    return torch.device(name)


def transfer_lines(transfer: dict, params: int) -> list[str]:
    """What transfer learning did, for the console: what was loaded, what is new, what is frozen."""
    lines = []
    if transfer["loaded"]:
        lines.append(f"loaded {transfer['loaded']} tensors from {transfer['pretrained']}; newly initialised: "
                     f"{', '.join(transfer['new']) or 'none'}")
    if transfer["freeze"] != "none":
        lines.append(f"frozen: model.freeze={transfer['freeze']} ({transfer['frozen']} tensors); "
                     f"trainable parameters {transfer['trainable_params']:,} of {params:,}")
        if not transfer["pretrained"]:
            lines.append("note: model.freeze without model.pretrained: the frozen layers keep their random init")
    return lines


def initialize_weights(model: torch.nn.Module, cfg: DictConfig, train_loader) -> dict:
    """The `init` option, with gains that follow model.activation; LSUV gets one real training batch."""
    activation, params = cfg.model.get("activation", "relu"), cfg.model.get("activation_params")
    batch = None
    if needs_batch(cfg.init):
        state = train_loader.generator.get_state()  # borrowing a batch must not change the run's shuffling
        batch, _ = next(iter(train_loader))
        train_loader.generator.set_state(state)
    return apply_init(model, cfg.init, activation=activation, activation_params=params, batch=batch)


def seed_everything(seed: int, deterministic: bool) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)  # all devices
    if deterministic:
        # cuBLAS needs this set before its first use to be deterministic
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    # set both ways: the jobs of a sweep share one process
    torch.use_deterministic_algorithms(deterministic)
    torch.backends.cudnn.benchmark = not deterministic


def build_loaders(cfg: DictConfig, device: torch.device, channels_last: bool):
    """build_data, with trainer.batch_size=full resolved to the training split's size (one batch per epoch)."""
    if cfg.trainer.batch_size != "full":
        return build_data(cfg, device, cfg.seed, channels_last=channels_last)
    data_cfg = copy.deepcopy(cfg)
    data_cfg.trainer.batch_size = 2**62  # "every example": the split's size is known once the data is built
    data = build_data(data_cfg, device, cfg.seed, channels_last=channels_last)
    data.train.batch_size = max(1, data.train.num_samples)
    return data


def resolve_amp(trainer_cfg: DictConfig, device: torch.device, reporter: ConsoleReporter) -> tuple[bool, torch.dtype]:
    """trainer.amp (auto: on CUDA) and trainer.amp_dtype; fp16 on CPU falls back to fp32 with a notice."""
    amp = switch(trainer_cfg.amp, auto=device.type == "cuda")
    dtype = torch.float16 if trainer_cfg.amp_dtype == "fp16" else torch.bfloat16
    if amp and device.type == "cpu":
        if dtype == torch.float16:
            reporter.info("note: trainer.amp_dtype=fp16 on CPU is not supported for training; running in fp32 "
                          "(use trainer.amp_dtype=bf16 for autocast on CPU)")
            return False, dtype
        reporter.info("note: trainer.amp=true on CPU: bf16 autocast on CPU is slow on most CPUs")
    return amp, dtype


def compile_model(model: torch.nn.Module, enabled: bool, reporter: ConsoleReporter):
    """torch.compile(model) for the forward pass (state dicts still come from `model`), or None."""
    if not enabled:
        return None
    try:
        return torch.compile(model)
    except Exception as error:  # e.g. an unsupported platform or Python version
        first = (str(error).strip().splitlines() or [type(error).__name__])[0]
        reporter.info(f"note: trainer.compile=true failed ({type(error).__name__}: {first}); running eager")
        return None


def effective_monitor(trainer_cfg: DictConfig) -> str:
    """The metric that picks best.pt (and drives early stopping and metric-driven schedules):
    trainer.monitor, or its val_ema/ twin when trainer.ema.select_best is on."""
    monitor = trainer_cfg.monitor
    if trainer_cfg.ema.decay is not None and trainer_cfg.ema.select_best and monitor.startswith("val/"):
        monitor = "val_ema/" + monitor[len("val/"):]
    return monitor


def write_summary(path: Path, summary: dict) -> None:
    temporary = path.with_suffix(".json.tmp")
    temporary.write_text(json.dumps(summary, indent=2) + "\n")
    os.replace(temporary, path)


def choices() -> dict[str, Any]:
    """The group options this run was composed from (e.g. optimizer: adam), when Hydra knows them."""
    from hydra.core.hydra_config import HydraConfig

    if not HydraConfig.initialized():
        return {}
    picked = HydraConfig.get().runtime.choices
    return {group: picked.get(group) for group in
            ("dataset", "preprocess", "augmentation", "model", "init", "optimizer", "schedule", "trainer")
            if group in picked}


def test_best_weights(trainer: Trainer, test_loader, tta_views, writer) -> dict:
    """Score the test split once (and again with TTA views, if any); test is None when there is no test split."""
    if test_loader.num_samples == 0:
        return {"test": None}
    results = {"test": trainer.evaluate(test_loader)}
    if tta_views is not None:  # the same weights, scored again with test-time augmentation
        results["test_tta"] = trainer.evaluate(test_loader.with_views(tta_views))
    for split, metrics in results.items():
        for name, value in metrics.items():
            writer.add_scalar(f"{split}/{name}", value, trainer.step)
    return results


def log_hparams(writer, cfg: DictConfig, summary: dict) -> None:
    """The run's choices and key values with its results, for TensorBoard's HParams tab (compares sweeps)."""
    hparams = {group: str(option) for group, option in summary["choices"].items()}
    hparams.update({"optimizer.lr": float(cfg.optimizer.get("lr", 0.0)), "trainer.batch_size": cfg.trainer.batch_size,
                    "trainer.epochs": cfg.trainer.epochs, "seed": cfg.seed})
    best = summary["best"]
    metrics = {f"hparam/best_{best['metric'].replace('/', '_')}": best["value"]}
    if summary["test"] is not None:
        metrics.update({"hparam/test_acc": summary["test"]["acc"], "hparam/test_loss": summary["test"]["loss"]})
    writer.add_hparams(hparams, metrics, run_name=".", global_step=summary["steps"])


# Keys that may differ between a run and its resumption: they change how it runs, not what it computes.
RESUME_FREE_KEYS = {"trainer.resume", "trainer.device", "trainer.progress", "trainer.log_every",
                    "trainer.eval_batch_size", "trainer.model_summary", "dataset.root", "dataset.system_root", "dataset.download",
                    "dataset.num_workers", "dataset.cache_dir", "model.pretrained"}


def flatten(tree: Any, prefix: str = "") -> dict[str, Any]:
    if not isinstance(tree, dict):
        return {prefix: tree}
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        flat.update(flatten(value, f"{prefix}.{key}" if prefix else str(key)))
    return flat


def resume(value: str, plain_cfg: dict, trainer: Trainer, checkpointer: checkpoint.Checkpointer, train_loader,
           device: torch.device) -> int:
    """Load last.pt into the built pieces so training continues exactly; return the next epoch."""
    path = checkpoint.resume_path(value)
    payload = checkpoint.load(path, map_location=device)
    if "optimizer" not in payload:
        raise ConfigError(f"trainer.resume={value}: {path.name} holds weights only; resume from last.pt")
    ours, theirs = flatten(plain_cfg), flatten(payload["config"])
    # a checkpoint written before a trainer key existed ran with that key's default
    defaults = flatten({"trainer": OmegaConf.to_container(OmegaConf.structured(TrainerSchema))})
    theirs = {**{k: v for k, v in defaults.items() if k not in theirs}, **theirs}
    for key in sorted(ours.keys() | theirs.keys()):
        if key not in RESUME_FREE_KEYS and ours.get(key) != theirs.get(key):
            raise ConfigError(
                f"trainer.resume={value}: this run has {key}={ours.get(key)!r} but the checkpoint's run had "
                f"{theirs.get(key)!r}; resuming continues that same run, so use its config"
            )
    if payload["epoch"] >= plain_cfg["trainer"]["epochs"]:
        raise ConfigError(f"trainer.resume={value}: that run already finished all {payload['epoch']} epochs")
    stopping, patience = payload.get("early_stopping"), plain_cfg["trainer"]["early_stopping"]["patience"]
    if stopping is not None and patience is not None and stopping["bad_epochs"] >= patience:
        raise ConfigError(f"trainer.resume={value}: that run stopped early after epoch {payload['epoch']} "
                          f"({stopping['bad_epochs']} epochs without improvement); there is nothing to continue")
    checkpointer.restore(payload["best"], path.parent)
    return trainer.load_resume_state(payload, train_loader)


def train(cfg: DictConfig, run_dir: Path) -> dict:
    """Train as `cfg` says, writing the run folder contract into `run_dir`; return the summary."""
    started = time.perf_counter()
    cfg = validate(cfg)
    trainer_cfg = cfg.trainer
    device = resolve_device(trainer_cfg.device)
    check_init(cfg.init, cfg.model.get("activation", "relu"), cfg.model.get("activation_params"))  # before data
    seed_everything(cfg.seed, trainer_cfg.deterministic)
    on_cuda = device.type == "cuda"
    reporter = ConsoleReporter(progress=trainer_cfg.progress)

    use_channels_last = switch(trainer_cfg.channels_last, auto=on_cuda)
    data = build_loaders(cfg, device, use_channels_last)
    model = build_model(cfg.model, data.input_shape, data.num_classes)
    model = model.to(device, memory_format=torch.channels_last) if use_channels_last else model.to(device)
    init_report = initialize_weights(model, cfg, data.train)
    params = count_parameters(model)  # before freezing: frozen batch norm keeps its weights as buffers
    _, transfer_settings = split_model_config(cfg.model)
    # a resumed run takes its weights from last.pt, not from model.pretrained
    transfer = setup_transfer(model, transfer_settings, load_weights=not trainer_cfg.resume, classes=data.classes)
    model = model.to(device, memory_format=torch.channels_last) if use_channels_last else model.to(device)
    optimizer = build_optimizer(cfg.optimizer, model)
    # the schedule counts optimizer steps: one per `accumulate` micro-batches, the last partial group included
    steps_per_epoch = math.ceil(len(data.train) / trainer_cfg.accumulate)
    scheduler = build_schedule(cfg.schedule, optimizer, steps_per_epoch, trainer_cfg.epochs, mode=trainer_cfg.mode)
    tta_views = build_views(**cfg.tta) if cfg.get("tta") else None
    amp, amp_dtype = resolve_amp(trainer_cfg, device, reporter)
    forward = compile_model(model, trainer_cfg.compile, reporter)
    ema_cfg = trainer_cfg.ema
    ema = build_ema(model, ema_cfg.decay) if ema_cfg.decay is not None else None
    monitor = effective_monitor(trainer_cfg)
    stopping = trainer_cfg.early_stopping
    early_stopping = (EarlyStopping(monitor, trainer_cfg.mode, stopping.patience, stopping.min_delta)
                      if stopping.patience is not None else None)

    from torch.utils.tensorboard import SummaryWriter  # heavy import, only when training

    plain_cfg = OmegaConf.to_container(cfg, resolve=True)
    trainable = transfer["trainable_params"]
    if trainer_cfg.model_summary:
        reporter.model_table(summarize(model, data.input_shape, device), params, trainable)
    checkpointer = checkpoint.Checkpointer(
        run_dir / "checkpoints", monitor, trainer_cfg.mode,
        extra={"preprocess": data.preprocess.state_dict(), "config": plain_cfg, "classes": data.classes},
    )
    summary: dict[str, Any] = {
        "status": "running", "run_dir": str(run_dir), "device": str(device), "params": params, "trainable_params": trainable, "init": init_report,
        "transfer": transfer,
        "choices": choices(), "epochs": trainer_cfg.epochs, "epochs_run": 0, "stopped_early": None,
        "ema": ema_cfg.decay, "best_from_ema": monitor.startswith("val_ema/"),
        "train_size": data.train.num_samples, "val_size": data.val.num_samples, "test_size": data.test.num_samples,
    }
    reporter.info(
        f"trainlab: {' '.join(f'{k}={v}' for k, v in summary['choices'].items())} on {device}; {params:,} parameters; "
        f"train {summary['train_size']:,} / val {summary['val_size']:,} / test {summary['test_size']:,}"
    )
    for line in transfer_lines(transfer, params):
        reporter.info(line)
    writer = SummaryWriter(log_dir=str(run_dir / "tensorboard"))
    trainer = Trainer(model, optimizer, scheduler, device, label_smoothing=trainer_cfg.label_smoothing, amp=amp,
                      amp_dtype=amp_dtype, log_every=trainer_cfg.log_every, writer=writer, reporter=reporter,
                      checkpointer=checkpointer, mix=data.mix, forward=forward, accumulate=trainer_cfg.accumulate,
                      clip_grad_norm=trainer_cfg.clip_grad_norm, clip_grad_value=trainer_cfg.clip_grad_value,
                      penalty=build_penalty(model, trainer_cfg.l1, trainer_cfg.l2), ema=ema,
                      ema_every=ema_cfg.every, ema_evaluate=ema_cfg.evaluate, monitor=monitor, mode=trainer_cfg.mode,
                      early_stopping=early_stopping)
    start_epoch = 1
    if trainer_cfg.resume:
        start_epoch = resume(trainer_cfg.resume, plain_cfg, trainer, checkpointer, data.train, device)
        summary["resumed_from"] = str(checkpoint.resume_path(trainer_cfg.resume))
        reporter.info(f"resuming {summary['resumed_from']} at epoch {start_epoch}")
    try:
        fit = trainer.fit(data.train, data.val, trainer_cfg.epochs, start_epoch=start_epoch)
        best = checkpoint.load(checkpointer.best_path, map_location=device)
        model.load_state_dict(best["model"])
        tested = time.perf_counter()
        summary.update(test_best_weights(trainer, data.test, tta_views, writer))
        test_seconds = time.perf_counter() - tested
        summary.update(
            status="completed",
            epochs_run=fit.epochs_run,
            stopped_early=fit.stopped_early,
            best=checkpointer.best(),
            final={k: v for k, v in fit.history[-1].items() if k != "epoch"},
            time={"train_s": fit.train_seconds, "eval_s": fit.eval_seconds + test_seconds,
                  "total_s": time.perf_counter() - started},
            train_samples_per_s=fit.samples_seen / max(fit.train_seconds, 1e-9),
            steps=trainer.step,
        )
        log_hparams(writer, cfg, summary)
    except KeyboardInterrupt:
        summary.update(status="interrupted", best=checkpointer.best(), steps=trainer.step)
        write_summary(run_dir / "summary.json", summary)
        raise
    except TrainingDiverged as error:
        summary.update(status="diverged", error=str(error), best=checkpointer.best(), steps=trainer.step)
        write_summary(run_dir / "summary.json", summary)
        raise
    except Exception as error:
        summary.update(status="failed", error=f"{type(error).__name__}: {error}", best=checkpointer.best())
        write_summary(run_dir / "summary.json", summary)
        raise
    finally:
        writer.close()
    write_summary(run_dir / "summary.json", summary)
    reporter.closing_table(summary)
    return summary
