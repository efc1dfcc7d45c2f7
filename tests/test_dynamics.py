"""Training dynamics: batch modes, clipping, accumulation, penalties, EMA, early stopping, metric-driven
schedules, mixed-precision fallback and the config checks of the keys that control them."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from hydra import compose, initialize_config_dir

from conftest import run_trainlab
from trainlab.build import build_callbacks, check
from trainlab.callbacks.base import RunInfo
from trainlab.callbacks.checkpoint import Checkpoint
from trainlab.callbacks.early_stopping import EarlyStopping
from trainlab.callbacks.ema import EMA, build_ema
from trainlab.callbacks.tensorboard import TensorBoard
from trainlab.checkpoint import load
from trainlab.config import effective_monitor, validate
from trainlab.data import split_train_val
from trainlab.data.datasets import make_synthetic
from trainlab.data.loader import DeviceLoader
from trainlab.data.preprocess import MeanStd
from trainlab.errors import ConfigError
from trainlab.models.mlp import MLP
from trainlab.regularization import WeightPenalty, build_penalty
from trainlab.runtime import compile_model, resolve_amp
from trainlab.train import StepSettings, Trainer

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
CPU = torch.device("cpu")


pytestmark = pytest.mark.usefixtures("one_thread")  # tiny models: one thread is faster on 2 shared cores


class Data:
    def __init__(self):
        dataset = make_synthetic(num_train=300, num_test=10, image_size=12, generator_seed=0)
        self.train_x, self.train_y, self.val_x, self.val_y = split_train_val(dataset, 60, None, seed=0)
        self.normalize = MeanStd().fit(self.train_x)
        self.input_shape = dataset.input_shape

    def train(self, batch, shuffle=False, n=None, seed=1):
        x, y = (self.train_x, self.train_y) if n is None else (self.train_x[:n], self.train_y[:n])
        return DeviceLoader(x, y, batch, normalize=self.normalize, shuffle=shuffle, seed=seed)

    def val(self):
        return DeviceLoader(self.val_x, self.val_y, 64, normalize=self.normalize)

    def model(self, seed=0):
        torch.manual_seed(seed)
        return MLP(self.input_shape, 10, hidden=(32,))


@pytest.fixture(scope="module")
def data() -> Data:
    return Data()


def constant(optimizer):
    return torch.optim.lr_scheduler.ConstantLR(optimizer, factor=1.0, total_iters=0)


STEP_KEYS = {"label_smoothing", "accumulate", "clip_grad_norm", "clip_grad_value"}


def sgd_trainer(model, lr=0.1, writer=None, **kwargs) -> Trainer:
    """Plain SGD at a constant rate; StepSettings keys (accumulate, clip_grad_*) may be given directly, and
    `writer` (a FakeWriter) receives what the TensorBoard callback logs."""
    optimizer = torch.optim.SGD(model.parameters(), lr=lr)
    steps = {k: kwargs.pop(k) for k in list(kwargs) if k in STEP_KEYS}
    if steps:
        kwargs["steps"] = StepSettings(**steps)
    if writer is not None:
        kwargs["callbacks"] = {**kwargs.get("callbacks", {}), "tensorboard": tensorboard(writer)}
    return Trainer(model, optimizer, constant(optimizer), CPU, **kwargs)


def tensorboard(writer) -> TensorBoard:
    """The TensorBoard callback writing into a FakeWriter (no run folder, no event file)."""
    callback = TensorBoard()
    callback.setup(RunInfo(run_dir=None))
    callback.writer = writer
    return callback


def checkpoint(run_dir, monitor="val/acc", mode="max") -> Checkpoint:
    """The Checkpoint callback writing <run_dir>/checkpoints/{best,last}.pt."""
    callback = Checkpoint()
    callback.setup(RunInfo(run_dir=run_dir, monitor=monitor, mode=mode))
    return callback


def stopper(patience, min_delta=0.0, monitor="val/acc", mode="max") -> EarlyStopping:
    callback = EarlyStopping(patience=patience, min_delta=min_delta)
    callback.setup(RunInfo(monitor=monitor, mode=mode))
    return callback


class FakeWriter:
    def __init__(self):
        self.calls = []

    def add_scalar(self, tag, value, step):
        self.calls.append((tag, float(value), int(step)))

    def flush(self):
        pass

    def series(self, tag):
        return [(s, v) for t, v, s in self.calls if t == tag]


def count_steps(optimizer) -> list[int]:
    calls: list[int] = []
    optimizer.register_step_post_hook(lambda *_: calls.append(1))
    return calls


# --- batch modes ----------------------------------------------------------------------------------------

def test_full_batch_takes_one_step_per_epoch_and_the_loss_falls(data):
    model = data.model()
    trainer = sgd_trainer(model, lr=0.5)
    steps = count_steps(trainer.optimizer)
    loader = data.train(batch=data.train_x.shape[0])
    result = trainer.fit(loader, data.val(), 8)
    assert len(loader) == 1 and len(steps) == 8 == trainer.step
    losses = [h["train/loss"] for h in result.history]
    assert losses[-1] < losses[0] - 0.2, losses


def test_batch_size_full_resolves_to_the_training_split(tmp_path):
    from trainlab.build import loaders

    cfg = validate(composed("dataset=synthetic", "dataset.num_train=120", "dataset.val_size=20",
                            "trainer.batch_size=full", "trainer.drop_last=true"))
    bundle = loaders(cfg, CPU, channels_last=False)
    assert cfg.trainer.batch_size == "full"
    assert bundle.train.batch_size == bundle.train.num_samples == 100 and len(bundle.train) == 1
    (images, labels), = list(bundle.train)
    assert labels.shape[0] == 100


def test_batch_one_is_stochastic_gradient_descent(data):
    trainer = sgd_trainer(data.model(), lr=0.01)
    result = trainer.fit(data.train(batch=1, shuffle=True, n=40), data.val(), 1)
    assert trainer.step == 40 and result.samples_seen == 40
    assert math.isfinite(result.history[0]["train/loss"])


# --- clipping -------------------------------------------------------------------------------------------

def grads_at_step(optimizer) -> list[list[torch.Tensor]]:
    seen: list[list[torch.Tensor]] = []
    optimizer.register_step_pre_hook(
        lambda opt, *_: seen.append([p.grad.clone() for g in opt.param_groups for p in g["params"]]))
    return seen


def total_norm(grads) -> float:
    return torch.linalg.vector_norm(torch.stack([g.norm() for g in grads])).item()


def test_clip_grad_norm_bounds_what_the_optimizer_sees_and_logs_the_pre_clip_norm(data):
    clip = 0.05
    raw = sgd_trainer(data.model(), lr=1.0)
    unclipped = grads_at_step(raw.optimizer)
    raw.train_epoch(data.train(batch=64, n=128))
    writer = FakeWriter()
    trainer = sgd_trainer(data.model(), lr=1.0, clip_grad_norm=clip, writer=writer, log_every=1)
    assert trainer.settings.clip_grad_norm == clip
    seen = grads_at_step(trainer.optimizer)
    trainer.train_epoch(data.train(batch=64, n=128))
    assert total_norm(unclipped[0]) > 2 * clip  # the test means something: clipping had work to do
    for grads in seen:
        assert total_norm(grads) <= clip * (1 + 1e-5)
    # step 1 starts from the same weights and batch: its logged pre-clip norm is the unclipped one
    logged = writer.series("train/grad_norm")
    assert [s for s, _ in logged] == [1, 2]
    assert logged[0][1] == pytest.approx(total_norm(unclipped[0]), rel=1e-5)


def test_clip_grad_value_bounds_every_element(data):
    bound = 2.0 ** -10  # exact in float32
    trainer = sgd_trainer(data.model(), lr=1.0, clip_grad_value=bound)
    seen = grads_at_step(trainer.optimizer)
    trainer.train_epoch(data.train(batch=64, n=128))
    assert seen and all(g.abs().max().item() <= bound for grads in seen for g in grads)
    assert any(g.abs().max().item() == pytest.approx(bound) for g in seen[0])  # some were clipped


# --- accumulation ---------------------------------------------------------------------------------------

def test_accumulating_k_batches_of_b_equals_one_batch_of_k_times_b(data):
    big = sgd_trainer(data.model(), lr=0.5)
    big.train_epoch(data.train(batch=64, n=64))
    small = sgd_trainer(data.model(), lr=0.5, accumulate=4)
    small.train_epoch(data.train(batch=16, n=64))
    assert big.step == small.step == 1
    moved = False
    for (name, a), b in zip(big.model.named_parameters(), small.model.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6, msg=name)
        moved |= not torch.equal(a, data.model().state_dict()[name])
    assert moved


def test_the_last_partial_accumulation_still_steps(data):
    trainer = sgd_trainer(data.model(), accumulate=2)
    steps = count_steps(trainer.optimizer)
    trainer.train_epoch(data.train(batch=16, n=80))  # 5 micro-batches: 2 + 2 + 1
    assert len(steps) == 3 == trainer.step
    assert trainer.scheduler.last_epoch == 3  # the schedule steps with the optimizer


def test_the_last_partial_accumulation_is_a_mean_too(data):
    # 3 micro-batches of 16 with accumulate=2 are the steps of batches 32 and 16: the lone last
    # micro-batch's loss is scaled by 1/1, not 1/2
    big = sgd_trainer(data.model(), lr=0.5)
    big.train_epoch(data.train(batch=32, n=48))
    small = sgd_trainer(data.model(), lr=0.5, accumulate=2)
    small.train_epoch(data.train(batch=16, n=48))
    assert big.step == small.step == 2
    for (name, a), b in zip(big.model.named_parameters(), small.model.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6, msg=name)


# --- penalties ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("l1, l2", [(1e-2, 0.0), (0.0, 5e-2), (1e-2, 5e-2)])
def test_penalties_add_exactly_their_gradient_to_weights_only(data, l1, l2):
    plain = sgd_trainer(data.model())
    without = grads_at_step(plain.optimizer)
    plain.train_epoch(data.train(batch=64, n=64))
    model = data.model()
    writer = FakeWriter()
    penalized = sgd_trainer(model, penalty=build_penalty(model, l1, l2), writer=writer, log_every=1)
    with_penalty = grads_at_step(penalized.optimizer)
    penalized.train_epoch(data.train(batch=64, n=64))
    start = data.model()
    for (name, w), g0, g1 in zip(start.named_parameters(), without[0], with_penalty[0]):
        if w.ndim > 1:
            expected = l1 * torch.sign(w) + 2 * l2 * w
            torch.testing.assert_close(g1 - g0, expected, rtol=1e-4, atol=1e-7, msg=name)
        else:
            torch.testing.assert_close(g1, g0, rtol=0, atol=0, msg=name)  # biases: no penalty
    value = WeightPenalty(start, l1, l2)().item()
    (step, logged), = writer.series("train/penalty")
    assert step == 1 and logged == pytest.approx(value, rel=1e-5) and value > 0
    assert writer.series("train/loss")[0][1] == pytest.approx(
        plain_loss(start, data), rel=1e-5)  # train/loss stays the data loss


def plain_loss(model, data) -> float:
    with torch.no_grad():
        return F.cross_entropy(model(data.normalize(data.train_x[:64])), data.train_y[:64]).item()


def test_with_accumulation_the_penalty_is_added_once_per_optimizer_step(data):
    l1, l2 = 1e-2, 5e-2
    plain = sgd_trainer(data.model(), accumulate=4)
    without = grads_at_step(plain.optimizer)
    plain.train_epoch(data.train(batch=16, n=64))
    model = data.model()
    penalized = sgd_trainer(model, accumulate=4, penalty=build_penalty(model, l1, l2))
    with_penalty = grads_at_step(penalized.optimizer)
    penalized.train_epoch(data.train(batch=16, n=64))
    assert len(without) == len(with_penalty) == 1  # 4 micro-batches, one step
    for (name, w), g0, g1 in zip(data.model().named_parameters(), without[0], with_penalty[0]):
        expected = l1 * torch.sign(w) + 2 * l2 * w if w.ndim > 1 else torch.zeros_like(w)
        torch.testing.assert_close(g1 - g0, expected, rtol=1e-4, atol=1e-6, msg=name)


def test_no_penalty_object_when_both_coefficients_are_zero(data):
    assert build_penalty(data.model(), 0.0, 0.0) is None


# --- EMA ------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("every", [1, 2])
def test_ema_matches_a_hand_computation(data, every):
    decay = 0.8
    model = data.model()
    ema = EMA(decay=decay, every=every, evaluate=False)
    trainer = sgd_trainer(model, lr=0.5, callbacks={"ema": ema})
    after_steps: list[list[torch.Tensor]] = []
    trainer.optimizer.register_step_post_hook(
        lambda *_: after_steps.append([t.detach().clone() for t in [*model.parameters(), *model.buffers()]]))
    result = trainer.fit(data.train(batch=16, n=96), data.val(), 1)  # 6 steps
    assert trainer.step == 6 and "val_ema/acc" not in result.history[0]  # evaluate=false: not scored
    hand = None
    for step, weights in enumerate(after_steps, start=1):
        if step % every:
            continue
        hand = weights if hand is None else [decay * e + (1 - decay) * w for e, w in zip(hand, weights)]
    averaged = ema.averaged
    got = [*averaged.module.parameters(), *averaged.module.buffers()]
    assert len(got) == len(hand)
    for h, g in zip(hand, got):
        torch.testing.assert_close(g, h, rtol=1e-5, atol=1e-7)
    assert int(averaged.n_averaged) == 6 // every
    assert not torch.allclose(got[0], [*model.parameters()][0])  # the average lags the model


def test_build_ema_refuses_a_decay_outside_the_open_unit_interval(data):
    for decay in (0.0, 1.0):
        with pytest.raises(ValueError, match="must be in"):
            build_ema(data.model(), decay)
    assert build_ema(data.model(), 0.5).decay == 0.5


def test_ema_is_scored_and_select_best_keeps_ema_weights(data, tmp_path):
    cfg = validate(composed("callbacks.ema.decay=0.9", "callbacks.ema.select_best=true", "~callbacks.console",
                            "~callbacks.update_ratio", "~callbacks.images", "~callbacks.activation_stats"))
    monitor = effective_monitor(cfg.trainer, cfg.callbacks)
    assert monitor == "val_ema/acc"
    callbacks = build_callbacks(cfg, RunInfo(run_dir=tmp_path, monitor=monitor, mode=cfg.trainer.mode))
    assert set(callbacks) == {"checkpoint", "tensorboard", "ema"}  # early stopping is off (patience null)
    writer = FakeWriter()
    callbacks["tensorboard"].writer = writer
    saver = callbacks["checkpoint"]
    assert saver.best_weights == callbacks["ema"].weights  # the build wires best.pt to the EMA's weights
    model = data.model()
    trainer = sgd_trainer(model, lr=0.2, monitor=monitor, callbacks=callbacks)
    result = trainer.fit(data.train(batch=32, shuffle=True), data.val(), 2)
    assert {"val/acc", "val_ema/acc", "val_ema/loss"} <= result.history[-1].keys()
    assert [v for _, v in writer.series("val_ema/acc")] == [h["val_ema/acc"] for h in result.history]
    ema = callbacks["ema"].averaged
    best, last = load(saver.best_path), load(saver.last_path)
    assert saver.best_path == tmp_path / "checkpoints" / "best.pt"
    assert best["weights"] == "ema" and best["best"]["metric"] == "val_ema/acc"
    assert "ema" not in last and last["callbacks"]["ema"].keys() == ema.state_dict().keys()
    for key, value in ema.module.state_dict().items():
        if best["epoch"] == 2:
            assert torch.equal(best["model"][key], value), key
        assert torch.equal(last["callbacks"]["ema"][f"module.{key}"], value), key
    for key, value in model.state_dict().items():
        assert torch.equal(last["model"][key], value), key  # last.pt: the trained model, to resume from
    fresh = data.model(seed=9)
    fresh.load_state_dict(best["model"])
    assert sgd_trainer(fresh).evaluate(data.val())["acc"] == pytest.approx(best["metrics"]["val_ema/acc"])


def test_without_select_best_best_pt_keeps_the_model_weights():
    cfg = validate(composed("callbacks.ema.decay=0.9", "~callbacks.console"))
    monitor = effective_monitor(cfg.trainer, cfg.callbacks)
    assert monitor == "val/acc"
    callbacks = build_callbacks(cfg, RunInfo(run_dir=None, monitor=monitor, mode=cfg.trainer.mode))
    assert "ema" in callbacks and callbacks["checkpoint"].best_weights is None


def test_resume_restores_ema_and_early_stopping_exactly(data, tmp_path):
    def build(folder):
        model = data.model()
        optimizer = torch.optim.SGD(model.parameters(), lr=0.2, momentum=0.9)
        scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=40)
        callbacks = {"ema": EMA(decay=0.9, every=2), "checkpoint": checkpoint(folder),
                     "early_stopping": stopper(patience=50)}
        return Trainer(model, optimizer, scheduler, CPU, steps=StepSettings(clip_grad_norm=1.0, accumulate=2),
                       callbacks=callbacks)

    straight = build(tmp_path / "straight")
    straight.fit(data.train(batch=32, shuffle=True), data.val(), 4)
    first = build(tmp_path / "first")
    first.fit(data.train(batch=32, shuffle=True), data.val(), 2)
    resumed = build(tmp_path / "resumed")
    train = data.train(batch=32, shuffle=True)
    payload = load(tmp_path / "first" / "checkpoints" / "last.pt")
    assert {"ema", "early_stopping", "checkpoint"} <= payload["callbacks"].keys()
    assert "ema" not in payload and "early_stopping" not in payload  # callbacks' states live under "callbacks"
    start = resumed.load_state_dict(payload, train)
    assert start == 3
    assert resumed.callbacks["early_stopping"].state_dict() == first.callbacks["early_stopping"].state_dict()
    assert resumed.callbacks["checkpoint"].best() == first.callbacks["checkpoint"].best()
    resumed.fit(train, data.val(), 4, start_epoch=start)
    ours = load(tmp_path / "resumed" / "checkpoints" / "last.pt")
    reference = load(tmp_path / "straight" / "checkpoints" / "last.pt")
    assert ours["epoch"] == reference["epoch"] == 4
    assert ours["step"] == reference["step"]
    assert ours["best"] == reference["best"]
    assert ours["callbacks"]["early_stopping"] == reference["callbacks"]["early_stopping"]
    for part, theirs, mine in (("model", reference["model"], ours["model"]),
                               ("ema", reference["callbacks"]["ema"], ours["callbacks"]["ema"])):
        assert mine.keys() == theirs.keys() and theirs, part
        for key, tensor in theirs.items():
            assert torch.equal(mine[key], tensor), (part, key)


# --- early stopping and metric-driven schedules ---------------------------------------------------------

class Scripted(Trainer):
    """Validation returns a scripted sequence instead of scoring the model."""

    def __init__(self, *args, script, **kwargs):
        super().__init__(*args, **kwargs)
        self.script = list(script)

    def validate(self, val_loader):
        acc = self.script.pop(0)
        return {"val/acc": acc, "val/loss": 1.0 - acc}


def test_early_stopping_stops_at_the_right_epoch_and_says_why(data, tmp_path):
    model = data.model()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    trainer = Scripted(model, optimizer, constant(optimizer), CPU, script=[0.5, 0.6, 0.6, 0.605, 0.59, 0.9],
                       callbacks={"early_stopping": stopper(patience=2, min_delta=0.01),
                                  "checkpoint": checkpoint(tmp_path)})
    result = trainer.fit(data.train(batch=64, n=64), data.val(), 6)
    assert result.epochs_run == 4 and len(result.history) == 4
    assert result.stopped_early == "val/acc did not improve by more than 0.01 for 2 epochs (best 0.6 at epoch 2)"
    last = load(tmp_path / "checkpoints" / "last.pt")
    assert last["epoch"] == 4 and "early_stopping" not in last
    assert last["callbacks"]["early_stopping"] == {"best": 0.6, "best_epoch": 2, "bad_epochs": 2}


def test_early_stopping_on_a_loss_counts_decreases():
    early = stopper(patience=1, min_delta=0.0, monitor="val/loss", mode="min")  # monitor and mode from setup
    assert early.monitor == "val/loss" and early.mode == "min"
    assert early.update(1, {"val/loss": 1.0}) is None
    assert early.update(2, {"val/loss": 0.9}) is None
    assert "val/loss did not improve" in early.update(3, {"val/loss": 0.9})


def test_resuming_a_run_that_early_stopping_ended_is_refused():
    with pytest.raises(ConfigError, match="stopped early"):
        stopper(patience=2).load_state_dict({"best": 0.6, "best_epoch": 2, "bad_epochs": 2})
    going = stopper(patience=2)
    going.load_state_dict({"best": 0.6, "best_epoch": 2, "bad_epochs": 1})
    assert going.state_dict() == {"best": 0.6, "best_epoch": 2, "bad_epochs": 1}


class MetricSchedule:
    needs_metric = True

    def __init__(self):
        self.calls: list[tuple] = []

    def step(self, *args):
        self.calls.append(args)

    def state_dict(self):
        return {}


def test_a_schedule_that_needs_a_metric_steps_once_per_epoch_with_the_monitor(data):
    model = data.model()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    schedule = MetricSchedule()
    trainer = Scripted(model, optimizer, schedule, CPU, script=[0.3, 0.4, 0.35], monitor="val/loss")
    trainer.fit(data.train(batch=16, n=64), data.val(), 3)
    assert trainer.step == 12
    assert schedule.calls == [(pytest.approx(0.7),), (pytest.approx(0.6),), (pytest.approx(0.65),)]


# --- mixed precision, compile ---------------------------------------------------------------------------

def test_fp16_on_cpu_falls_back_to_fp32_with_a_notice(capsys, monkeypatch):
    from trainlab import runtime

    dtype, notices = resolve_amp("true", "fp16", CPU)
    assert dtype is None and len(notices) == 1 and "fp16 on CPU" in notices[0] and "fp32" in notices[0]
    monkeypatch.setattr(runtime, "cpu_has_bf16", lambda: False)  # bf16 asked for where it is emulated: told so
    dtype, notices = resolve_amp("true", "bf16", CPU)
    assert dtype == torch.bfloat16 and len(notices) == 1 and "no bf16 instructions" in notices[0]
    monkeypatch.setattr(runtime, "cpu_has_bf16", lambda: True)  # where the CPU has them: no notice
    assert resolve_amp("true", "bf16", CPU) == (torch.bfloat16, [])
    assert resolve_amp("auto", "fp16", CPU) == (None, [])
    assert resolve_amp("false", "bf16", CPU) == (None, [])
    assert capsys.readouterr().out == ""  # notices are returned, not printed


def test_fp16_trainer_has_a_grad_scaler_whose_state_is_in_the_state_dict(data):
    model = data.model()
    trainer = sgd_trainer(model, amp_dtype=torch.float16)
    assert trainer.scaler is not None
    scaler_state = {**trainer.scaler.state_dict(), "scale": 1024.0, "_growth_tracker": 3}
    trainer.scaler.load_state_dict(scaler_state)
    trainer.train_loader = data.train(batch=8)
    state = trainer.state_dict()
    assert state["scaler"]["scale"] == 1024.0 == trainer.scaler.state_dict()["scale"]
    fresh = sgd_trainer(data.model(seed=5), amp_dtype=torch.float16)
    fresh.load_state_dict({**state, "model": model.state_dict(), "epoch": 1}, data.train(batch=8))
    assert fresh.scaler.state_dict() == trainer.scaler.state_dict()  # and resuming restores it
    assert sgd_trainer(data.model(), amp_dtype=torch.bfloat16).scaler is None  # bf16 needs no scaling
    plain = sgd_trainer(data.model())
    assert plain.scaler is None and "scaler" not in plain.state_dict()


def test_compile_failure_falls_back_with_a_notice(monkeypatch, data, capsys):
    def broken(model):
        raise RuntimeError("no compiler here\nsecond line")

    monkeypatch.setattr(torch, "compile", broken)
    assert compile_model(data.model(), True) == (
        None, ["note: trainer.compile=true failed (RuntimeError: no compiler here); running eager"])
    assert compile_model(data.model(), False) == (None, [])
    assert capsys.readouterr().out == ""  # notices are returned, not printed


# --- config ---------------------------------------------------------------------------------------------

def composed(*overrides):
    with initialize_config_dir(str(CONFIGS), version_base="1.3"):
        return compose("train", overrides=list(overrides))


@pytest.mark.parametrize("override, key", [
    ("trainer.batch_size=half", "trainer.batch_size"),
    ("trainer.batch_size=0", "trainer.batch_size"),
    ("trainer.clip_grad_norm=0", "trainer.clip_grad_norm"),
    ("trainer.clip_grad_value=-1", "trainer.clip_grad_value"),
    ("trainer.accumulate=0", "trainer.accumulate"),
    ("trainer.l1=-0.1", "trainer.l1"),
    ("trainer.l2=abc", "trainer.l2"),
    ("trainer.amp_dtype=fp8", "trainer.amp_dtype"),
    ("trainer.compile=maybe", "trainer.compile"),
    ("trainer.monitor=val_ema/acc", "trainer.monitor"),
])
def test_bad_trainer_values_name_their_key(override, key):
    with pytest.raises(ConfigError) as error:
        validate(composed(override))
    message = str(error.value)
    assert message.startswith(key) and "\n" not in message, message


@pytest.mark.parametrize("override, key", [
    ("callbacks.ema.decay=1.0", "callbacks.ema.decay"),
    ("callbacks.ema.every=0", "callbacks.ema.every"),
    ("+callbacks.ema.bogus=1", "callbacks.ema.bogus"),
    ("callbacks.early_stopping.patience=0", "callbacks.early_stopping.patience"),
    ("callbacks.early_stopping.min_delta=-1", "callbacks.early_stopping.min_delta"),
    ("callbacks.ema.select_best=true", "callbacks.ema.select_best"),
])
def test_bad_callback_values_name_their_key(override, key):
    cfg = validate(composed(override))  # the schema passes them: each callback checks its own keys when built
    with pytest.raises(ConfigError) as error:
        check(cfg)
    message = str(error.value)
    assert message.startswith(key) and "\n" not in message, message


@pytest.mark.parametrize("override, key, where", [
    ("+trainer.ema.decay=0.9", "trainer.ema", "callbacks.ema"),
    ("+trainer.early_stopping.patience=3", "trainer.early_stopping", "callbacks.early_stopping"),
])
def test_the_old_trainer_keys_say_where_they_moved(override, key, where):
    with pytest.raises(ConfigError, match=rf"^{key}: moved to {where} "):
        validate(composed(override))


def test_monitor_on_ema_metrics_needs_the_ema_and_lists_what_exists():
    with pytest.raises(ConfigError, match=r"trainer.monitor=val_ema/loss: .*val/acc, val/loss$"):
        validate(composed("trainer.monitor=val_ema/loss", "trainer.mode=min"))
    checked = validate(composed("trainer.monitor=val_ema/loss", "trainer.mode=min", "callbacks.ema.decay=0.99"))
    assert checked.callbacks.ema.decay == 0.99
    assert effective_monitor(checked.trainer, checked.callbacks) == "val_ema/loss"
    with pytest.raises(ConfigError, match="trainer.mode=max"):
        validate(composed("trainer.monitor=val_ema/loss", "callbacks.ema.decay=0.99"))
    with pytest.raises(ConfigError, match="callbacks.ema.evaluate=false"):
        validate(composed("trainer.monitor=val_ema/loss", "trainer.mode=min", "callbacks.ema.decay=0.99",
                          "callbacks.ema.evaluate=false"))


def test_new_keys_have_their_types():
    checked = validate(composed("trainer.batch_size=full", "trainer.clip_grad_norm=1", "trainer.accumulate=3",
                                "callbacks.ema.decay=0.999", "callbacks.early_stopping.patience=3"))
    t = checked.trainer
    assert t.batch_size == "full" and t.clip_grad_norm == 1.0 and isinstance(t.clip_grad_norm, float)
    assert t.accumulate == 3
    built = build_callbacks(checked, RunInfo(run_dir=None, monitor=t.monitor, mode=t.mode))
    ema, early = built["ema"], built["early_stopping"]
    assert ema.decay == 0.999 and ema.every == 1 and ema.evaluate is True and ema.select_best is False
    assert early.patience == 3 and early.min_delta == 0.0 and (early.monitor, early.mode) == ("val/acc", "max")
    # both are off by default (decay / patience null): the build leaves them out
    defaults = validate(composed())
    assert not {"ema", "early_stopping"} & build_callbacks(defaults, RunInfo(run_dir=None)).keys()


# --- through the CLI ------------------------------------------------------------------------------------

@pytest.mark.slow
def test_cli_run_with_the_new_keys_writes_them_to_the_summary(tmp_path):
    result = run_trainlab(["train", "dataset=synthetic", "dataset.num_train=400", "dataset.val_size=100", "model=mlp",
                           "model.hidden=[32]", "trainer.epochs=6", "trainer.batch_size=32", "trainer.accumulate=2",
                           "trainer.clip_grad_norm=1.0", "trainer.l2=1e-4", "callbacks.ema.decay=0.9",
                           "callbacks.ema.select_best=true", "callbacks.early_stopping.patience=1",
                           "callbacks.early_stopping.min_delta=0.5", "callbacks.console.model_summary=false",
                           "trainer.log_every=2", "hydra.run.dir=run"], tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["ema"] == 0.9 and summary["best_from_ema"] is True
    assert summary["best"]["metric"] == "val_ema/acc"
    # nothing improves by more than 0.5 after epoch 1: stopped after epoch 2
    assert summary["epochs_run"] == 2 and summary["steps"] == 2 * math.ceil(math.ceil(300 / 32) / 2)
    assert summary["stopped_early"].startswith("val_ema/acc did not improve by more than 0.5 for 1 epochs")
    assert "early stopping after epoch 2" in result.stdout
    assert load(tmp_path / "run" / "checkpoints" / "best.pt")["weights"] == "ema"
    last = load(tmp_path / "run" / "checkpoints" / "last.pt")
    assert last["callbacks"]["early_stopping"]["bad_epochs"] == 1 and last["callbacks"]["ema"]["n_averaged"] == summary["steps"]
