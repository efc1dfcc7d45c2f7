"""`trainlab train`: validated config -> built pieces -> fit with callbacks -> test with best weights -> summary.json."""

from __future__ import annotations

import contextlib
import json
import os
import time
from pathlib import Path
from typing import Any

CONFIG = "train"

# The groups whose chosen option a run reports (console header, summary.json, HParams).
REPORTED_GROUPS = ("dataset", "preprocess", "augmentation", "model", "init", "optimizer", "schedule", "trainer",
                   "domain", "adaptation")


def check(cfg, context) -> None:
    """trainer.resume: the checkpoint must be one this config continues (read before any folder is made)."""
    if cfg.trainer.resume:
        from trainlab import resume

        resume.check(cfg, context.defaults if context.compose is not None else None,
                     getattr(context, "overrides", None), getattr(context, "choices", None))


def write_summary(path: Path, summary: dict) -> None:
    from trainlab.errors import CannotWrite

    temporary = path.with_suffix(".json.tmp")
    try:
        temporary.write_text(json.dumps(summary, indent=2) + "\n")
        os.replace(temporary, path)
    except OSError as error:
        temporary.unlink(missing_ok=True)
        raise CannotWrite(path, error.strerror or str(error)) from None


def write_ending(path: Path, summary: dict) -> None:
    """summary.json of a run that is stopping on an error: when even that cannot be written (the disk that
    failed the run is full), the run's own error is what the user needs to see, not this one."""
    from trainlab.errors import CannotWrite

    try:
        write_summary(path, summary)
    except CannotWrite:
        pass


def choices() -> dict[str, Any]:
    """The group options this run was composed from (e.g. optimizer: adam), when Hydra knows them."""
    from hydra.core.hydra_config import HydraConfig

    if not HydraConfig.initialized():
        return {}
    picked = HydraConfig.get().runtime.choices
    return {group: picked.get(group) for group in REPORTED_GROUPS if group in picked}


@contextlib.contextmanager
def stopping_at_a_step(trainer):
    """While training: the first SIGINT or SIGTERM asks the Trainer to stop at the next step boundary (it
    raises train.Interrupted there: the run ends as interrupted, with how to continue); a second one
    stops at once. Only from the main thread (signal handlers live there)."""
    import signal
    import threading

    from trainlab.train import Interrupted

    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def asked(signum, frame):
        if trainer.stop_signal is not None:
            raise Interrupted(signum)
        trainer.stop_signal = signum

    previous = {sig: signal.signal(sig, asked) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    if trainer.stop_signal is not None:  # asked during the last validation: stop before testing
        raise Interrupted(trainer.stop_signal)


def signal_name(stop: KeyboardInterrupt) -> str:
    import signal

    return signal.Signals(getattr(stop, "signal", signal.SIGINT)).name


def versions() -> dict[str, str]:
    """What wrote a checkpoint: trainlab, torch, torchvision (for eval and fine-tuning elsewhere)."""
    import torch
    import torchvision

    from trainlab import __version__

    return {"trainlab": str(__version__), "torch": str(torch.__version__), "torchvision": str(torchvision.__version__)}


def best_from_history(history: list[dict], monitor: str, mode: str) -> dict:
    """The best epoch by `monitor` when no checkpoint callback kept track (~callbacks.checkpoint)."""
    pick = max if mode == "max" else min
    top = pick(history, key=lambda row: row[monitor]) if history else None
    return {"metric": monitor, "mode": mode, "value": top[monitor] if top else None,
            "epoch": top["epoch"] if top else None}


def test_best_weights(trainer, experiment, run) -> dict:
    """Score the test split once (and again with TTA views, if any); test is None when there is no test split.
    The plain pass's confusion counts go to `run.test_confusion` (the pictures use them: no second pass)."""
    test_loader = experiment.data.test
    if test_loader.num_samples == 0:
        return {"test": None}
    classes = len(experiment.data.classes)
    scored = trainer.evaluate(test_loader, confusion_classes=classes)
    run.test_confusion = scored.pop("confusion")
    if trainer.world.active:  # the pictures' validation counts too: rank 0 alone holds only its part of the split
        run.val_confusion = trainer.evaluate(experiment.data.val, confusion_classes=classes)["confusion"]
    results = {"test": scored}
    if experiment.tta_views is not None:  # the same weights, scored again with test-time augmentation
        results["test_tta"] = trainer.evaluate(test_loader.with_views(experiment.tta_views))
    target = experiment.data.target
    if target is not None:  # the first use of any target label: scoring, after training and selection
        results["target_test"] = trainer.evaluate(target.test)
        if experiment.tta_views is not None:
            results["target_test_tta"] = trainer.evaluate(target.test.with_views(experiment.tta_views))
    return results


def run(cfg, run_dir: Path) -> Any:
    """Train as `cfg` (checked) says, writing the run folder contract into `run_dir`; return the summary.
    With trainer.devices=N (N > 1, not already one rank of a torchrun or submitit world): N processes."""
    from trainlab import distributed

    devices = cfg.trainer.get("devices", 1)
    if not distributed.current().active:
        cluster = distributed.submitit_world()  # each task of a submitit job runs this job
        if cluster is not None:
            from omegaconf import open_dict

            from trainlab.config import check_data_parallel

            with open_dict(cfg):
                cfg.trainer.devices = cluster.size  # the tasks SLURM gave: the batch must divide among them
            check_data_parallel(cfg.trainer, cfg.get("callbacks"))
            return run_rank(cfg, run_dir, cluster, choices())  # None on the tasks > 0
        if devices > 1:
            return run_spawned(cfg, run_dir, devices)
    return train_run(cfg, run_dir, choices())


def run_spawned(cfg, run_dir: Path, devices: int) -> dict:
    """trainer.devices=N: the run as N processes of this machine, each given this config (composed and
    checked once, here, resolved) and its share of the cores; rank 0 writes the run folder."""
    import torch
    from omegaconf import OmegaConf

    from trainlab import distributed

    threads = cfg.trainer.threads if cfg.trainer.threads != "auto" else max(1, torch.get_num_threads() // devices)
    try:
        distributed.launch(OmegaConf.to_container(cfg, resolve=True), run_dir, choices(), devices, threads)
    except distributed.RankFailed as error:  # rank 0 may have recorded only the others' lost connection
        ended = run_dir / "summary.json"
        if ended.is_file():
            write_ending(ended, {**json.loads(ended.read_text()), "status": "failed", "error": str(error)})
        raise
    return json.loads((run_dir / "summary.json").read_text())


def run_rank(cfg, run_dir: Path, world, picked: dict) -> Any:
    """One rank of a data-parallel run: join the process group, train; the summary on rank 0, else None."""
    from trainlab import distributed
    from trainlab.runtime import resolve_device

    distributed.join(world, resolve_device(cfg.trainer.device))
    result = train_run(cfg, run_dir, picked)
    distributed.leave()
    return result


def train_run(cfg, run_dir: Path, picked: dict) -> Any:
    """The run in this process (one rank of it, in a data-parallel run: rank 0 writes the files and
    returns the summary, the others None). `picked`: the group options the config was composed from."""
    from omegaconf import OmegaConf

    from trainlab import checkpoint, distributed, resume, safety
    from trainlab.build import build_callbacks, build_experiment, build_trainer
    from trainlab.callbacks.base import RunInfo
    from trainlab.errors import TrainingDiverged

    started = time.perf_counter()
    trainer_cfg = cfg.trainer
    # read (and checked) before the folder was made; its choices: the run's own when the overrides are left out
    payload = resume.read(trainer_cfg.resume, safety.trusted_targets(cfg)) if trainer_cfg.resume else None
    picked = (payload.get("choices") if payload else None) or picked
    world = distributed.current()
    experiment = build_experiment(cfg, resuming=bool(trainer_cfg.resume))
    data = experiment.data
    plain_cfg = OmegaConf.to_container(cfg, resolve=True)
    summary: dict[str, Any] = {
        "status": "running", "run_dir": str(run_dir), "device": str(experiment.device), "params": experiment.params,
        "trainable_params": experiment.transfer["trainable_params"], "init": experiment.init_report,
        "transfer": experiment.transfer, "choices": picked, "epochs": trainer_cfg.epochs, "epochs_run": 0,
        "stopped_early": None, "ema": (cfg.callbacks.get("ema") or {}).get("decay"),
        "best_from_ema": experiment.monitor.startswith("val_ema/"),
        "train_size": data.train.num_samples, "val_size": data.val.num_samples, "test_size": data.test.num_samples,
        "runtime": experiment.runtime, "notices": list(experiment.notices),
        "devices": world.size,
    }
    if data.target is not None:
        summary["adaptation"] = {"method": cfg.adaptation.method, "domain": data.target.name,
                                 "target_train_size": data.target.train.num_samples,
                                 "target_test_size": data.target.test.num_samples}
    run = RunInfo(run_dir=run_dir if world.main else None, monitor=experiment.monitor, mode=trainer_cfg.mode,
                  config=plain_cfg, summary=summary, input_shape=data.input_shape, notices=experiment.notices, data=data,
                  checkpoint_extra={"preprocess": data.preprocess.state_dict(), "config": plain_cfg,
                                    "classes": data.classes, "choices": picked, "versions": versions()})
    callbacks = build_callbacks(cfg, run)
    trainer = build_trainer(experiment, callbacks)
    saver = next((cb for cb in callbacks.values() if hasattr(cb, "best_path")), None)
    start_epoch = 1
    if payload is not None:
        start_epoch = resume.restore(trainer, payload, trainer_cfg.resume, run_dir if world.main else None, data.train)
        summary["resumed_from"] = str(checkpoint.resume_path(trainer_cfg.resume))

    def best() -> dict:
        return saver.best() if saver is not None else best_from_history(fit.history if fit else [], experiment.monitor,
                                                                         trainer_cfg.mode)

    fit = None
    try:
        with stopping_at_a_step(trainer):
            fit = trainer.fit(data.train, data.val, trainer_cfg.epochs, start_epoch=start_epoch)
        if saver is not None and saver.best_path.is_file():
            experiment.model.load_state_dict(checkpoint.load(saver.best_path, map_location=experiment.device)["model"])
        world.share_tensors(experiment.model.state_dict().values())  # rank 0's weights (best.pt's) on every rank
        tested = time.perf_counter()
        summary.update(test_best_weights(trainer, experiment, run))
        test_seconds = time.perf_counter() - tested
        summary.update(
            status="completed", epochs_run=fit.epochs_run, stopped_early=fit.stopped_early, best=best(),
            tested_weights="best" if saver is not None else "last",
            final={k: v for k, v in fit.history[-1].items() if k != "epoch"},
            time={"train_s": fit.train_seconds, "eval_s": fit.eval_seconds + test_seconds,
                  "total_s": time.perf_counter() - started},
            train_samples=fit.samples_seen,  # over all ranks: each trained on its part of every batch
            train_samples_per_s=fit.samples_seen / max(fit.train_seconds, 1e-9), steps=trainer.step,
            skipped_batches=trainer.skipped,
        )
        if experiment.device.type == "cuda":  # the figure GPU users size their batch by
            import torch

            summary["peak_gpu_memory_mib"] = torch.cuda.max_memory_allocated(experiment.device) / 2**20
    except KeyboardInterrupt as stop:
        summary.update(status="interrupted", signal=signal_name(stop),
                       best=best(), steps=trainer.step)
        if world.main:
            write_ending(run_dir / "summary.json", summary)
        raise
    except TrainingDiverged as error:
        summary.update(status="diverged", error=str(error), divergence=error.details, best=best(), steps=trainer.step)
        if world.main:
            write_ending(run_dir / "summary.json", summary)
        raise
    except Exception as error:
        summary.update(status="failed", error=f"{type(error).__name__}: {error}", best=best(), steps=trainer.step)
        if world.main:
            write_ending(run_dir / "summary.json", summary)
        raise
    if world.main:
        write_summary(run_dir / "summary.json", summary)
    trainer.callbacks.fire("on_test_end", trainer, summary)
    return summary if world.main else None
