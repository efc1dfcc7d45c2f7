"""`trainlab lr-find`: the range test's rule, smoothing and stop in-process; the command as a user runs it."""

from __future__ import annotations

import hashlib
import json
import math
import re
from pathlib import Path

import numpy as np
import pytest

from conftest import run_trainlab
from trainlab.commands import lr_find

SYNTHETIC_MLP = ["dataset=synthetic", "model=mlp", "optimizer=adam"]
WORKING_LR = 0.003  # optimizer=adam trains the synthetic set at this lr (conftest.QUICK)


# ---------------------------------------------------------------- the rule, the smoothing, the stop


def test_lrs_rise_exponentially_from_start_to_end():
    lrs = [lr_find.lr_at(i, 9, 1e-6, 1e2) for i in range(9)]
    assert lrs[0] == pytest.approx(1e-6) and lrs[-1] == pytest.approx(1e2)
    assert np.allclose(np.diff(np.log10(lrs)), 1.0)  # one decade a step


def test_smoothing_is_debiased():
    assert lr_find.smooth([2.0] * 5, 0.98) == pytest.approx([2.0] * 5)  # no pull towards the zero start
    assert lr_find.smooth([3.0, 1.0, 2.0], 0.0) == [3.0, 1.0, 2.0]      # beta 0: the raw losses
    beta = 0.9
    second = lr_find.smooth([4.0, 2.0], beta)[1]
    assert second == pytest.approx((beta * (1 - beta) * 4.0 + (1 - beta) * 2.0) / (1 - beta**2))
    assert 2.0 < second < 4.0


def tanh_curve(lrs, centre: float) -> list[float]:
    """A loss that is flat, falls fastest at lr = centre (in log lr), then flattens again."""
    return [2.0 - math.tanh((math.log10(lr) - math.log10(centre)) / 0.7) for lr in lrs]


@pytest.mark.parametrize("centre", [1e-4, 3e-3, 0.1])
def test_suggestion_is_the_steepest_descent(centre):
    lrs = [lr_find.lr_at(i, 100, 1e-7, 10.0) for i in range(100)]
    found = lr_find.steepest(lrs, tanh_curve(lrs, centre))
    step = (10.0 / 1e-7) ** (1 / 99)  # neighbouring lrs differ by this factor
    assert centre / step <= found["lr"] <= centre * step
    assert found["slope"] < 0


def test_the_first_and_last_points_are_skipped():
    lrs = [lr_find.lr_at(i, 100, 1e-7, 10.0) for i in range(100)]
    losses = tanh_curve(lrs, 1e-3)
    losses[1] -= 5.0  # a plunge among the first points (an artefact of the first batches) ...
    losses[-1] = -10.0  # ... and a dive at the very end: neither is the suggestion
    found = lr_find.steepest(lrs, losses)
    assert found["skipped"] == [10, 5]
    assert found["lr"] == pytest.approx(1e-3, rel=0.3)


def test_a_dip_after_the_minimum_is_no_descent():
    """A diverging loss that wobbles on its way up (a steep local dip) does not move the suggestion."""
    lrs = [lr_find.lr_at(i, 100, 1e-7, 10.0) for i in range(100)]
    losses = [2.0 - 0.5 * math.tanh((math.log10(lr) + 3) / 0.7) for lr in lrs]  # descent centred at 1e-3
    rise = [i for i, lr in enumerate(lrs) if lr > 0.1]
    for i in rise:
        losses[i] = 1.5 + (i - rise[0]) * 0.5
    losses[rise[6]] -= 2.0  # a dip much steeper than the descent, among the rising points
    found = lr_find.steepest(lrs, losses)
    assert found["lr"] == pytest.approx(1e-3, rel=0.3)
    assert found["searched_until_lr"] <= 0.1 * 1.3


def test_min_loss_lr():
    assert lr_find.min_loss_lr([1e-3, 1e-2, 1e-1], [2.0, 0.5, 3.0]) == 1e-2
    assert lr_find.min_loss_lr([], []) is None


def test_divergence_stops_early_and_keeps_the_crossing_point():
    calls = []

    def step(lr):  # falls to 1.0 by lr 1e-3, then explodes
        calls.append(lr)
        return 2.0 if lr < 1e-5 else (1.0 if lr < 1e-3 else 1.0 + 1e4 * lr)

    result = lr_find.range_test(step, 1e-7, 10.0, 100, beta=0.0, diverge=4.0)
    crossing = next(i for i, lr in enumerate(calls) if 1.0 + 1e4 * lr > 4.0 and lr >= 1e-3)
    assert len(calls) == crossing + 1 < 100, "stopped at the first point over 4 x the minimum"
    assert result["stopped"] == f"diverged at step {crossing + 1}"
    assert len(result["lrs"]) == len(result["losses"]) == len(result["smoothed"]) == crossing + 1
    assert result["smoothed"][-1] > 4.0 * min(result["smoothed"])


def test_a_non_finite_loss_stops_and_is_left_out():
    result = lr_find.range_test(lambda lr: float("nan") if lr > 1e-2 else 1.0, 1e-7, 10.0, 100, 0.98, None)
    assert result["stopped"].startswith("diverged at step ") and "nan" in result["reason"]
    assert all(math.isfinite(v) for v in result["losses"] + result["smoothed"])
    assert max(result["lrs"]) <= 1e-2 and len(result["lrs"]) < 100


def test_without_divergence_the_test_completes():
    result = lr_find.range_test(lambda lr: 1.0, 1e-7, 10.0, 20, 0.98, 4.0)
    assert result["stopped"] == "completed" and len(result["lrs"]) == 20
    assert result["lrs"][-1] == pytest.approx(10.0)


def test_summary_has_the_suggestion_the_alternative_and_a_note_when_the_loss_hardly_fell():
    falls = lr_find.range_test(lambda lr: tanh_curve([lr], 1e-3)[0], 1e-7, 10.0, 100, 0.0, None)
    lr_find.summarize(falls)
    assert falls["suggestion"] == pytest.approx(1e-3, rel=0.2) and falls["notes"] == []
    assert falls["min_loss_lr_div_10"] == pytest.approx(falls["min_loss_lr"] / 10) and falls["steps_run"] == 100
    flat = lr_find.range_test(lambda lr: 2.3 - 0.01 * (lr > 1e-3), 1e-7, 10.0, 100, 0.98, 4.0)
    lr_find.summarize(flat)
    assert flat["suggestion"] is not None and "unreliable" in flat["notes"][0]
    short = lr_find.range_test(lambda lr: 1.0 if lr < 1.3e-7 else float("inf"), 1e-7, 10.0, 100, 0.98, 4.0)
    lr_find.summarize(short)
    assert short["steps_run"] < 3 and short["suggestion"] is None


def test_train_command_replaces_the_lr_and_drops_lr_find_keys():
    line = lr_find.train_command(["dataset=synthetic", "model.channels=[16,32]", "optimizer.lr=0.1",
                                  "lr_find.steps=200", "hydra.run.dir=x"], 3.21e-3)
    assert line == "trainlab train dataset=synthetic 'model.channels=[16,32]' optimizer.lr=3.2e-03"


# ---------------------------------------------------------------- the command's pieces, in-process


def composed(overrides: list[str]):
    """The lr-find config as the runner checks it (schema, dry builds, lr_find.check)."""
    from hydra import compose, initialize_config_dir

    from trainlab.commands import Context, check_all, config_dir

    with initialize_config_dir(version_base="1.3", config_dir=str(config_dir()), job_name="lr-find"):
        return check_all(lr_find, compose("lr_find", overrides=overrides), Context("lr-find"))


@pytest.mark.parametrize("optimizer", ["sgd", "momentum", "adam", "adamw", "rmsprop", "adadelta", "adagrad"])
def test_every_param_group_follows_the_lr_by_its_own_scale(optimizer, one_thread):
    """Each group's lr is the step's lr times its scale, whatever the optimizer, and the schedule (here with
    a warmup that would hold the lr near 0) has no say."""
    from dataclasses import replace

    from trainlab.build import build_experiment, build_trainer
    from trainlab.optim import build_optimizer

    cfg = composed(["dataset=synthetic", "model=mlp", f"optimizer={optimizer}", "optimizer.weight_decay=0.01",
                    "++optimizer.lr_multipliers={head: 10}", "schedule.warmup_epochs=1", "dataset.train_size=256"])
    experiment = build_experiment(cfg)
    optimizer_ = build_optimizer(cfg.optimizer, experiment.model)
    trainer = build_trainer(replace(experiment, optimizer=optimizer_, scheduler=lr_find.NoSchedule()), callbacks={})
    scales = lr_find.group_scales(optimizer_, float(cfg.optimizer.lr))
    assert sorted(set(scales)) == [1.0, 10.0] and len(optimizer_.param_groups) >= 3  # head, main, no_decay
    before = [p.detach().clone() for p in experiment.model.parameters()]
    step = lr_find.make_step(trainer, experiment.data.train, scales, cfg.trainer)
    for _ in range(3):  # 256 examples: 2 batches, so the loader is cycled
        loss = step(1e-3)
        assert math.isfinite(loss) and loss > 0
    assert [g["lr"] for g in optimizer_.param_groups] == pytest.approx([1e-3 * s for s in scales])
    assert any(not p.equal(b) for p, b in zip(experiment.model.parameters(), before)), "the weights moved"


BAD_KEYS = [
    ("lr_find.start_lr=0", "lr_find.start_lr=0: must be a number > 0"),
    ("lr_find.start_lr=-1e-3", "lr_find.start_lr=-0.001: must be a number > 0"),
    ("lr_find.end_lr=1e-8", "lr_find.end_lr=1e-08: must be greater than lr_find.start_lr (1e-07)"),
    ("lr_find.steps=5", "lr_find.steps=5: must be a whole number >= 10"),
    ("lr_find.steps=50.5", "lr_find.steps=50.5: must be a whole number >= 10"),
    ("lr_find.beta=1.0", "lr_find.beta=1.0: must be a number in [0, 1)"),
    ("lr_find.beta=-0.1", "lr_find.beta=-0.1: must be a number in [0, 1)"),
    ("lr_find.diverge=1", "lr_find.diverge=1: must be a number > 1"),
    ("+lr_find.stepz=3", "lr_find.stepz=3: unknown key"),
]


@pytest.mark.parametrize("override,message", BAD_KEYS)
def test_bad_keys_fail_the_check_with_one_line_naming_the_key(override, message, capsys, tmp_path):
    from trainlab.commands import compose_checked

    with pytest.raises(SystemExit) as stopped:
        compose_checked(lr_find, "lr-find", [["dataset=synthetic", override]], None)
    assert stopped.value.code == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"trainlab: error: {message}"), lines


def test_good_keys_pass_the_check():
    cfg = composed(["dataset=synthetic", "lr_find.steps=10", "lr_find.beta=0", "lr_find.diverge=null"])
    assert lr_find.settings(cfg) == {"start_lr": 1e-7, "end_lr": 10.0, "steps": 10, "beta": 0, "diverge": None}


# ---------------------------------------------------------------- the command, as a user runs it


def tree(root: Path) -> dict[str, str]:
    """Every file under root -> its sha256."""
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(root.rglob("*"))
            if p.is_file()}


@pytest.mark.slow
def test_lr_find_suggests_a_working_lr_and_touches_nothing_else(tmp_path):
    from PIL import Image
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    other = tmp_path / "outputs" / "train" / "2020-01-01" / "00-00-00"  # a run of another command
    (other / "checkpoints").mkdir(parents=True)
    (other / "summary.json").write_text(json.dumps({"status": "completed"}))
    (other / "checkpoints" / "last.pt").write_bytes(bytes(range(256)) * 4)
    (tmp_path / "configs").mkdir()  # an (empty) user configs folder: read, never written
    before = tree(tmp_path)

    result = run_trainlab(["lr-find", *SYNTHETIC_MLP, "lr_find.steps=200"], tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]

    after = tree(tmp_path)
    assert {k: v for k, v in after.items() if k in before} == before, "files that existed are byte-identical"
    runs = sorted(p.parent for p in (tmp_path / "outputs" / "lr-find").rglob("lr_find.json"))
    assert len(runs) == 1
    run_dir = runs[0]
    prefix = str(run_dir.relative_to(tmp_path)) + "/"
    assert all(k.startswith(prefix) for k in after.keys() - before.keys()), "nothing written outside the run folder"
    assert not list(run_dir.rglob("*.pt")), "lr-find writes no checkpoint"

    printed = re.search(r"^suggested: optimizer\.lr=(\S+)", result.stdout, flags=re.M)
    assert printed, result.stdout
    suggestion = float(printed.group(1))
    assert WORKING_LR / 10 <= suggestion <= WORKING_LR * 10, result.stdout
    assert "schedule (linear) is ignored" in result.stdout  # warmup_linear: the linear schedule, with warmup
    assert f"train with: trainlab train {' '.join(SYNTHETIC_MLP)} optimizer.lr={printed.group(1)}" in result.stdout

    found = json.loads((run_dir / "lr_find.json").read_text())
    steps = found["steps_run"]
    assert 10 < steps <= 200 and len(found["lrs"]) == len(found["losses"]) == len(found["smoothed"]) == steps
    assert found["stopped"] == "completed" or re.fullmatch(r"diverged at step \d+", found["stopped"])
    assert found["suggestion"] == pytest.approx(suggestion, rel=0.05) and "steepest" in found["rule"]
    assert found["min_loss_lr_div_10"] == pytest.approx(found["min_loss_lr"] / 10)
    assert found["lrs"][0] == pytest.approx(1e-7) and all(b > a for a, b in zip(found["lrs"], found["lrs"][1:]))
    assert found["settings"]["steps"] == 200 and found["settings"]["beta"] == 0.98
    assert found["settings"]["schedule_ignored"] == "linear"
    assert min(found["losses"]) < 0.5 * found["losses"][0], "the range test trained the model"

    with Image.open(run_dir / "lr_find.png") as image:
        assert image.format == "PNG" and image.width >= 600 and image.height >= 400

    events = EventAccumulator(str(run_dir / "tensorboard"))
    events.Reload()
    scalars = {tag: events.Scalars(tag) for tag in events.Tags()["scalars"]}
    assert {"lr_find/loss", "lr_find/smoothed_loss", "lr_find/lr"} <= scalars.keys()
    assert [e.step for e in scalars["lr_find/loss"]] == list(range(1, steps + 1))
    assert [e.value for e in scalars["lr_find/loss"]] == pytest.approx(found["losses"], rel=1e-5)
    assert [e.value for e in scalars["lr_find/lr"]] == pytest.approx(found["lrs"], rel=1e-5)


@pytest.mark.slow
@pytest.mark.parametrize("override,message", [BAD_KEYS[2], BAD_KEYS[3]])
def test_bad_keys_exit_2_before_any_folder_is_made(override, message, tmp_path):
    result = run_trainlab(["lr-find", "dataset=synthetic", override], tmp_path)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"trainlab: error: {message}"), result.stderr
    assert not (tmp_path / "outputs").exists()
