"""Every learning-rate schedule against its formula (expectations computed here, not by the code), warmup
composition, reduce-on-plateau with its metric, the config checks, lr_curve and the schedule plot."""

from __future__ import annotations

import math
import re
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from trainlab.config import load_option
from torch import nn

from trainlab.errors import ConfigError
from trainlab.optim import build_schedule, lr_curve

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
SPE, EPOCHS, LR = 10, 12, 0.1  # steps per epoch, epochs, base learning rate
TOTAL = SPE * EPOCHS
SCHEDULES = ["constant", "cosine", "cosine_restarts", "cyclic", "exponential", "ganin", "inverse_sqrt", "inverse_time",
             "linear", "multistep", "onecycle", "plateau", "step"]
PRESETS = {"warmup_linear": "linear"}  # a schedule with its own values: the default experiment's


def load(name: str, **overrides):
    cfg = load_option("schedule", name)
    OmegaConf.set_struct(cfg, True)  # like Hydra: only the file's keys may be overridden
    for key, value in overrides.items():
        cfg[key] = value
    return cfg


def curve(name: str, epochs: int = EPOCHS, spe: int = SPE, lr: float = LR, **overrides) -> list[float]:
    """lrs[s] = the learning rate optimizer step s (0-based) uses."""
    return lr_curve(load(name, **overrides), lr, epochs, spe)


def approx(values):
    return pytest.approx(values, rel=1e-6, abs=1e-12)


def test_every_schedule_has_a_config_file_with_all_keys():
    assert sorted(p.stem for p in (CONFIGS / "schedule").glob("*.yaml")) == sorted(SCHEDULES + list(PRESETS))
    for name in SCHEDULES:
        cfg = load(name)
        assert cfg._partial_ is True and cfg._target_ == f"trainlab.optim.{name}_schedule"
        assert "warmup_epochs" in cfg and cfg.warmup_epochs == 0
    for name, schedule in PRESETS.items():
        cfg = load(name)
        assert cfg._target_ == f"trainlab.optim.{schedule}_schedule" and set(cfg) == set(load(schedule))


def test_warmup_linear_ramps_for_half_an_epoch_then_decays_to_zero():
    lrs = curve("warmup_linear")
    peak = lrs.index(max(lrs))
    assert max(lrs) == pytest.approx(LR) and peak == SPE // 2
    assert all(a < b for a, b in zip(lrs[:peak], lrs[1:peak + 1]))  # rising
    assert all(a > b for a, b in zip(lrs[peak:], lrs[peak + 1:])) and lrs[-1] < LR / (TOTAL - peak) * 1.01


@pytest.mark.parametrize("name", SCHEDULES)
def test_lr_curve_has_one_lr_per_step_with_the_shipped_values(name):
    lrs = curve(name)  # multistep too: its default milestones are fractions of the run, so any length fits
    assert len(lrs) == EPOCHS * SPE
    assert all(math.isfinite(x) and x >= 0 for x in lrs)


def test_constant():
    assert curve("constant") == approx([LR] * TOTAL)


@pytest.mark.parametrize("step_epochs, gamma", [(2, 0.5), (0.5, 0.1)])
def test_step_at_boundaries(step_epochs, gamma):
    lrs = curve("step", step_epochs=step_epochs, gamma=gamma)
    every = round(step_epochs * SPE)
    assert lrs == approx([LR * gamma ** (s // every) for s in range(TOTAL)])
    assert lrs[every - 1] == pytest.approx(LR) and lrs[every] == pytest.approx(LR * gamma)


def test_multistep_at_milestones():
    lrs = curve("multistep", milestone_unit="epoch", milestones=[3, 6, 9], gamma=0.1)
    for epoch, expected in [(0, LR), (2.9, LR), (3, LR * 0.1), (5.9, LR * 0.1), (6, LR * 0.01), (9, LR * 1e-3),
                            (11.9, LR * 1e-3)]:
        assert lrs[round(epoch * SPE)] == pytest.approx(expected), epoch


def test_multistep_default_is_fractions_of_the_run():
    cfg = load("multistep")
    assert cfg.milestone_unit == "fraction" and list(cfg.milestones) == [0.5, 0.75] and cfg.gamma == 0.1


@pytest.mark.parametrize("epochs, spe, drops", [
    (8, 10, (40, 60)),    # 80 steps: 0.5 -> 40, 0.75 -> 60
    (20, 3, (30, 45)),    # 60 steps: 30, 45
    (7, 2, (7, 10)),      # 14 steps: 0.5 -> 7, 0.75 -> 10.5, rounded to 10 (half to even, like Python's round)
])
def test_multistep_fractions_drop_exactly_at_their_share_of_the_run(epochs, spe, drops):
    lrs = curve("multistep", epochs=epochs, spe=spe, milestones=[0.5, 0.75], gamma=0.1)
    a, b = drops
    assert lrs == approx([LR * 0.1 ** ((s >= a) + (s >= b)) for s in range(epochs * spe)])
    assert lrs[a - 1] == pytest.approx(LR) and lrs[a] == pytest.approx(LR * 0.1)
    assert lrs[b - 1] == pytest.approx(LR * 0.1) and lrs[b] == pytest.approx(LR * 0.01)


def test_multistep_fractions_follow_the_number_of_epochs():
    for epochs, drops in ((4, [20, 30]), (12, [60, 90])):
        lrs = curve("multistep", epochs=epochs)  # the shipped [0.5, 0.75]
        assert [s for s in range(1, len(lrs)) if lrs[s] < lrs[s - 1]] == drops, epochs


def test_multistep_fractions_count_after_the_warmup():
    lrs = curve("multistep", warmup_epochs=2, milestones=[0.5, 0.75])
    warmup, main = 2 * SPE, TOTAL - 2 * SPE  # the main schedule has 100 steps: drops 50 and 75 steps after it starts
    assert lrs[:warmup] == approx(ramp(warmup))
    assert lrs[warmup:] == approx([LR * 0.1 ** ((t >= 50) + (t >= 75)) for t in range(main)])


@pytest.mark.parametrize("epochs", [2, 5])
def test_lr_curve_of_the_shipped_multistep_config_at_few_epochs(epochs):
    cfg = load_option("schedule", "multistep")  # as shipped, nothing overridden
    lrs = lr_curve(cfg, LR, epochs, SPE)
    total = epochs * SPE
    a, b = {2: (10, 15), 5: (25, 38)}[epochs]  # 5 epochs: 0.75 * 50 = 37.5 -> 38
    assert len(lrs) == total
    assert lrs == approx([LR * 0.1 ** ((s >= a) + (s >= b)) for s in range(total)])


@pytest.mark.parametrize("k", [0.0, 0.3, 1.0])
def test_exponential(k):
    lrs = curve("exponential", k=k)
    for s in (0, 1, 7, SPE, 3 * SPE + 4, TOTAL - 1):
        assert lrs[s] == pytest.approx(LR * math.exp(-k * s / SPE), rel=1e-6)


def test_inverse_time():
    lrs = curve("inverse_time", k=0.5)
    for s in (0, 5, SPE, 4 * SPE, TOTAL - 1):
        assert lrs[s] == pytest.approx(LR / (1 + 0.5 * s / SPE))
    assert lrs[2 * SPE] == pytest.approx(LR / 2)  # 1 + 0.5 * 2


def test_ganin():
    """DANN's annealing: lr / (1 + 10 p)^0.75 over progress p = step / total steps (Ganin et al. 2016)."""
    lrs = curve("ganin")
    for s in (0, 1, SPE, TOTAL // 2, TOTAL - 1):
        assert lrs[s] == pytest.approx(LR / (1 + 10 * s / TOTAL) ** 0.75)
    assert lrs[TOTAL // 2] == pytest.approx(LR / 6 ** 0.75)


def test_inverse_sqrt():
    lrs = curve("inverse_sqrt", t0_epochs=2)
    for s in (0, 3, SPE, 6 * SPE, TOTAL - 1):
        assert lrs[s] == pytest.approx(LR / math.sqrt(1 + (s / SPE) / 2))
    assert lrs[6 * SPE] == pytest.approx(LR / 2)  # sqrt(1 + 6/2)


def test_inverse_sqrt_after_warmup_is_the_transformer_rule():
    warmup = 2
    lrs = curve("inverse_sqrt", t0_epochs=warmup, warmup_epochs=warmup)
    w = warmup * SPE
    for s in (w, w + 1, 5 * SPE, TOTAL - 1):  # lr * sqrt(W / s) for s >= W
        assert lrs[s] == pytest.approx(LR * math.sqrt(w / s))


@pytest.mark.parametrize("end_factor", [0.0, 0.2])
def test_linear_start_middle_end(end_factor):
    lrs = curve("linear", end_factor=end_factor)
    assert lrs == approx([LR * (1 + (end_factor - 1) * s / TOTAL) for s in range(TOTAL)])
    assert lrs[0] == pytest.approx(LR)
    assert lrs[TOTAL // 2] == pytest.approx(LR * (1 + end_factor) / 2)
    assert lrs[-1] == pytest.approx(LR * (1 + (end_factor - 1) * (TOTAL - 1) / TOTAL))


def test_cosine_start_half_end():
    lrs = curve("cosine", min_lr=0.01)
    assert lrs[0] == pytest.approx(LR)
    assert lrs[TOTAL // 2] == pytest.approx((LR + 0.01) / 2)
    assert lrs[-1] == pytest.approx(0.01 + (LR - 0.01) * (1 + math.cos(math.pi * (TOTAL - 1) / TOTAL)) / 2)


def test_sgdr_restarts_and_cycle_lengths_multiply():
    lrs = curve("cosine_restarts", epochs=14, cycle_epochs=2, cycle_mult=2, min_lr=0.0)
    starts = [0, 2, 6, 14]  # cycles of 2, 4, 8 epochs
    for start, end in zip(starts, starts[1:]):
        length = (end - start) * SPE
        assert lrs[start * SPE] == pytest.approx(LR), start  # back to the base lr at each cycle start
        for t in (1, length // 2, length - 1):
            assert lrs[start * SPE + t] == pytest.approx(LR * (1 + math.cos(math.pi * t / length)) / 2)
        assert lrs[end * SPE - 1] < lrs[end * SPE - 2] < LR
    assert len(lrs) == 14 * SPE


def test_cyclic_triangle():
    lrs = curve("cyclic", max_lr=0.5, half_cycle_epochs=1.5)
    half = 15
    for s in range(TOTAL):
        position = s % (2 * half)
        frac = position / half if position <= half else 2 - position / half
        assert lrs[s] == pytest.approx(LR + (0.5 - LR) * frac), s
    assert [lrs[s] for s in (0, 2 * half, 4 * half)] == approx([LR] * 3)  # troughs
    assert [lrs[s] for s in (half, 3 * half, 5 * half)] == approx([0.5] * 3)  # peaks


def test_cyclic_base_lr_and_default_max():
    lrs = curve("cyclic", base_lr=0.02, half_cycle_epochs=1)
    assert lrs[0] == pytest.approx(0.02) and lrs[SPE] == pytest.approx(0.2)  # max_lr null: 10 x base_lr


def test_cyclic_cycles_momentum_only_when_the_optimizer_has_some():
    plain = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=LR)
    assert build_schedule(load("cyclic"), plain, SPE, EPOCHS).cycle_momentum is False
    heavy = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=LR, momentum=0.9)
    assert build_schedule(load("cyclic"), heavy, SPE, EPOCHS).cycle_momentum is True


def test_onecycle_peak_and_final():
    pct, div, final = 0.25, 10.0, 100.0
    lrs = curve("onecycle", max_lr=0.4, pct_start=pct, div_factor=div, final_div_factor=final)
    peak = round(pct * TOTAL) - 1  # torch: the rise ends at step pct_start * total_steps - 1
    assert lrs[0] == pytest.approx(0.4 / div)
    assert lrs[peak] == pytest.approx(0.4) and max(lrs) == pytest.approx(0.4)
    assert lrs[-1] == pytest.approx(0.4 / (div * final))
    assert all(a <= b for a, b in zip(lrs[:peak], lrs[1:peak + 1]))
    assert all(a >= b for a, b in zip(lrs[peak:], lrs[peak + 1:]))


def test_onecycle_max_lr_defaults_to_the_optimizer_lr():
    lrs = curve("onecycle")
    assert max(lrs) == pytest.approx(LR) and lrs[0] == pytest.approx(LR / 25)


MAIN = {  # the main schedule's lr t steps after it starts, over `steps` steps
    "constant": ({}, lambda t, steps: LR),
    "step": ({"step_epochs": 2, "gamma": 0.5}, lambda t, steps: LR * 0.5 ** (t // (2 * SPE))),
    "multistep": ({"milestone_unit": "epoch", "milestones": [2, 5]},
                  lambda t, steps: LR * 0.1 ** ((t >= 2 * SPE) + (t >= 5 * SPE))),
    "exponential": ({"k": 0.2}, lambda t, steps: LR * math.exp(-0.2 * t / SPE)),
    "inverse_time": ({"k": 0.5}, lambda t, steps: LR / (1 + 0.5 * t / SPE)),
    "inverse_sqrt": ({"t0_epochs": 1}, lambda t, steps: LR / math.sqrt(1 + t / SPE)),
    "ganin": ({"alpha": 10.0, "beta": 0.75}, lambda t, steps: LR / (1 + 10 * t / steps) ** 0.75),
    "linear": ({"end_factor": 0.0}, lambda t, steps: LR * (1 - t / steps)),
    "cosine": ({"min_lr": 0.0}, lambda t, steps: LR * (1 + math.cos(math.pi * t / steps)) / 2),
    "cosine_restarts": ({"cycle_epochs": 3, "cycle_mult": 1},
                        lambda t, steps: LR * (1 + math.cos(math.pi * (t % (3 * SPE)) / (3 * SPE))) / 2),
    "cyclic": ({"max_lr": 0.3, "half_cycle_epochs": 1},
               lambda t, steps: LR + (0.3 - LR) * (1 - abs((t % (2 * SPE)) / SPE - 1))),
}


def ramp(warmup: int) -> list[float]:
    """Linear warmup from lr / W (step 0) reaching lr at step W, where the main schedule takes over."""
    return [LR * (1 / warmup + (1 - 1 / warmup) * s / warmup) for s in range(warmup)]


@pytest.mark.parametrize("name", sorted(MAIN))
def test_warmup_ramps_linearly_then_the_main_schedule_starts_from_its_beginning(name):
    overrides, formula = MAIN[name]
    warmup = 2 * SPE
    lrs = curve(name, warmup_epochs=2, **overrides)
    assert lrs[:warmup] == approx(ramp(warmup))
    assert max(lrs[:warmup]) < LR
    remaining = TOTAL - warmup
    assert lrs[warmup:] == approx([formula(t, remaining) for t in range(remaining)])


# ---------------------------------------------------------------- plateau


def plateau_run(metrics: list[float], mode: str = "max", spe: int = 2, per_step: bool = True, **overrides):
    """The lr each epoch trained at, feeding metrics[e] after epoch e (the trainer's convention: for a
    needs_metric schedule only step(metric) per epoch; per_step=True also calls step() per step)."""
    optimizer = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=LR)
    scheduler = build_schedule(load("plateau", **overrides), optimizer, spe, len(metrics), mode=mode)
    assert scheduler.needs_metric is True
    used = []
    for metric in metrics:
        epoch_lrs = []
        for _ in range(spe):
            epoch_lrs.append(optimizer.param_groups[0]["lr"])
            optimizer.step()
            if per_step:
                scheduler.step()  # a no-op for plateau: harmless either way
        used.append(epoch_lrs)
        scheduler.step(metric)
    return used, scheduler, optimizer


@pytest.mark.parametrize("per_step", [False, True])
def test_plateau_drops_after_patience_epochs_without_improvement_and_not_before(per_step):
    # best at epoch 1, then 3 epochs without improvement: patience 2 tolerates 2, the third one drops
    used, _, _ = plateau_run([0.5, 0.6, 0.6, 0.6, 0.6, 0.6, 0.6], per_step=per_step, patience=2, factor=0.5)
    per_epoch = [lrs[0] for lrs in used]
    assert per_epoch == approx([LR, LR, LR, LR, LR, LR / 2, LR / 2])
    #                     bad epochs after:   0   1   2   3 -> drop for epoch 5; then counted afresh


def test_plateau_follows_the_metric_and_the_mode():
    rising = [0.1 * (e + 1) for e in range(8)]
    used, _, _ = plateau_run(rising, mode="max", patience=1)
    assert all(lrs[0] == pytest.approx(LR) for lrs in used)  # accuracy keeps improving: no drop
    used, _, _ = plateau_run(rising, mode="min", patience=1, factor=0.1)
    assert [lrs[0] for lrs in used][:4] == approx([LR, LR, LR, LR * 0.1])  # as a loss, it only gets worse


def test_plateau_respects_min_lr():
    used, _, _ = plateau_run([1.0] * 10, patience=0, factor=0.1, min_lr=1e-3)
    assert min(lrs[0] for lrs in used) == pytest.approx(1e-3)


@pytest.mark.parametrize("per_step", [False, True])
def test_warmup_then_plateau(per_step):
    spe = 4
    metrics = [0.1, 0.2, 0.3, 0.3, 0.3, 0.3, 0.3]
    used, _, _ = plateau_run(metrics, spe=spe, per_step=per_step, warmup_epochs=2, patience=1, factor=0.5)
    flat = [lr for lrs in used for lr in lrs]
    warmup = 2 * spe
    assert flat[:warmup] == approx(ramp(warmup))
    # metrics from epoch 1 on (warmup over) reach the plateau: best 0.3 at epoch 2, bad 3, 4 -> drop at 5
    assert [lrs[0] for lrs in used[2:]] == approx([LR, LR, LR, LR / 2, LR / 2])


def test_warmup_plateau_state_dict_round_trip_continues_identically():
    metrics = [0.1, 0.2, 0.2, 0.2, 0.2, 0.2, 0.2, 0.2]
    spe, overrides = 3, {"warmup_epochs": 1.5, "patience": 1, "factor": 0.5}
    reference = [lr for lrs in plateau_run(metrics, spe=spe, **overrides)[0] for lr in lrs]

    def make():
        optimizer = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=LR)
        return optimizer, build_schedule(load("plateau", **overrides), optimizer, spe, len(metrics), mode="max")

    for stop in (1, 2, 4):  # stop inside the warmup, just after it, during the plateau
        optimizer, scheduler = make()
        lrs = []
        for epoch in range(stop):
            for _ in range(spe):
                lrs.append(optimizer.param_groups[0]["lr"])
                optimizer.step()  # the trainer steps a needs_metric schedule only with the metric
            scheduler.step(metrics[epoch])
        saved = torch.load(_save(scheduler.state_dict(), optimizer.state_dict()), weights_only=True)
        optimizer, scheduler = make()  # a fresh process: same config, then the saved state
        optimizer.load_state_dict(saved["optimizer"])
        scheduler.load_state_dict(saved["scheduler"])
        for epoch in range(stop, len(metrics)):
            for _ in range(spe):
                lrs.append(optimizer.param_groups[0]["lr"])
                optimizer.step()  # the trainer steps a needs_metric schedule only with the metric
            scheduler.step(metrics[epoch])
        assert lrs == approx(reference), stop


def _save(scheduler_state, optimizer_state):
    import io

    buffer = io.BytesIO()
    torch.save({"scheduler": scheduler_state, "optimizer": optimizer_state}, buffer)
    buffer.seek(0)
    return buffer


def test_lr_curve_scripted_metric_for_plateau():
    # the default metric improves for the first third of the epochs (4 of 12), then is flat
    lrs = lr_curve(load("plateau", patience=2, factor=0.5), LR, EPOCHS, SPE)
    per_epoch = lrs[::SPE]
    assert per_epoch[:7] == approx([LR] * 7)  # best after epoch 3 (0-based); bad 4, 5, 6 -> drop for epoch 7
    assert per_epoch[7] == pytest.approx(LR / 2)
    calls = []
    lr_curve(load("plateau"), LR, 3, 2, metric_fn=lambda epoch: calls.append(epoch) or 1.0)
    assert calls == [0, 1, 2]


# ---------------------------------------------------------------- config checks


@pytest.mark.parametrize("name, overrides, key", [
    ("cosine", {"warmup_epochs": EPOCHS}, "warmup_epochs"),
    ("plateau", {"warmup_epochs": EPOCHS + 1}, "warmup_epochs"),
    ("constant", {"warmup_epochs": -1}, "warmup_epochs"),
    ("multistep", {"milestone_unit": "epoch", "milestones": [3, 20]}, "milestones"),
    ("multistep", {"milestone_unit": "epoch", "milestones": [3, EPOCHS]}, "milestones"),
    ("multistep", {"milestone_unit": "epoch", "milestones": [2, 8], "warmup_epochs": 5}, "milestones"),  # after warmup
    ("multistep", {"milestone_unit": "epoch", "milestones": [6, 3]}, "milestones"),
    ("multistep", {"milestone_unit": "epoch", "milestones": [3, 3]}, "milestones"),
    ("multistep", {"milestone_unit": "epoch", "milestones": [0, 3]}, "milestones"),
    ("multistep", {"milestone_unit": "epoch", "milestones": [3, 6], "gamma": 0}, "gamma"),
    ("multistep", {"milestones": [0.5, 0.75], "gamma": 0}, "gamma"),
    ("multistep", {"milestones": [0.5, 1.0]}, "milestones"),   # fraction (the default unit): in (0, 1)
    ("multistep", {"milestones": [0.5, 1.5]}, "milestones"),
    ("multistep", {"milestones": [0.0, 0.5]}, "milestones"),
    ("multistep", {"milestones": [-0.25, 0.5]}, "milestones"),
    ("multistep", {"milestones": [3, 6]}, "milestones"),        # epochs without milestone_unit=epoch
    ("multistep", {"milestones": [0.75, 0.5]}, "milestones"),
    ("multistep", {"milestones": [0.5, 0.5]}, "milestones"),
    ("multistep", {"milestones": [0.5, 0.501]}, "milestones"),  # both round to step 60 of 120
    ("multistep", {"milestones": [0.999]}, "milestones"),       # rounds to step 120, the end
    ("multistep", {"milestones": [0.001]}, "milestones"),       # rounds to step 0, the start
    ("multistep", {"milestones": []}, "milestones"),
    ("multistep", {"milestone_unit": "epochs"}, "milestone_unit"),
    ("multistep", {"milestone_unit": "percent", "milestones": [50, 75]}, "milestone_unit"),
    ("step", {"gamma": -0.5}, "gamma"),
    ("step", {"step_epochs": 0}, "step_epochs"),
    ("cosine_restarts", {"cycle_epochs": 0}, "cycle_epochs"),
    ("cosine_restarts", {"cycle_mult": 0}, "cycle_mult"),
    ("cyclic", {"half_cycle_epochs": -1}, "half_cycle_epochs"),
    ("cyclic", {"max_lr": LR / 2}, "max_lr"),
    ("onecycle", {"warmup_epochs": 1}, "warmup_epochs"),
    ("cosine", {"min_lr": -0.1}, "min_lr"),
    ("cosine_restarts", {"min_lr": -1e-3}, "min_lr"),
    ("plateau", {"min_lr": -1.0}, "min_lr"),
    ("plateau", {"factor": 1.0}, "factor"),
    ("plateau", {"factor": 0.0}, "factor"),
    ("exponential", {"k": -1}, "k"),
    ("inverse_sqrt", {"t0_epochs": 0}, "t0_epochs"),
    ("linear", {"end_factor": 1.5}, "end_factor"),
])
def test_bad_values_are_config_errors_naming_the_key(name, overrides, key):
    optimizer = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=LR)
    with pytest.raises(ConfigError, match=rf"^schedule\.{key}="):
        build_schedule(load(name, **overrides), optimizer, SPE, EPOCHS)


@pytest.mark.parametrize("milestones", [[0.5, 1.0], [1.0], [0.0, 0.5], [-0.5], [1.25]])
def test_multistep_fraction_outside_0_1_is_refused_naming_milestones(milestones):
    optimizer = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=LR)
    shown = re.escape(f"schedule.milestones={milestones!r}: ")
    with pytest.raises(ConfigError, match=rf"^{shown}.*\(0, 1\).*; .*milestone_unit=epoch") as error:
        build_schedule(load("multistep", milestone_unit="fraction", milestones=milestones), optimizer, SPE, EPOCHS)
    assert "\n" not in str(error.value)


def test_multistep_epochs_given_as_fractions_say_how_to_switch_the_unit():
    optimizer = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=LR)
    with pytest.raises(ConfigError, match=r"^schedule\.milestones=\[30, 60, 90\]: .*look like epochs.*"
                                          r"schedule\.milestone_unit=epoch"):
        build_schedule(load("multistep", milestones=[30, 60, 90]), optimizer, SPE, 100)
    # the same milestones as epochs are fine for a 100-epoch run
    build_schedule(load("multistep", milestone_unit="epoch", milestones=[30, 60, 90]), optimizer, SPE, 100)


@pytest.mark.parametrize("unit", ["epochs", "Fraction", "steps", None, 1])
def test_multistep_unknown_unit_is_refused_naming_milestone_unit(unit):
    optimizer = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=LR)
    shown = "null" if unit is None else repr(unit)  # as the user types it back
    with pytest.raises(ConfigError, match=rf"^schedule\.milestone_unit={re.escape(shown)}: must be fraction or "
                                          r"epoch; "):
        build_schedule(load("multistep", milestone_unit=unit), optimizer, SPE, EPOCHS)


def test_unknown_key_is_a_config_error():
    cfg = OmegaConf.create({"_target_": "trainlab.optim.cosine_schedule", "_partial_": True, "no_such": 1})
    with pytest.raises(ConfigError, match=r"^schedule.*no_such"):
        build_schedule(cfg, torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=LR), SPE, EPOCHS)


# ---------------------------------------------------------------- the plot


def test_plot_writes_a_png(tmp_path, capsys):
    from trainlab.commands.schedule import plot_schedule

    cfg = OmegaConf.create({"schedule": OmegaConf.to_container(load("cosine_restarts")),
                            "optimizer": {"lr": 0.05}, "trainer": {"epochs": 30, "mode": "max"},
                            "schedule_plot": {"steps_per_epoch": 20, "log_y": False}})
    path = plot_schedule(cfg, tmp_path)
    assert path == tmp_path / "schedule.png"
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and path.stat().st_size > 1000
    assert str(path) in capsys.readouterr().out


def test_plot_config_composes_with_train():
    cfg = OmegaConf.load(CONFIGS / "schedule_plot.yaml")
    assert list(cfg.defaults) == ["train", "_self_"]
    assert cfg.schedule_plot.steps_per_epoch >= 1 and cfg.hydra.job.name == "schedule"
