"""Running a command: compose (Hydra) -> check everything -> claim the run folder -> run.

A command is one module here with `CONFIG` (its primary config in configs/), `run(cfg, run_dir)` and,
optionally, `check(cfg, context)` for checks of its own. For a single run the config is composed with
Hydra's compose API and checked *before* Hydra makes the run folder, so a bad config leaves nothing
behind; then Hydra runs the job (run folder, .hydra/, train.log) and the command gets the checked
config. In a sweep (`-m`) every job of a grid is checked before the first starts and gets its checked
config (also in joblib's or submitit's worker processes: the task pickles with it); an optuna search
has its space's corners checked first and each trial checked when it starts (trainlab/sweeps.py).
A job of a sweep that fails is recorded in its own folder and the sweep goes on; the sweep then exits 1.
Nothing here imports torch: a command's own module does, when it runs.
"""

from __future__ import annotations

import importlib
import re
import sys
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Callable, Optional

# Hydra flags that only show information: no run folder is made for them.
INFO_FLAGS = {"--help", "-h", "--hydra-help", "--cfg", "-c", "--info", "-i", "--version",
              "--shell-completion", "-sc", "--resolve"}
RUN_MARKS = ("summary.json", "checkpoints", "tensorboard")  # what makes a folder hold a run


def config_dir() -> Path:
    """The shipped configs: inside the installed package (wheel), else the repository's top level."""
    package = Path(__file__).resolve().parents[1]
    for candidate in (package / "configs", package.parent / "configs"):
        if (candidate / "train.yaml").is_file():
            return candidate
    raise SystemExit("trainlab: error: the configs folder is missing from the installation; reinstall trainlab")


def claim_run_dir(root: Path, now: datetime) -> Path:
    """A new folder root/<date>/<time>, made here so two runs started in the same second never share one."""
    base = root / now.strftime("%Y-%m-%d") / now.strftime("%H-%M-%S")
    base.parent.mkdir(parents=True, exist_ok=True)
    for attempt in range(1000):
        candidate = base if attempt == 0 else base.with_name(f"{base.name}-{attempt}")
        try:
            candidate.mkdir()  # atomic: exactly one process gets each name
            return candidate
        except FileExistsError:
            continue
    raise SystemExit(f"trainlab: error: could not make a new run folder under {base.parent}")


def check_output_folder(key: str, folder: Path, shown: str) -> None:
    """Before anything is written: the folder a run (or sweep) writes must be a folder that can be made and
    written (as root a permission never stops a write, but a read-only file system or a file in the way do)."""
    import os

    if folder.exists() and not folder.is_dir():
        fail(f"{key}={shown}: a file is there, not a folder; nothing was changed. Choose another {key}")
    existing = folder
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir():
        fail(f"{key}={shown}: {existing} is a file, so the folder cannot be made there; choose another {key}")
    if not os.access(existing, os.W_OK | os.X_OK):
        fail(f"{key}={shown}: {existing} is not writable (read-only or not yours); choose another {key}")


def holds_run(folder: Path) -> bool:
    return any((folder / mark).exists() for mark in RUN_MARKS)


def holds_sweep(folder: Path) -> bool:
    return (folder / "multirun.yaml").exists() or (folder.is_dir() and any(
        child.is_dir() and holds_run(child) for child in folder.iterdir()))


def override_value(args: list[str], key: str) -> Optional[str]:
    for arg in args:
        name, sep, value = arg.partition("=")
        if sep and name.lstrip("+~") == key:
            return value
    return None


def user_config_dir(args: list[str], cwd: Path) -> Optional[Path]:
    """The user's ./configs, added to Hydra's search path unless --config-dir names another."""
    user_configs = cwd / "configs"
    if any(a in ("--config-dir", "-cd") or a.startswith("--config-dir=") for a in args):
        return None
    if user_configs.is_dir() and user_configs.resolve() != config_dir().resolve():
        return user_configs
    return None


def fail(message: str) -> None:
    print(f"trainlab: error: {message}", file=sys.stderr)
    sys.exit(2)


@dataclass
class Context:
    """What a command's check may use beyond the config: the group choices and a composer."""

    command: str
    choices: dict[str, Any] = field(default_factory=dict)
    compose: Optional[Callable[[list[str]], Any]] = None  # overrides -> a composed config (no hydra node)
    overrides: Optional[list[str]] = None  # what the command line gave (eval/ensemble tell them from the checkpoint's)

    def defaults(self) -> Optional[dict]:
        """The config these choices compose to without any key override, resolved and schema-checked
        (None when they do not compose alone: then nothing counts as a default)."""
        from hydra.errors import HydraException
        from omegaconf import OmegaConf

        from trainlab.config import validate
        from trainlab.errors import ConfigError

        picks = [f"{group}={option}" for group, option in self.choices.items()
                 if option is not None and not group.startswith("hydra") and "/" not in group and "@" not in group]
        try:
            return OmegaConf.to_container(validate(self.compose(picks)), resolve=True)
        except (HydraException, ConfigError):
            return None


def check_all(module, cfg, context: Context):
    """Every check of a command's config: the schema, the dry builds, the command's own; once per command."""
    from trainlab.config import validate

    checked = validate(cfg)
    if hasattr(module, "check"):  # the command's own keys first: most fail without importing torch
        module.check(checked, context)
    from trainlab.build import check  # torch is imported here, after the cheap checks

    check(checked)
    return checked


def composition_message(error: Exception, overrides: list[str],
                        known: Optional[Callable[[str], list[str]]] = None) -> str:
    """Hydra's composition error as one line; a key that moved says where it went; an unknown key gets the
    closest of the `known(key)` keys (the config composed without it: its keys and its group names)."""
    import difflib

    from trainlab.config import MOVED

    for arg in overrides:
        key = arg.partition("=")[0].lstrip("+~")
        for old, new in MOVED.items():
            if key == old or key.startswith(old + "."):
                return f"{key}: moved to {new}"
    unknown = re.match(r"Could not override '([^']+)'", str(error))
    if unknown:
        key = unknown.group(1)
        given = next((a for a in overrides if a.partition("=")[0].lstrip("+~") == key), key)
        keys = set(known(key)) if known is not None else set()
        parent, _, leaf = key.rpartition(".")
        siblings = sorted(k.rpartition(".")[2] for k in keys if k.rpartition(".")[0] == parent)
        if siblings:  # a misspelt key among its siblings (optimizer.lrr -> optimizer.lr)
            close = [f"{parent}.{k}" if parent else k for k in difflib.get_close_matches(leaf, siblings, n=3, cutoff=0.6)]
        else:  # a misspelt parent (optimiser.lr -> optimizer.lr)
            close = difflib.get_close_matches(key, sorted(k for k in keys if k.count(".") == key.count(".")),
                                              n=3, cutoff=0.7)
        value = given.partition("=")[2]
        hint = f"did you mean {' or '.join(f'{c}={value}' if value else c for c in close)}? " if close else ""
        return (f"{key}: no such key in the composed config; {hint or 'check its spelling '}"
                f"(to add a new key: +{given.lstrip('+~')})")
    lines = [line.strip() for line in str(error).splitlines() if line.strip() and not line.startswith((" ", "\t"))]
    return "; ".join(lines) or type(error).__name__


def config_keys(cfg) -> list[str]:
    """Every dotted key of a composed config (lists are leaves) and its group names, less Hydra's own."""
    from omegaconf import DictConfig, OmegaConf

    keys = [group for group in cfg.hydra.runtime.choices if not group.startswith("hydra")]

    def walk(node, prefix: str) -> None:
        for name in node.keys():
            key = f"{prefix}{name}"
            keys.append(key)
            child = node._get_node(name)
            if isinstance(child, DictConfig) and not OmegaConf.is_missing(node, name):
                walk(child, key + ".")

    walk(cfg, "")
    return [k for k in keys if not k.startswith("hydra")]


def compose_checked(module, name: str, runs: list[list[str]], user_dir: Optional[Path],
                    labels: Optional[list[str]] = None, modes: Optional[list] = None) -> Optional[list]:
    """The configs Hydra will give the jobs (one per override list in `runs`), composed with its compose
    API and checked; None for Hydra to report (a composition error Hydra prints itself, with what it knows).
    A failure names the job's overrides when there are several jobs (or the run's label, if given).
    `modes`, if given, gets each job's hydra.mode (for hydra_main)."""
    from hydra import compose, initialize_config_dir
    from hydra.errors import HydraException, MissingConfigException
    from omegaconf import open_dict

    from trainlab.errors import TrainlabError

    search = [f"hydra.searchpath=[file://{user_dir.resolve()}]"] if user_dir is not None else []
    checked = []
    with initialize_config_dir(version_base="1.3", config_dir=str(config_dir()), job_name=name):
        for i, overrides in enumerate(runs):
            where = (f"{labels[i]}: " if labels else f"job {' '.join(overrides)}: " if len(runs) > 1 else "")
            try:
                composed = compose(module.CONFIG, overrides=search + overrides, return_hydra_config=True)
            except MissingConfigException as error:  # e.g. optimizer=adamm: name the options there are
                options = getattr(error, "options", None)
                group = Path(str(getattr(error, "missing_cfg_file", "") or "")).parent.as_posix()
                given = override_value(overrides, group) if group not in ("", ".") else None
                if options and given is not None:
                    fail(f"{where}{group}={given}: no such option; choose one of {', '.join(sorted(options))} "
                         f"(or add configs/{group}/{given}.yaml)")
                return None  # hydra.main composes again and prints its own message
            except HydraException as error:
                def known(key: str) -> list[str]:
                    others = [o for o in overrides if o.partition("=")[0].lstrip("+~") != key]
                    try:
                        cfg = compose(module.CONFIG, overrides=search + others, return_hydra_config=True)
                    except HydraException:
                        return []
                    return config_keys(cfg)

                fail(where + composition_message(error, overrides, known))

            def plain(extra: list[str]):
                return compose(module.CONFIG, overrides=search + extra)

            choices = dict(composed.hydra.runtime.choices)
            if modes is not None:
                modes.append(composed.hydra.mode)
            with open_dict(composed):
                del composed["hydra"]
            try:
                checked.append(check_all(module, composed, Context(name, choices, plain, list(overrides))))
            except TrainlabError as error:
                fail(where + str(error))
    return checked


def job_key(overrides) -> tuple:
    """A job's identity among the checked runs of a sweep: its overrides, less Hydra's own."""
    return tuple(o for o in overrides
                 if not o.lstrip("+~").startswith(("hydra.", "hydra/")) and o not in ("-m", "--multirun"))


UNKNOWN = object()


def hydra_main(module, name: str, argv: list[str], task: Callable, mode: Any = UNKNOWN) -> None:
    """Hydra's main over `task`. `mode`: hydra.mode as the pre-check's composition found it (None: not set),
    which Hydra would otherwise compose the whole config once more just to read (~0.13 s of a run's start;
    Hydra has no public way to say it, hence the patch of Hydra.get_mode, pinned by hydra-core<1.4)."""
    import hydra

    sys.argv = [f"trainlab {name}"] + argv
    main = hydra.main(version_base="1.3", config_path=str(config_dir()), config_name=module.CONFIG)(task)
    from hydra._internal.hydra import Hydra

    if mode is UNKNOWN or not hasattr(Hydra, "get_mode"):
        return main()
    composing = Hydra.get_mode
    Hydra.get_mode = lambda self, config_name, overrides: mode
    try:
        main()
    finally:
        Hydra.get_mode = composing


def job(module, name: str, checked: Optional[dict] = None, fail_fast: bool = False) -> Callable:
    """The Hydra task: the job's config as checked before Hydra started (`checked`: by job_key, or "*" for
    the one job of a single run), else checked here; fit to the machine (trainer.threads, the job's GPU);
    run; errors as one line. For train it returns the objective a sweeper optimizes (sweeps.objective:
    summary.json best.value; -inf/+inf for a diverged run; NaN for a failed one), None for other commands.
    In a sweep a failing job is recorded in its folder (error.txt) and returns instead of ending the sweep;
    with `fail_fast` it leaves sweeps.STOP_FILE in the sweep folder and the jobs after it do not run (a
    file, so joblib's and submitit's worker processes see it too). A job that has a result already (a
    continued sweep) returns that result without running."""

    def task(cfg) -> Optional[float]:
        import traceback

        from hydra import compose
        from hydra.core.hydra_config import HydraConfig
        from hydra.types import RunMode

        from trainlab import sweeps
        from trainlab.errors import TrainingDiverged, TrainlabError, debugging, one_line

        hydra_cfg = HydraConfig.get()
        run_dir = Path(hydra_cfg.runtime.output_dir)
        sweeping = hydra_cfg.mode == RunMode.MULTIRUN
        where = f"job {hydra_cfg.job.num} ({run_dir}): " if sweeping else ""
        config = None
        try:
            earlier = sweeps.finished(run_dir) if sweeping else None
            if earlier is not None:  # a continued sweep: this job has its result (its files stay as they are)
                mode = (earlier.get("best") or {}).get("mode") or "max"
                return sweeps.objective(earlier, mode) if name == "train" else None
            checked_here = checked or {}
            config = checked_here.get("*", checked_here.get(job_key(hydra_cfg.overrides.task)))
            if config is None:
                context = Context(name, dict(hydra_cfg.runtime.choices),
                                  lambda extra: compose(module.CONFIG, overrides=extra),
                                  list(hydra_cfg.overrides.task))
                config = check_all(module, cfg, context)
                sweeps.log.info("config checked in the job")
            else:
                sweeps.log.info("config checked before the %s started", "sweep" if sweeping else "run")
            if sweeping:
                stop = Path(hydra_cfg.sweep.dir) / sweeps.STOP_FILE
                if fail_fast and stop.exists():
                    sweeps.record_skipped(run_dir, stop.read_text().strip(), summary=name == "train")
                    return sweeps.returned(None) if name == "train" else None
            if sweeping and name == "train" and sweeps.resumable(run_dir):  # a continued sweep's interrupted job
                from omegaconf import open_dict

                from trainlab import resume

                with open_dict(config):
                    config.trainer.resume = str(run_dir)
                resume.check(config)  # the same job's config: it must agree with its last.pt
                sweeps.log.info("resuming the interrupted job from its last.pt")
            config = sweeps.fit_to_machine(config, hydra_cfg)
            result = module.run(config, run_dir)
            if name == "train" and result is None:  # a task > 0 of a submitit job: its rank 0 reports the result
                return None
            return sweeps.returned(result, config.trainer.mode) if name == "train" else None
        except TrainingDiverged as error:
            print(f"trainlab: error: {where}{error}", file=sys.stderr)
            if not sweeping:
                sys.exit(2)
            # in a sweep, a diverging learning rate is a result (summary.json says "diverged"): go on
            return sweeps.returned({"status": "diverged"}, config.trainer.mode) if name == "train" else None
        except TrainlabError as error:
            if not sweeping:
                fail(str(error))
            sweeps.record_failure(run_dir, str(error), summary=name == "train")
            print(f"trainlab: error: {where}{error}", file=sys.stderr)
            if fail_fast:
                sweeps.stop_sweep(Path(hydra_cfg.sweep.dir), f"job {hydra_cfg.job.num} failed: {error}")
            return sweeps.returned(None) if name == "train" else None
        except KeyboardInterrupt:
            if name == "train" and (run_dir / "checkpoints" / "last.pt").is_file():
                print(f"trainlab: interrupted; continue with: trainlab train trainer.resume={run_dir}",
                      file=sys.stderr)
            else:
                print(f"trainlab: interrupted before {run_dir} held a checkpoint: nothing to continue",
                      file=sys.stderr)
            import signal

            sys.exit(143 if getattr(sys.exc_info()[1], "signal", None) == signal.SIGTERM else 130)
        except Exception as error:  # a bug, a full disk, no memory: in a sweep, the other jobs still run
            if not sweeping and debugging():
                raise
            message, status = one_line(error)  # the traceback is kept in error.txt
            try:
                sweeps.record_failure(run_dir, message, traceback.format_exc(), summary=name == "train")
                kept = f" (traceback in {run_dir / sweeps.ERROR_FILE})"
            except OSError:  # e.g. the disk that is full
                kept = ""
            print(f"trainlab: error: {where}{message}{kept}", file=sys.stderr)
            if not sweeping:
                sys.exit(status)
            if fail_fast:
                sweeps.stop_sweep(Path(hydra_cfg.sweep.dir), f"job {hydra_cfg.job.num} failed: {message}")
            return sweeps.returned(None) if name == "train" else None

    return task


def report_sweep(sweep_dir: Path, status: Any = 0) -> None:
    """After a sweep: the answer of the sweep (trainlab report's tables, summary.csv/json and plots), each
    failed job in one line, then exit 1 (or Hydra's own non-zero status)."""
    from trainlab import sweeps

    from trainlab.commands.report import report_sweep as write_report
    from trainlab.reports.runs import NoRunsFound

    try:
        write_report(sweep_dir)
    except NoRunsFound:  # e.g. a sweep of another command
        pass
    except Exception as error:  # the report never fails a finished sweep
        print(f"trainlab: note: no sweep report ({type(error).__name__}: {error})", file=sys.stderr)

    stopped = sweep_dir / sweeps.STOP_FILE
    if stopped.exists():
        skipped = sum(1 for folder in sweeps.job_folders(sweep_dir) if sweeps.skipped(folder))
        print(f"trainlab: error: --fail-fast stopped the sweep ({stopped.read_text().strip()}); {skipped} jobs "
              f"after it did not run; the same command continues the sweep in {sweep_dir}", file=sys.stderr)
        stopped.unlink()
        sys.exit(status if status not in (0, None) else 1)
    failed = sweeps.failures(sweep_dir)
    if failed:
        total = len(sweeps.job_folders(sweep_dir))
        names = ", ".join(folder.name for folder, _ in failed[:10]) + (", ..." if len(failed) > 10 else "")
        print(f"trainlab: error: {len(failed)} of {total} jobs failed ({names} in {sweep_dir}; each one's error "
              f"is in its {sweeps.ERROR_FILE}); the others ran", file=sys.stderr)
    if status not in (0, None):
        sys.exit(status)
    if failed:
        sys.exit(1)


def resumed_folder(name: str, args: list[str], cwd: Path) -> Optional[Path]:
    """The run folder `trainlab train trainer.resume=...` continues in place (checked already), or None."""
    value = override_value(args, "trainer.resume") if name == "train" else None
    if value in (None, "null", ""):
        return None
    from trainlab.resume import run_folder

    path = Path(value).expanduser()
    return run_folder(str(path if path.is_absolute() else cwd / path))


def run_command(name: str, args: list[str], cwd: Optional[Path] = None, now: Optional[datetime] = None) -> None:
    """`trainlab NAME ARGS`: see the module note."""
    module = importlib.import_module(f"trainlab.commands.{name.replace('-', '_')}")
    cwd, now = cwd or Path.cwd(), now or datetime.now()
    user_dir = user_config_dir(args, cwd)
    argv = (["--config-dir", str(user_dir)] if user_dir is not None else []) + list(args)
    if any(a.split("=", 1)[0] in INFO_FLAGS for a in args):
        return hydra_main(module, name, argv, job(module, name))
    started_as_rank = name == "train" and started_by_torchrun()  # one rank of a run
    if started_as_rank:
        args = with_world_devices(args)
        argv = (["--config-dir", str(user_dir)] if user_dir is not None else []) + list(args)
    fail_fast = "--fail-fast" in args
    if fail_fast:  # trainlab's flag, not Hydra's
        args = [a for a in args if a != "--fail-fast"]
        argv = [a for a in argv if a != "--fail-fast"]
        if "-m" not in args and "--multirun" not in args:
            fail("--fail-fast stops a sweep at its first failed job; add -m (trainlab train -m --fail-fast ...)")
    if "-m" in args or "--multirun" in args:
        from trainlab import sweeps

        given = override_value(args, "hydra.sweep.dir")
        continuing = False
        if given is not None:
            check_output_folder("hydra.sweep.dir", cwd / given, given)
            if holds_sweep(cwd / given):
                continuing = sweeps.previous_overrides(cwd / given) == sweeps.task_overrides(args)
                if not continuing or override_value(args, "hparams_search") not in (None, "null"):
                    fail(f"hydra.sweep.dir={given}: that folder already holds a sweep"
                         f"{' (a search: it cannot be continued)' if continuing else ' of other overrides'}; "
                         "nothing in it was changed. Give the same grid to continue it, or choose a new "
                         "hydra.sweep.dir (or leave it out for a fresh outputs/multirun/<date>/<time>)")

        flags = any(a.startswith("-") and a not in ("-m", "--multirun") for a in args)
        planned = sweeps.plan(module.CONFIG, args, config_dir(), user_dir) if not flags else None
        checked = compose_checked(module, name, planned.runs, user_dir, planned.labels) if planned else None
        if continuing:  # checked: now the unfinished jobs' folders are set aside, the finished ones skipped
            done, resumed, moved = sweeps.set_aside_unfinished(cwd / given, now)
            print(f"trainlab: continuing the sweep in {given}: {done} finished jobs are skipped"
                  + (f", {resumed} interrupted ones resume from their last.pt" if resumed else "")
                  + (f", {len(moved)} unfinished ones start again (their folders are kept in "
                     f"{given}/{sweeps.SET_ASIDE}/)" if moved else ""), file=sys.stderr)
        if given is None:
            check_output_folder("hydra.sweep.dir", cwd / "outputs" / "multirun", "outputs/multirun")
            given = claim_run_dir(cwd / 'outputs' / 'multirun', now).as_posix()
            argv.append(f"hydra.sweep.dir={given}")
        by_job = ({job_key(run): cfg for run, cfg in zip(planned.runs, checked)}
                  if checked and planned.exact else None)
        try:
            hydra_main(module, name, argv, job(module, name, by_job, fail_fast))
        except SystemExit as stop:  # Hydra's own error after the jobs ran (e.g. a search with no good trial)
            report_sweep(cwd / given, stop.code)
            raise
        return report_sweep(cwd / given)
    search = override_value(args, "hparams_search")
    if search not in (None, "null"):
        fail(f"hparams_search={search}: a search runs many jobs; add -m (trainlab train -m hparams_search={search})")
    if any(a.startswith("-") for a in args):  # a Hydra flag we do not pre-compose for: Hydra handles it all
        return hydra_main(module, name, argv, job(module, name))
    modes: list = []
    checked = compose_checked(module, name, [list(args)], user_dir, modes=modes)
    if checked is None:  # Hydra reports the composition error itself (before any folder is made)
        return hydra_main(module, name, argv, job(module, name))
    from omegaconf import OmegaConf

    devices = OmegaConf.select(checked[0], "trainer.devices", default=1)
    if name != "train" and devices > 1:
        print(f"trainlab: note: trainer.devices={devices} is for trainlab train; {name} runs in one process",
              file=sys.stderr)
    world = None
    if started_as_rank:  # every rank checked the same config; rank 0 alone makes the run folder
        from trainlab import distributed
        from trainlab.runtime import resolve_device

        world = distributed.from_environment()
        distributed.join(world, resolve_device(checked[0].trainer.device))
        if not world.main:
            return follow_rank_zero(checked[0], world)
    run_dir = None
    try:
        argv, run_dir = single_run_folder(name, args, argv, cwd, now)
    finally:  # the other ranks wait for the folder: tell them, also when rank 0 stops here (None)
        if world is not None:
            world.share(run_dir)
    try:
        hydra_main(module, name, argv, job(module, name, {"*": checked[0]}), mode=modes[0])
    except OSError as error:  # e.g. Hydra writing .hydra/ on a full disk: a write() names no file
        if error.filename is None:
            error.filename = f"into {run_dir}"
        raise
    if world is not None:  # the run ended well on every rank: leave together
        distributed.leave()


def started_by_torchrun() -> bool:
    """Whether torchrun started this process as one rank of several (RANK / WORLD_SIZE; read from the
    environment only: --help and --cfg job import no torch)."""
    import os

    return "RANK" in os.environ and int(os.environ.get("WORLD_SIZE", "1")) > 1


def with_world_devices(args: list[str]) -> list[str]:
    """torchrun decides the number of processes: trainer.devices follows WORLD_SIZE (refused if it says
    otherwise); a sweep (-m) is refused (each of its jobs would be a run of all the ranks)."""
    import os

    size = int(os.environ["WORLD_SIZE"])
    if "-m" in args or "--multirun" in args:
        fail(f"-m under torchrun (WORLD_SIZE={size}): a sweep cannot be one distributed run; run the sweep "
             f"without torchrun and give each job trainer.devices={size}")
    given = override_value(args, "trainer.devices")
    if given is None:
        return list(args) + [f"trainer.devices={size}"]
    if given != str(size):
        fail(f"trainer.devices={given}: torchrun started {size} processes (WORLD_SIZE={size}); leave "
             f"trainer.devices out under torchrun, or make it {size}")
    return list(args)


def follow_rank_zero(cfg, world) -> None:
    """A rank > 0 started by torchrun: train in the run folder rank 0 made (it writes every file); errors as
    one line naming the rank."""
    from trainlab import distributed
    from trainlab.commands import train
    from trainlab.errors import one_line

    run_dir = world.share(None)
    if run_dir is None:
        sys.exit(1)  # rank 0 stopped before the run began, and said why
    try:
        train.train_run(cfg, Path(run_dir), {})
        distributed.leave()
    except KeyboardInterrupt:
        sys.exit(130)
    except Exception as error:  # noqa: BLE001 - one line, as for rank 0
        message, status = one_line(error)
        print(f"trainlab: error: rank {world.rank}: {message}", file=sys.stderr)
        sys.exit(status)


def single_run_folder(name: str, args: list[str], argv: list[str], cwd: Path, now: datetime) -> tuple[list[str], str]:
    """The folder of a single run (checked: never one that holds another run), as hydra.run.dir in argv."""
    argv = list(argv)
    given = override_value(args, "hydra.run.dir")
    continued = resumed_folder(name, args, cwd)
    if given is not None:
        check_output_folder("hydra.run.dir", cwd / given, given)
        if holds_run(Path(given)) and (continued is None or (cwd / given).resolve() != continued):
            fail(f"hydra.run.dir={given}: that folder already holds a run; nothing in it was changed. "
                 f"Continue it with trainer.resume={given}, or choose a new hydra.run.dir")
    elif continued is not None:  # resume in place: the run goes on in its own folder
        argv.append(f"hydra.run.dir={continued.as_posix()}")
    else:
        check_output_folder("hydra.run.dir", cwd / "outputs" / name, f"outputs/{name}")
        argv.append(f"hydra.run.dir={claim_run_dir(cwd / 'outputs' / name, now).as_posix()}")
    if continued is not None and (given is None or (cwd / given).resolve() == continued):
        # Hydra writes config.yaml/overrides.yaml into hydra.output_subdir: the run's own .hydra stays as it was
        argv.append(f"hydra.output_subdir=.hydra/resumed-{now:%Y-%m-%d_%H-%M-%S}")
    return argv, override_value(argv, "hydra.run.dir")
