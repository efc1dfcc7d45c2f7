"""Sweeps (`-m`): which jobs a sweep runs (so the runner can check them before it starts), what a job
returns to the sweeper, a job's share of the machine, and which jobs failed.

- Plan: a grid (Hydra's basic sweeper: comma lists, `range(...)`, `glob(...)`, `hydra.sweeper.params`) is
  expanded exactly as Hydra will expand it, so every job is checked before the first starts and gets
  the checked config. An optuna search picks its values while it runs: the runner checks the corners of
  its space (each bound of every interval, each choice) before it starts, and each trial is checked again
  when it starts.
- Objective: the monitored metric's best value (summary.json best.value); a diverged run scores the
  worst value there is for trainer.mode (-inf for max, +inf for min: the sampler learns to stay away);
  a run that failed returns NaN, which optuna records as a failed trial (and the search goes on).
- Share of the machine: with hydra/launcher=joblib, each of the n_jobs parallel jobs gets
  cores // n_jobs torch threads (trainer.threads=auto) and, with several GPUs and trainer.device=auto,
  GPU job.num % device_count; with submitit, hydra.launcher.cpus_per_task threads when set.
- Failures: a job that fails writes <job>/error.txt (and, for train, a summary.json with status
  failed when the run had not written one); after the sweep the runner lists them and exits 1.
Nothing here imports torch at module level.
"""

from __future__ import annotations

import json
import logging
import math
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

from omegaconf import OmegaConf

ERROR_FILE = "error.txt"
log = logging.getLogger("trainlab")


@dataclass
class Plan:
    """The override lists to check before a sweep starts. `exact`: they are the jobs Hydra will run (a
    grid), so each job can reuse its checked config; else they only sample the space (a search)."""

    runs: list[list[str]]
    exact: bool
    labels: Optional[list[str]] = None  # how a failed check names each run (default: "job <overrides>")


def config_loader(config_dir: Path, user_dir: Optional[Path]):
    """Hydra's config loader over the shipped configs, the plugins' and the user's ./configs, searched the
    way hydra.main searches them (`--config-dir` first), so `glob(...)` sees the same options."""
    from hydra._internal.config_loader_impl import ConfigLoaderImpl
    from hydra._internal.utils import create_config_search_path
    from hydra.core.config_search_path import SearchPathQuery

    search_path = create_config_search_path(str(config_dir))
    if user_dir is not None:
        search_path.prepend(provider="command-line", path=f"file://{user_dir.resolve()}",
                            anchor=SearchPathQuery(provider="schema"))
    return ConfigLoaderImpl(config_search_path=search_path)


def plan(config_name: str, args: list[str], config_dir: Path, user_dir: Optional[Path]) -> Optional[Plan]:
    """The runs to check before the sweep `args` starts, or None when they cannot be known here (another
    sweeper, or overrides Hydra will reject itself, with its own message)."""
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import HydraException
    from hydra.types import RunMode
    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    overrides = [a for a in args if a not in ("-m", "--multirun")]
    loader = config_loader(config_dir, user_dir)
    parser = OverridesParser.create(config_loader=loader)
    try:
        parser.parse_overrides(overrides)  # syntax first: Hydra names a bad override best
        sweeper = loader.load_configuration(config_name, overrides, RunMode.MULTIRUN).hydra.sweeper
        target = str(sweeper.get("_target_", ""))
        params = sweeper.get("params")
        params = OmegaConf.to_container(params, resolve=True) if params is not None else {}
    except (HydraException, OmegaConfBaseException):
        # a job that does not compose: the grid as given, for the per-job check to name the bad one
        target, params = "BasicSweeper", {}
    try:
        parsed = parser.parse_overrides([f"{k}={v}" for k, v in params.items()] + overrides)
        if target.endswith("BasicSweeper"):
            return Plan([run for batch in BasicSweeper.split_arguments(parsed, None) for run in batch], exact=True)
        if "optuna" in target.lower():
            runs, labels = search_corners(parsed)
            return Plan(runs, exact=False, labels=labels)
    except HydraException:
        return None
    return None


def search_corners(parsed: list) -> tuple[list[list[str]], list[str]]:
    """A search space's corners to check: every parameter at its first value, then each other value of one
    parameter at a time (both bounds of an interval, every choice, a range's first and last); and for
    each, its label naming the searched values ("search space at optimizer.lr=0.1 ...")."""
    from hydra.core.override_parser.types import IntervalSweep

    options: dict[str, list[str]] = {}  # by key: a later override replaces an earlier one, as in the sweeper
    searched = set()
    for override in parsed:
        key = override.get_key_element()
        if not override.is_sweep_override():
            values = [override.get_value_element_as_str()]
        elif isinstance(override.value(), IntervalSweep):
            interval = override.value()
            values = [str(interval.start), str(interval.end)]
        else:
            values = list(override.sweep_string_iterator())
            values = values[:1] + values[-1:] if override.is_range_sweep() else values
        if override.is_sweep_override():
            searched.add(override.key_or_group)
        options[override.key_or_group] = [f"{key}={value}" for value in dict.fromkeys(values)]
    base = [values[0] for values in options.values()]
    runs = [base]
    for i, values in enumerate(options.values()):
        runs += [base[:i] + [value] + base[i + 1:] for value in values[1:]]
    keys = list(options)
    labels = ["search space at " + " ".join(o for key, o in zip(keys, run) if key in searched) for run in runs]
    return runs, labels


# -- what a job returns to the sweeper -------------------------------------------------------------

def worst(mode: str) -> float:
    return -math.inf if mode == "max" else math.inf


def objective(summary: Optional[dict], mode: str) -> float:
    """The value a train job returns: best.value when the run completed; the worst value for `mode`
    when it diverged; NaN otherwise (optuna then marks the trial failed)."""
    summary = summary or {}
    value = (summary.get("best") or {}).get("value")
    if summary.get("status") == "diverged":
        return worst(mode)
    if summary.get("status") == "completed" and isinstance(value, (int, float)) and math.isfinite(value):
        return float(value)
    return math.nan


def returned(summary: Optional[dict], mode: str = "max") -> float:
    """objective(), noted in the job's train.log (what the sweeper was given)."""
    value = objective(summary, mode)
    log.info("returned to the sweeper: %r", value)
    return value


# -- a job's share of the machine ------------------------------------------------------------------

def cores() -> int:
    try:
        return len(os.sched_getaffinity(0))  # what this process may use (cgroups, taskset, Slurm)
    except AttributeError:
        return os.cpu_count() or 1


def parallel_jobs(launcher: Any) -> int:
    """How many jobs of this sweep run at the same time on this machine (1 unless joblib runs them)."""
    if "joblib" not in str(launcher.get("_target_", "")):
        return 1
    n_jobs = launcher.get("n_jobs")
    if n_jobs is None or n_jobs == 0:
        return 1
    n_jobs = int(n_jobs)
    return max(1, n_jobs if n_jobs > 0 else cores() + 1 + n_jobs)  # joblib: -1 all cores, -2 all but one


def threads(setting: Any, launcher: Any) -> Optional[int]:
    """torch's intra-op threads for a job: trainer.threads when a number; for auto, cores // parallel jobs
    under joblib, hydra.launcher.cpus_per_task under submitit, else None (torch's own default)."""
    if setting != "auto":
        return int(setting)
    if launcher is None:
        return None
    if "submitit" in str(launcher.get("_target_", "")):
        return int(launcher.cpus_per_task) if launcher.get("cpus_per_task") else None
    jobs = parallel_jobs(launcher)
    return max(1, cores() // jobs) if jobs > 1 else None


def job_device(device: str, launcher: Any, job_num: int) -> Optional[str]:
    """With trainer.device=auto, joblib running several jobs at once and several CUDA devices: job n
    takes cuda:(n % device_count), so the jobs do not share one GPU. None: leave the device as it is."""
    if device != "auto" or launcher is None or parallel_jobs(launcher) < 2:
        return None
    import torch

    if not torch.cuda.is_available() or torch.cuda.device_count() < 2:
        return None
    return f"cuda:{job_num % torch.cuda.device_count()}"


def fit_to_machine(config, hydra_cfg) -> Any:
    """Apply trainer.threads (and the per-job GPU) before anything is built; returns the config to run."""
    trainer = config.get("trainer") if hasattr(config, "get") else None
    if trainer is None or "threads" not in trainer:
        return config
    launcher = hydra_cfg.get("launcher") if hydra_cfg.mode.name == "MULTIRUN" else None
    wanted = threads(trainer.threads, launcher)
    if wanted is not None:
        import torch

        torch.set_num_threads(wanted)
        log.info("torch threads: %d", wanted)
    job_num = OmegaConf.select(hydra_cfg, "job.num", default=None) if launcher is not None else None  # a sweep's
    device = job_device(str(trainer.get("device", "auto")), launcher, int(job_num or 0))
    if device is not None:
        import copy

        config = copy.deepcopy(config)
        config.trainer.device = device
        log.info("device for job %s: %s", job_num, device)
    return config


# -- failures --------------------------------------------------------------------------------------

def record_failure(run_dir: Path, message: str, details: str = "", summary: bool = True) -> None:
    """A failed job's record in its own folder: error.txt (the line, then any traceback), train.log, and
    for train a summary.json with status failed when the run did not get to write its own."""
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / ERROR_FILE).write_text(message + "\n" + (f"\n{details}" if details else ""))
    log.error("error: %s", message)
    if details:
        log.error(details)
    if summary and not (run_dir / "summary.json").exists():
        write_resultless_summary(run_dir, "failed", message)


def write_resultless_summary(run_dir: Path, status: str, error: str) -> None:
    """summary.json of a job that ended without a result of its own (failed, skipped)."""
    record = {"status": status, "error": error, "run_dir": str(run_dir),
              "best": {"metric": None, "mode": None, "value": None, "epoch": None}}
    (run_dir / "summary.json").write_text(json.dumps(record, indent=2) + "\n")


def natural(path: Path) -> list:
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", path.as_posix())]


def job_folders(sweep_dir: Path) -> list[Path]:
    """The job folders of a sweep (each has .hydra/), outside submitit's own .submitit/ folder and the
    unfinished jobs a continued sweep set aside."""
    return sorted((p.parent for p in sweep_dir.rglob(".hydra")
                   if not {".submitit", SET_ASIDE} & set(p.relative_to(sweep_dir).parts)), key=natural)


def failures(sweep_dir: Path) -> list[tuple[Path, str]]:
    """(job folder, first line of its error) for every job of the sweep that failed."""
    found = []
    for folder in job_folders(sweep_dir):
        error = folder / ERROR_FILE
        if error.is_file():
            found.append((folder, (error.read_text(errors="replace").splitlines() or ["failed"])[0]))
    return found


# ---------------------------------------------------------------- continuing a sweep, stopping one

STOP_FILE = ".stop-at-first-failure"  # in the sweep folder: a job failed and --fail-fast is on
SET_ASIDE = ".incomplete"  # <sweep>/.incomplete/<time>/<job>: a continued sweep's unfinished jobs, kept
FINISHED = ("completed", "diverged")  # a job with a result: a continued sweep does not run it again


def task_overrides(args: list[str]) -> list[str]:
    """The overrides Hydra records as a sweep's task (hydra.overrides.task): the command's, less Hydra's
    own (hydra.*, hydra/launcher=...) and the flags."""
    return [a for a in args if not a.startswith("-") and not a.lstrip("+~").startswith(("hydra.", "hydra/"))]


def previous_overrides(sweep_dir: Path) -> Optional[list[str]]:
    """The task overrides the sweep in `sweep_dir` was started with (its multirun.yaml), or None."""
    import yaml

    try:
        saved = yaml.safe_load((sweep_dir / "multirun.yaml").read_text())
        return [str(o) for o in saved["hydra"]["overrides"]["task"]]
    except (OSError, yaml.YAMLError, KeyError, TypeError):
        return None


def job_summary(job_dir: Path) -> dict:
    """A job's summary.json ({} when it has none, or not a readable one)."""
    try:
        summary = json.loads((job_dir / "summary.json").read_text())
    except (OSError, ValueError):
        return {}
    return summary if isinstance(summary, dict) else {}


def finished(job_dir: Path) -> Optional[dict]:
    """The summary.json of a job that has a result (completed, or diverged), else None."""
    summary = job_summary(job_dir)
    return summary if summary.get("status") in FINISHED else None


def resumable(job_dir: Path) -> bool:
    """A job stopped inside training (a signal, preemption, a kill): no result yet, but a last.pt."""
    return finished(job_dir) is None and (job_dir / "checkpoints" / "last.pt").is_file()


def set_aside_unfinished(sweep_dir: Path, now) -> tuple[int, int, list[Path]]:
    """Before a sweep continues: (jobs with a result, jobs that resume from their last.pt in place, the
    other unfinished job folders, moved to <sweep>/.incomplete/<time>/ so their jobs start afresh in an
    empty folder while nothing is lost)."""
    done, resumed, moved = 0, 0, []
    target = sweep_dir / SET_ASIDE / now.strftime("%Y-%m-%d_%H-%M-%S")
    for folder in job_folders(sweep_dir):
        if finished(folder) is not None:
            done += 1
            continue
        if resumable(folder):
            resumed += 1
            continue
        destination = target / folder.relative_to(sweep_dir)
        destination.parent.mkdir(parents=True, exist_ok=True)
        folder.rename(destination)
        moved.append(destination)
    return done, resumed, moved


def stop_sweep(sweep_dir: Path, why: str) -> None:
    """--fail-fast: the jobs that start after this one do not run (they find the file)."""
    (sweep_dir / STOP_FILE).write_text(why + "\n")


def record_skipped(run_dir: Path, why: str, summary: bool = True) -> None:
    """A job that --fail-fast kept from running: status skipped (a continued sweep runs it)."""
    log.info("skipped: %s", why)
    if summary:
        write_resultless_summary(run_dir, "skipped", f"not run: {why}")


def skipped(job_dir: Path) -> bool:
    return job_summary(job_dir).get("status") == "skipped"
