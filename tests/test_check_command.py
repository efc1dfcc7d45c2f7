"""`trainlab check`: the verdicts, the check.* keys, regularization switched off, and the command end to end."""

from __future__ import annotations

import copy
import itertools
import json
import math
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from conftest import run_folders, run_trainlab
from trainlab.commands import check as check_command
from trainlab.config import validate
from trainlab.errors import ConfigError

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
HEALTHY = ["dataset=synthetic", "model=mlp", "optimizer=adam", "optimizer.lr=0.003", "augmentation=none",
           "trainer.label_smoothing=0"]  # no regularization on (the default experiment has flips, crops, smoothing)


def composed(overrides: list[str]):
    with initialize_config_dir(version_base="1.3", config_dir=str(CONFIGS), job_name="test_check"):
        return validate(compose("check", overrides=overrides))


# ---------------------------------------------------------------- verdicts (no torch needed)


def test_initial_loss_passes_near_log_c_and_fails_far_from_it():
    near = check_command.initial_verdict(2.40, 10, 0.5)
    assert near["passed"] and near["advice"] is None
    assert near["log_classes"] == pytest.approx(math.log(10))
    assert near["difference"] == pytest.approx(2.40 - math.log(10))
    high = check_command.initial_verdict(6.0, 10, 0.5)
    assert not high["passed"] and "head or the initialization is off" in high["advice"]
    low = check_command.initial_verdict(0.5, 10, 0.5)
    assert not low["passed"] and "below log(10)" in low["advice"]
    nan = check_command.initial_verdict(float("nan"), 10, 0.5)
    assert not nan["passed"] and nan["initial_loss"] == "nan" and "not finite" in nan["advice"]
    assert check_command.initial_verdict(math.log(100) + 0.49, 100, 0.5)["passed"]  # nats, whatever C


def test_overfit_verdict():
    common = dict(final_loss=0.05, samples=640, batches=5)
    assert check_command.overfit_verdict(0.995, 40, 0.99, 500, diverged=False, **common)["passed"]
    short = check_command.overfit_verdict(0.60, 500, 0.99, 500, diverged=False, **common)
    assert not short["passed"] and "cannot overfit 640 examples in 500 steps" in short["advice"]
    assert "too small" in short["advice"] and "labels" in short["advice"]
    blown = check_command.overfit_verdict(1.0, 10, 0.99, 500, diverged=True, **{**common, "final_loss": math.inf})
    assert not blown["passed"] and "lr is too high" in blown["advice"] and blown["final_loss"] == "inf"


def test_loss_falls_verdict_pass_flat_rising_and_nan():
    falling = [2.3 - 0.02 * i for i in range(100)]
    good = check_command.falling_verdict(falling, 100, 10, 0.9)
    assert good["passed"] and good["advice"] is None
    assert good["first_mean"] == pytest.approx(sum(falling[:10]) / 10)
    assert good["last_mean"] == pytest.approx(sum(falling[-10:]) / 10)
    assert good["ratio"] == pytest.approx(good["last_mean"] / good["first_mean"])

    flat = check_command.falling_verdict([2.3 - 0.001 * i for i in range(100)], 100, 10, 0.9)
    assert not flat["passed"] and "lr is too low" in flat["advice"] and "initialization" in flat["advice"]

    rising = check_command.falling_verdict([2.3 + 0.05 * i for i in range(100)], 100, 10, 0.9)
    assert not rising["passed"] and "rises" in rising["advice"] and "lr is too high" in rising["advice"]

    nan = check_command.falling_verdict([2.3, 5.0, float("nan")], 100, 10, 0.9)
    assert not nan["passed"] and nan["diverged_at_step"] == 3 and "NaN/Inf at step 3" in nan["advice"]
    assert nan["losses"][-1] == "nan"
    json.dumps(nan, allow_nan=False)  # check.json stays strict JSON

    stopped = check_command.falling_verdict([2.3, 9.0], 100, 10, 0.9, diverged_at=3)
    assert not stopped["passed"] and stopped["diverged_at_step"] == 3 and stopped["ratio"] is None


# ---------------------------------------------------------------- check.* keys


@pytest.mark.parametrize("override, message", [
    ("check.steps=0", "check.steps=0: must be a whole number >= 1"),
    ("check.overfit_batches=2.5", "check.overfit_batches=2.5: must be a whole number >= 1"),
    ("check.overfit_steps=true", "check.overfit_steps=true: must be a whole number >= 1"),
    ("check.overfit_accuracy=1.5", "check.overfit_accuracy=1.5: must be a fraction in (0, 1]"),
    ("check.fall_ratio=0", "check.fall_ratio=0: must be a fraction in (0, 1]"),
    ("check.initial_tolerance=-1", "check.initial_tolerance=-1: must be a number of nats > 0"),
    ("check.window=60", "check.window=60: must be at most half of check.steps (100)"),
    ("check.overfit_steps=3", "check.overfit_steps=3: must be >= check.overfit_batches (5)"),
    ("+check.overfit_step=10", "check.overfit_step=10: no such key; the check keys are initial_tolerance"),
])
def test_bad_check_keys_fail_naming_the_key(override, message):
    with pytest.raises(ConfigError) as error:
        check_command.check(composed([override]), None)
    assert str(error.value).startswith(message)
    assert "\n" not in str(error.value)


def test_shipped_defaults_are_the_modules_and_pass_the_key_check():
    cfg = composed([])
    assert OmegaConf.to_container(cfg.check) == check_command.DEFAULTS
    check_command.check(cfg, None)


# ---------------------------------------------------------------- regularization off


def test_regularization_is_switched_off_and_recorded():
    cfg = composed(["dataset=synthetic", "model=mlp", "augmentation=mixup", "optimizer.weight_decay=0.1",
                    "model.dropout=0.2", "model.dropconnect=0.1", "trainer.label_smoothing=0.1",
                    "trainer.l1=1e-5", "trainer.l2=1e-4"])
    off, switched = check_command.without_regularization(cfg)
    assert off.optimizer.weight_decay == 0 and off.model.dropout == 0 and off.model.dropconnect == 0
    assert dict(off.augmentation.ops) == {} and off.augmentation.get("mix") is None
    assert off.trainer.label_smoothing == 0 and off.trainer.l1 == 0 and off.trainer.l2 == 0
    was = {item["key"]: item["was"] for item in switched}
    assert was["optimizer.weight_decay"] == 0.1 and was["model.dropout"] == 0.2
    assert set(was["augmentation.ops"]) == {"crop", "flip"} and was["augmentation.mix"]["mixup_alpha"] == 0.2
    assert was["trainer.label_smoothing"] == 0.1 and was["trainer.l2"] == 1e-4
    assert "optimizer.weight_decay=0.0" in check_command.as_overrides(switched)
    assert cfg.optimizer.weight_decay == 0.1 and cfg.augmentation.ops, "the given config is left as it was"

    from trainlab.build import check as dry_check
    from trainlab.optim import build_optimizer

    dry_check(off)  # still a valid config
    optimizer = build_optimizer(off.optimizer, torch.nn.Linear(4, 3))
    assert all(group["weight_decay"] == 0 for group in optimizer.param_groups)


def test_nothing_on_is_nothing_switched():
    _, switched = check_command.without_regularization(composed(HEALTHY))
    assert switched == []


def test_an_optimizers_own_default_decay_is_switched_off_too():
    cfg = composed(["optimizer=adamw", "~optimizer.weight_decay"])  # AdamW's class default is 0.01
    assert "weight_decay" not in cfg.optimizer
    off, switched = check_command.without_regularization(cfg)
    assert off.optimizer.weight_decay == 0 and switched[0]["key"] == "optimizer.weight_decay"


def test_model_drop_keys_of_residual_and_torchvision_models():
    off, switched = check_command.without_regularization(
        composed(["model=resnet20", "model.drop_path=0.1", "model.dropout=0.3"]))
    assert off.model.drop_path == 0 and off.model.dropout == 0
    off, _ = check_command.without_regularization(composed(["model=wrn", "model.block_dropout=0.3"]))
    assert off.model.block_dropout == 0
    off, switched = check_command.without_regularization(composed(["model=torchvision"]))
    assert off.model.dropout == 0 and off.model.drop_path == 0  # null = torchvision's own default dropout


def test_report_table_and_advice():
    from rich.console import Console

    checks = {
        "initial_loss": {**check_command.initial_verdict(2.31, 10, 0.5), "batches": 5},
        "overfit": check_command.overfit_verdict(0.2, 500, 0.99, 500, final_loss=2.2, diverged=False,
                                                 samples=640, batches=5),
        "loss_falls": check_command.falling_verdict([2.3] * 3 + [float("inf")], 100, 10, 0.9),
    }
    result = {"passed": False, "checks": checks, "optimizer": {"lr": 0.5}, "train_size": 1800, "device": "cpu",
              "switched_off": [{"key": "augmentation.mix", "was": {"mixup_alpha": 0.2}, "now": None},
                               {"key": "trainer.label_smoothing", "was": 0.1, "now": 0.0}]}
    console = Console(record=True, width=100)
    check_command.print_report(result, Path("run/check.json"), console)
    text = " ".join(console.export_text().split())  # lines as rich wrapped them, joined
    assert text.count("FAIL") == 2 and "initial loss │ pass │" in text
    assert "2.3100 vs log(10) 2.3026" in text and "20.00% of 640 in 500 steps" in text
    assert "NaN/Inf at step 4" in text and "cannot overfit" in text and "lr is too high" in text
    assert "augmentation.mix (was mixup_alpha=0.2), trainer.label_smoothing (was 0.1)" in text
    assert "some checks fail" in text and "wrote run/check.json" in text


# ---------------------------------------------------------------- the checks in process


@pytest.fixture(scope="module")
def built(one_thread):
    from trainlab.build import build_experiment

    cfg = composed(HEALTHY)
    off, _ = check_command.without_regularization(cfg)
    experiment = build_experiment(off)
    train = experiment.data.train
    state = train.generator.get_state()
    batches = list(itertools.islice(iter(train), 5))
    train.generator.set_state(state)
    return experiment, copy.deepcopy(experiment.model), batches, state, check_command.settings(cfg)


def test_checks_are_independent_and_reproducible(built):
    experiment, initial, batches, state, values = built
    before = {k: v.clone() for k, v in initial.state_dict().items()}
    first = check_command.overfit(experiment, initial, batches, values)
    falls = check_command.loss_falls(experiment, initial, values, state)
    second = check_command.overfit(experiment, initial, batches, values)
    assert first == second, "each check starts from the same fresh model and optimizer"
    assert all(torch.equal(before[k], v) for k, v in initial.state_dict().items()), "the initial model is untouched"
    assert first["passed"] and first["steps"] < values["overfit_steps"] / 3, first
    assert falls["passed"] and falls["steps_run"] == values["steps"] and len(falls["losses"]) == values["steps"]
    assert falls == check_command.loss_falls(experiment, initial, values, state)
    loss = check_command.initial_loss(experiment, initial, batches)
    assert abs(loss - math.log(10)) < 0.5


def test_the_batches_loader_cycles_epochs():
    loader = [(i, i) for i in range(3)]
    steps = check_command.Batches(None, loader=loader, count=7)
    assert len(steps) == 7 and [b[0] for b in steps] == [0, 1, 2, 0, 1, 2, 0]
    fixed = check_command.Batches(None, batches=loader[:2])
    assert len(fixed) == 2 and list(fixed) == loader[:2] and list(fixed) == loader[:2]


# ---------------------------------------------------------------- the command, as users run it


@pytest.fixture
def workdir(workdir: Path, monkeypatch) -> Path:
    """The subprocesses on one intra-op thread: tiny models only contend for the 2 shared cores."""
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    return workdir


def check_run(workdir: Path, overrides: list[str], status: int) -> tuple[dict, str]:
    result = run_trainlab(["check", *overrides], workdir, timeout=120)
    assert result.returncode == status, result.stdout[-3000:] + result.stderr[-3000:]
    folders = run_folders(workdir, "check")
    assert len(folders) == 1, folders
    report = json.loads((folders[0] / "check.json").read_text())
    assert str(folders[0] / "check.json") in result.stdout.replace("\n", "")
    return report, result.stdout


@pytest.mark.slow
def test_a_healthy_config_passes(workdir):
    report, stdout = check_run(workdir, HEALTHY, 0)
    assert report["passed"] and all(c["passed"] for c in report["checks"].values())
    assert report["checks"]["initial_loss"]["log_classes"] == pytest.approx(math.log(10))
    assert report["checks"]["overfit"]["accuracy"] >= 0.99
    loss = report["checks"]["loss_falls"]
    assert loss["last_mean"] < 0.9 * loss["first_mean"]
    assert report["switched_off"] == [] and report["optimizer"]["lr"] == 0.003
    for words in ("initial loss", "overfit", "loss falls", "all checks pass", "regularization: none was on"):
        assert words in stdout


@pytest.mark.slow
def test_an_absurd_learning_rate_fails_with_advice(workdir):
    report, stdout = check_run(workdir, ["dataset=synthetic", "model=mlp", "optimizer=sgd", "optimizer.lr=1e4"], 1)
    assert not report["passed"]
    assert not report["checks"]["loss_falls"]["passed"] and not report["checks"]["overfit"]["passed"]
    assert report["checks"]["loss_falls"]["diverged_at_step"] is not None
    assert "FAIL" in stdout and "lr is too high" in stdout and "some checks fail" in stdout


@pytest.mark.slow
def test_a_zero_init_cannot_overfit(workdir):
    report, stdout = check_run(workdir, [*HEALTHY, "init=zeros"], 1)
    checks = report["checks"]
    assert checks["initial_loss"]["passed"], "all-zero logits are exactly log(C)"
    assert not checks["overfit"]["passed"] and checks["overfit"]["steps"] == 500
    assert checks["overfit"]["accuracy"] < 0.5 and not checks["loss_falls"]["passed"]
    assert "cannot overfit" in stdout and "symmetry" in stdout


@pytest.mark.slow
def test_regularization_given_is_reported_off(workdir):
    report, stdout = check_run(workdir, [*HEALTHY, "augmentation=standard", "optimizer.weight_decay=0.1",
                                         "check.steps=20", "check.window=5"], 0)
    assert {item["key"]: item["was"] for item in report["switched_off"]} == {
        "optimizer.weight_decay": 0.1, "augmentation.ops": report["switched_off"][1]["was"]}
    assert set(report["switched_off"][1]["was"]) == {"crop", "flip"}
    assert report["overrides"] == ["optimizer.weight_decay=0.0", "augmentation.ops={}"]
    assert ("regularization switched off: optimizer.weight_decay (was 0.1), augmentation.ops (was crop, flip)"
            in " ".join(stdout.split()))
    assert report["checks"]["loss_falls"]["steps_run"] == 20


@pytest.mark.slow
def test_bad_check_keys_stop_before_any_folder(workdir):
    """(Every rule is tested in process above; this is what a person sees.)"""
    result = run_trainlab(["check", "dataset=synthetic", "check.fall_ratio=2"], workdir, timeout=60)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert lines == ["trainlab: error: check.fall_ratio=2: must be a fraction in (0, 1]; e.g. check.fall_ratio=0.9"]
    assert not (workdir / "outputs").exists()
