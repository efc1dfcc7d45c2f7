"""Sweeps (`trainlab train -m`): grids with range(...) and glob(...), optuna searches, parallel and
submitit launchers, per-job thread limits, and a failing job that does not lose the others."""

from __future__ import annotations

import csv
import json
import math
import re
from datetime import datetime
from pathlib import Path

import pytest
import yaml
from omegaconf import OmegaConf

from conftest import run_trainlab
from trainlab import sweeps
from trainlab.commands import compose_checked, config_dir, job_key

# A job of a few seconds: the synthetic set, one epoch of a tiny CNN.
TINY = ["dataset=synthetic", "trainer.epochs=1", "model.channels=[8,16]", "dataset.num_train=400",
        "trainer.log_every=5"]
STAMP = re.compile(r"^\[(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3})\]")


def jobs(root: Path) -> list[Path]:
    (sweep,) = (root / "outputs" / "multirun").glob("*/*")
    return sweeps.job_folders(sweep)


def summary(folder: Path) -> dict:
    return json.loads((folder / "summary.json").read_text())


def log_span(folder: Path) -> tuple[datetime, datetime]:
    """The first and last time stamps of a job's train.log."""
    stamps = [datetime.strptime(m.group(1), "%Y-%m-%d %H:%M:%S,%f")
              for m in map(STAMP.match, (folder / "train.log").read_text().splitlines()) if m]
    return stamps[0], stamps[-1]


def returned(folder: Path) -> float:
    """The value the job's task returned to the sweeper, as its train.log notes it."""
    (value,) = re.findall(r"returned to the sweeper: (\S+)", (folder / "train.log").read_text())
    return float(value)


def overrides(folder: Path) -> list[str]:
    return yaml.safe_load((folder / ".hydra" / "overrides.yaml").read_text())


# -- what the pre-check expands (in process) ------------------------------------------------------

def test_range_expands_as_hydras_grid_does():
    planned = sweeps.plan("train", ["-m", "seed=range(3)", "optimizer=sgd,adam"], config_dir(), None)
    assert planned.exact
    assert planned.runs == [[f"seed={s}", f"optimizer={o}"] for s in range(3) for o in ("sgd", "adam")]


def test_glob_over_experiments_expands_to_every_experiment_and_each_job_is_checked():
    shipped = sorted(p.stem for p in (config_dir() / "experiment").glob("*.yaml"))
    planned = sweeps.plan("train", ["-m", "experiment=glob(*)", "dataset=synthetic"], config_dir(), None)
    assert planned.exact and [run[0] for run in planned.runs] == [f"experiment={name}" for name in shipped]
    only = sweeps.plan("train", ["-m", "experiment=glob(*,exclude=finetune_*)"], config_dir(), None)
    assert [run[0] for run in only.runs] == [f"experiment={n}" for n in shipped if not n.startswith("finetune_")]

    import trainlab.commands.train as train

    checked = dict(zip(shipped, compose_checked(train, "train", planned.runs, None)))  # exits 2 on a bad job
    assert checked["adam_default"].schedule._target_ == "trainlab.optim.constant_schedule"
    assert checked["sgdr"].optimizer._target_ == "torch.optim.SGD" and checked["sgdr"].optimizer.momentum > 0
    assert checked["resnet_step"].model != checked["adam_default"].model, "each job composed its own experiment"


def test_a_users_experiment_is_in_the_glob(tmp_path):
    (tmp_path / "configs" / "experiment").mkdir(parents=True)
    (tmp_path / "configs" / "experiment" / "zz_mine.yaml").write_text("# @package _global_\nseed: 7\n")
    planned = sweeps.plan("train", ["-m", "experiment=glob(zz_*)"], config_dir(), tmp_path / "configs")
    assert planned.runs == [["experiment=zz_mine"]]


def test_an_optuna_search_has_its_corners_checked_not_its_trials():
    planned = sweeps.plan("train", ["-m", "hparams_search=lr_wd_random"], config_dir(), None)
    assert not planned.exact, "the sweeper picks the trials: jobs are checked again when they start"
    swept = [{o.split("=")[0]: float(o.split("=")[1]) for o in run if o.startswith("optimizer.")} for run in planned.runs]
    assert {v for s in swept for v in s.values()} == {1e-4, 1e-1}
    assert {"optimizer.lr": 0.1, "optimizer.weight_decay": 1e-4} in swept
    assert {"optimizer.lr": 1e-4, "optimizer.weight_decay": 0.1} in swept
    assert planned.labels[0] == "search space at optimizer.lr=0.0001 optimizer.weight_decay=0.0001"


def test_the_search_configs_compose_with_the_direction_of_trainer_mode():
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(version_base="1.3", config_dir=str(config_dir())):
        for search, sampler in (("lr_wd_random", "RandomSampler"), ("lr_wd_tpe", "TPESampler")):
            for monitor, mode, direction in (("val/acc", "max", "maximize"), ("val/loss", "min", "minimize")):
                cfg = compose("train", [f"hparams_search={search}", f"trainer.monitor={monitor}",
                                        f"trainer.mode={mode}"], return_hydra_config=True)
                sweeper = cfg.hydra.sweeper
                assert sweeper._target_.endswith("OptunaSweeper") and sweeper.sampler._target_.endswith(sampler)
                assert sweeper.direction == direction
                assert dict(sweeper.params) == {"optimizer.lr": "tag(log, interval(1e-4, 1e-1))",
                                                "optimizer.weight_decay": "tag(log, interval(1e-4, 1e-1))"}


def test_job_key_ignores_hydras_own_overrides():
    # the job sees hydra/launcher=... and hydra.launcher.n_jobs=... in overrides.hydra, not overrides.task
    assert job_key(["hydra/launcher=joblib", "hydra.launcher.n_jobs=2", "seed=1"]) == ("seed=1",)


# -- what a job returns; its share of the machine (in process) -------------------------------------

def test_the_objective_is_the_best_value_and_failures_are_values_optuna_handles():
    import optuna

    assert sweeps.objective({"status": "completed", "best": {"value": 0.75}}, "max") == 0.75
    assert sweeps.objective({"status": "diverged", "best": {"value": 0.3}}, "max") == -math.inf
    assert sweeps.objective({"status": "diverged"}, "min") == math.inf
    assert math.isnan(sweeps.objective({"status": "failed", "best": {"value": None}}, "max"))
    assert math.isnan(sweeps.objective(None, "max"))

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(direction="maximize")
    for value in (0.5, -math.inf):  # a diverged trial is a complete, worst one
        study.tell(study.ask(), values=[value])
    trial = study.ask()
    with pytest.raises(ValueError):  # NaN: optuna refuses the value; the sweeper then marks the trial failed
        study.tell(trial, values=[math.nan])
    study.tell(trial, state=optuna.trial.TrialState.FAIL)
    assert [t.state.name for t in study.trials] == ["COMPLETE", "COMPLETE", "FAIL"] and study.best_value == 0.5


def test_threads_are_a_share_of_the_cores(monkeypatch):
    monkeypatch.setattr(sweeps, "cores", lambda: 8)
    joblib = OmegaConf.create({"_target_": "hydra_plugins.hydra_joblib_launcher.joblib_launcher.JoblibLauncher",
                               "n_jobs": 2})
    assert sweeps.threads("auto", joblib) == 4
    assert sweeps.threads("auto", OmegaConf.merge(joblib, {"n_jobs": -1})) == 1
    assert sweeps.threads("auto", OmegaConf.merge(joblib, {"n_jobs": -3})) == 1  # 6 jobs on 8 cores
    assert sweeps.threads("auto", OmegaConf.merge(joblib, {"n_jobs": 1})) is None
    assert sweeps.threads(3, joblib) == 3
    submitit = OmegaConf.create({"_target_": "hydra_plugins.hydra_submitit_launcher.submitit_launcher.LocalLauncher",
                                 "cpus_per_task": None})
    assert sweeps.threads("auto", submitit) is None
    assert sweeps.threads("auto", OmegaConf.merge(submitit, {"cpus_per_task": 2})) == 2
    basic = OmegaConf.create({"_target_": "hydra._internal.core_plugins.basic_launcher.BasicLauncher"})
    assert sweeps.threads("auto", basic) is None and sweeps.threads("auto", None) is None
    assert sweeps.job_device("cpu", joblib, 1) is None and sweeps.job_device("auto", basic, 1) is None


@pytest.mark.parametrize("value", [0, -2, "many", 1.5, True])
def test_trainer_threads_must_be_auto_or_a_whole_number(value):
    from hydra import compose, initialize_config_dir

    from trainlab.config import validate
    from trainlab.errors import ConfigError

    with initialize_config_dir(version_base="1.3", config_dir=str(config_dir())):
        cfg = compose("train", ["dataset=synthetic"])
    cfg.trainer.threads = value
    with pytest.raises(ConfigError, match=r"trainer\.threads="):
        validate(cfg)
    cfg.trainer.threads = 2
    assert validate(cfg).trainer.threads == 2


# -- sweeps run for real (subprocesses) -----------------------------------------------------------

@pytest.mark.slow
def test_help_lists_the_sweepers_and_launchers(tmp_path):
    result = run_trainlab(["train", "--help"], tmp_path)
    assert result.returncode == 0, result.stderr
    lines = dict(line.split(": ", 1) for line in result.stdout.splitlines() if line.startswith(("hydra/", "hparams")))
    assert set(lines["hydra/sweeper"].split(", ")) >= {"basic", "optuna"}
    assert set(lines["hydra/launcher"].split(", ")) >= {"basic", "joblib", "submitit_local", "submitit_slurm"}
    assert lines["hparams_search"] == "lr_wd_random, lr_wd_tpe"


@pytest.mark.slow
def test_a_grid_over_range_leaves_one_checked_folder_per_job(tmp_path):
    result = run_trainlab(["train", "-m", *TINY, "seed=range(2)"], tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    folders = jobs(tmp_path)
    assert [f.name for f in folders] == ["0", "1"]
    assert [overrides(f)[-1] for f in folders] == ["seed=0", "seed=1"]
    for folder, seed in zip(folders, (0, 1)):
        assert summary(folder)["status"] == "completed"
        assert yaml.safe_load((folder / ".hydra" / "config.yaml").read_text())["seed"] == seed
        assert "config checked before the sweep started" in (folder / "train.log").read_text()


@pytest.mark.slow
def test_a_bad_value_in_a_search_space_is_one_line_before_anything_runs(tmp_path):
    result = run_trainlab(["train", "-m", *TINY, "hparams_search=lr_wd_random", "optimizer.lr=interval(-1, 0.1)"],
                          tmp_path)
    errors = [line for line in result.stderr.splitlines() if line.startswith("trainlab: error:")]
    assert result.returncode == 2 and len(errors) == 1, result.stderr[-2000:]
    assert errors[0].startswith("trainlab: error: search space at optimizer.lr=-1.0 ")
    assert "optimizer.lr=-1.0: must be a number > 0" in errors[0]
    assert not (tmp_path / "outputs").exists()

    single = run_trainlab(["train", *TINY, "hparams_search=lr_wd_random"], tmp_path)
    assert single.returncode == 2 and "hparams_search=lr_wd_random: a search runs many jobs; add -m" in single.stderr


@pytest.mark.slow
def test_an_optuna_random_search_returns_the_metric_and_writes_its_results(tmp_path):
    result = run_trainlab(["train", "-m", *TINY, "trainer.batch_size=32", "hparams_search=lr_wd_random",
                           "hydra.sweeper.n_trials=3"], tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    folders = jobs(tmp_path)
    assert len(folders) == 3
    best_values = []
    for folder in folders:
        run = summary(folder)
        assert run["status"] == "completed" and run["best"]["metric"] == "val/acc"
        assert returned(folder) == pytest.approx(run["best"]["value"]), "the task returns best.value"
        best_values.append(run["best"]["value"])
        lr, wd = (float(o.split("=")[1]) for o in overrides(folder) if o.startswith("optimizer."))
        assert 1e-4 <= lr <= 1e-1 and 1e-4 <= wd <= 1e-1
    results = yaml.safe_load((folders[0].parent / "optimization_results.yaml").read_text())
    assert set(results["best_params"]) == {"optimizer.lr", "optimizer.weight_decay"}
    assert results["best_value"] == pytest.approx(max(best_values)), "the study maximized val/acc"
    # the sweep's answer: every trial in summary.csv, best first, and the metric against each searched key
    sweep = folders[0].parent
    with (sweep / "summary.csv").open() as table:
        rows = list(csv.DictReader(table))
    assert len(rows) == 3 and all(row["status"] == "completed" for row in rows)
    values = [float(row["best"]) for row in rows]
    assert values == sorted(values, reverse=True) and values[0] == pytest.approx(max(best_values))
    for key in ("optimizer.lr", "optimizer.weight_decay"):
        picture = sweep / f"report_{key}.png"
        assert picture.is_file() and picture.read_bytes().startswith(b"\x89PNG"), f"no {picture.name}"
    assert "best val/acc" in result.stdout and "optimizer.weight_decay" in result.stdout, result.stdout[-2000:]


@pytest.mark.slow
def test_joblib_runs_two_jobs_at_once_each_with_its_share_of_threads(tmp_path):
    result = run_trainlab(["train", "-m", *TINY, "trainer.batch_size=32",
                           "hydra/launcher=joblib", "hydra.launcher.n_jobs=2", "seed=0,1"], tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    folders = jobs(tmp_path)
    assert [summary(f)["status"] for f in folders] == ["completed", "completed"]
    (start_a, end_a), (start_b, end_b) = map(log_span, folders)
    assert max(start_a, start_b) < min(end_a, end_b), "both jobs were alive at the same time"
    threads = max(1, sweeps.cores() // 2)
    for folder in folders:
        log = (folder / "train.log").read_text()
        assert "config checked before the sweep started" in log, "the pre-checked config reached the worker"
        assert f"torch threads: {threads}" in log


@pytest.mark.slow
def test_submitit_local_runs_a_two_job_sweep(tmp_path):
    result = run_trainlab(["train", "-m", *TINY, "trainer.threads=1", "hydra/launcher=submitit_local",
                           "optimizer=sgd,adam"], tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    folders = jobs(tmp_path)
    assert [summary(f)["status"] for f in folders] == ["completed", "completed"]
    assert [summary(f)["choices"]["optimizer"] for f in folders] == ["sgd", "adam"]
    assert (folders[0].parent / ".submitit").is_dir(), "the jobs ran through submitit"
    assert all("torch threads: 1" in (f / "train.log").read_text() for f in folders)


@pytest.mark.slow
def test_a_failing_job_is_recorded_and_the_others_still_run(tmp_path):
    """An image folder without train/ passes the checks (the folder exists) and fails when it is read."""
    (tmp_path / "images").mkdir()
    result = run_trainlab(["train", "-m", "model.channels=[8,16]", "dataset.train_size=400", "trainer.epochs=1",
                           "dataset.root=images", "dataset=imagefolder,synthetic"], tmp_path)
    assert result.returncode == 1, result.stderr[-2000:]
    failed, completed = jobs(tmp_path)
    assert summary(completed)["status"] == "completed"
    record = summary(failed)
    assert record["status"] == "failed" and "images: has no train/ folder" in record["error"]
    assert (failed / "error.txt").read_text().startswith("images: has no train/ folder")
    assert not (completed / "error.txt").exists()
    assert f"1 of 2 jobs failed ({failed.name} in " in result.stderr.splitlines()[-1]
    assert "images: has no train/ folder" in (failed / "train.log").read_text()


@pytest.mark.slow
def test_a_dataset_missing_for_one_job_refuses_the_sweep_before_it_starts(tmp_path):
    result = run_trainlab(["train", "-m", "model.channels=[8,16]", "trainer.epochs=1", "dataset.root=nowhere",
                           "dataset.download=false", "dataset=mnist,synthetic"], tmp_path)
    assert result.returncode == 2 and "dataset.download=False dataset=mnist: MNIST not found" in result.stderr
    assert not (tmp_path / "outputs").exists()


@pytest.mark.slow
def test_an_exception_in_training_fails_its_job_only_also_in_joblibs_workers(tmp_path, monkeypatch):
    (tmp_path / "my_boom.py").write_text(
        "from trainlab.callbacks import Callback\n\n"
        "class Boom(Callback):\n"
        "    def __init__(self, fail=False):\n"
        "        self.fail = fail\n"
        "    def on_epoch_end(self, trainer, end):\n"
        "        if self.fail:\n"
        "            raise RuntimeError('injected failure')\n")
    (tmp_path / "configs" / "callbacks").mkdir(parents=True)
    (tmp_path / "configs" / "callbacks" / "boom.yaml").write_text("boom:\n  _target_: my_boom.Boom\n  fail: false\n")
    monkeypatch.setenv("PYTHONPATH", str(tmp_path))
    result = run_trainlab(["train", "-m", *TINY, "callbacks=[default,boom]", "callbacks.boom.fail=true,false",
                           "hydra/launcher=joblib", "hydra.launcher.n_jobs=2"], tmp_path)
    assert result.returncode == 1, result.stderr[-2000:]
    failed, completed = jobs(tmp_path)
    assert summary(completed)["status"] == "completed" and not (completed / "error.txt").exists()
    assert summary(failed)["status"] == "failed" and summary(failed)["error"] == "RuntimeError: injected failure"
    error = (failed / "error.txt").read_text()
    assert error.startswith("RuntimeError: injected failure\n") and "Traceback" in error
    assert math.isnan(returned(failed)) and returned(completed) == pytest.approx(summary(completed)["best"]["value"])
    assert "trainlab: error: 1 of 2 jobs failed (0 in " in result.stderr


def statuses(sweep: Path) -> list[str]:
    return [json.loads((sweep / str(i) / "summary.json").read_text())["status"] for i in range(4)]


def files(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.mark.slow
def test_fail_fast_stops_a_sweep_and_the_same_command_continues_it_skipping_finished_jobs(tmp_path):
    """Job 0 and 1 fail while running (an image folder without train/); 2 and 3 train (synthetic)."""
    (tmp_path / "images").mkdir()
    grid = ["train", "-m", "dataset=imagefolder,synthetic", "seed=0,1", "dataset.root=images", "trainer.epochs=1",
            "model.channels=[16,32]", "hydra.sweep.dir=sweep"]
    sweep = tmp_path / "sweep"

    stopped = run_trainlab([*grid[:2], "--fail-fast", *grid[2:]], tmp_path)
    assert stopped.returncode == 1
    assert "--fail-fast stopped the sweep (job 0 failed: images: has no train/ folder" in stopped.stderr
    assert "3 jobs after it did not run; the same command continues the sweep" in stopped.stderr
    assert statuses(sweep) == ["failed", "skipped", "skipped", "skipped"]
    assert not (sweep / sweeps.STOP_FILE).exists()

    continued = run_trainlab(grid, tmp_path)
    assert continued.returncode == 1  # jobs 0 and 1 fail again; the sweep goes on without --fail-fast
    assert "continuing the sweep in sweep: 0 finished jobs are skipped, 4 unfinished ones start again" in continued.stderr
    assert statuses(sweep) == ["failed", "failed", "completed", "completed"]
    (kept,) = (sweep / sweeps.SET_ASIDE).iterdir()  # the earlier unfinished folders, moved, not deleted
    assert [json.loads((kept / str(i) / "summary.json").read_text())["status"] for i in range(4)] == \
        ["failed", "skipped", "skipped", "skipped"]
    assert len(sweeps.job_folders(sweep)) == 4

    finished = {i: files(sweep / str(i)) for i in (2, 3)}
    again = run_trainlab(grid, tmp_path)
    assert "2 finished jobs are skipped, 2 unfinished ones start again" in again.stderr
    assert {i: files(sweep / str(i)) for i in (2, 3)} == finished  # not run again: byte for byte the same

    other = run_trainlab([*grid, "optimizer.lr=0.1"], tmp_path)
    assert other.returncode == 2 and "hydra.sweep.dir=sweep: that folder already holds a sweep of other " \
        "overrides; nothing in it was changed" in other.stderr
    alone = run_trainlab(["train", "--fail-fast", "dataset=synthetic"], tmp_path)
    assert alone.returncode == 2 and "--fail-fast stops a sweep at its first failed job; add -m" in alone.stderr


@pytest.mark.slow
def test_a_sweep_stopped_by_sigterm_continues_with_the_interrupted_job_resumed_in_place(tmp_path):
    import os
    import signal
    import subprocess
    import time

    import torch

    from conftest import trainlab_executable

    config = ["dataset=synthetic", "model.channels=[16,32]", "trainer.epochs=5", "trainer.threads=1",
              "trainer.log_every=5"]
    grid = ["train", "-m", *config, "seed=0,1,2", "hydra.sweep.dir=sweep"]
    env = {k: v for k, v in os.environ.items() if not k.startswith("HYDRA_")}
    sweep = subprocess.Popen([trainlab_executable(), *grid], cwd=tmp_path, env=env, stdout=subprocess.DEVNULL,
                             stderr=subprocess.PIPE, text=True)
    last = tmp_path / "sweep" / "1" / "checkpoints" / "last.pt"
    deadline = time.monotonic() + 300
    while not last.exists() and sweep.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    sweep.send_signal(signal.SIGTERM)  # what a scheduler sends at preemption: job 1 is inside its training
    _, err = sweep.communicate(timeout=300)
    assert sweep.returncode == 143, err[-2000:]
    assert statuses_of(tmp_path / "sweep") == ["completed", "interrupted"]
    finished = files(tmp_path / "sweep" / "0")

    continued = run_trainlab(grid, tmp_path)
    assert continued.returncode == 0, continued.stderr[-2000:]
    assert "1 finished jobs are skipped, 1 interrupted ones resume from their last.pt" in continued.stderr
    assert statuses_of(tmp_path / "sweep") == ["completed", "completed", "completed"]
    assert files(tmp_path / "sweep" / "0") == finished
    summary = json.loads((tmp_path / "sweep" / "1" / "summary.json").read_text())
    assert summary["resumed_from"].endswith("sweep/1/checkpoints/last.pt")

    straight = run_trainlab(["train", *config, "seed=1", "hydra.run.dir=straight"], tmp_path)
    assert straight.returncode == 0, straight.stderr[-2000:]
    ours = torch.load(tmp_path / "sweep" / "1" / "checkpoints" / "last.pt", weights_only=True)["model"]
    reference = torch.load(tmp_path / "straight" / "checkpoints" / "last.pt", weights_only=True)["model"]
    assert all(torch.equal(ours[k], reference[k]) for k in reference), "resumed in the sweep = never stopped"


def statuses_of(sweep: Path) -> list[str]:
    return [json.loads((folder / "summary.json").read_text())["status"] for folder in sweeps.job_folders(sweep)]
