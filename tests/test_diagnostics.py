"""Diagnostics in every run: update/weight ratios, pictures (augmented batch, confusion matrices), the
TensorBoard extras (config text, train-vs-val layout), and what a NaN loss says about where it came from."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from trainlab.callbacks.base import Callback, RunInfo
from trainlab.callbacks.tensorboard import TensorBoard
from trainlab.callbacks.update_ratio import UpdateRatio
from trainlab.errors import TrainingDiverged
from trainlab.evaluate import confusion_matrix
from trainlab.train import StepSettings, Trainer

CPU = torch.device("cpu")
pytestmark = pytest.mark.usefixtures("one_thread")


class Batches:
    def __init__(self, batches):
        self.batches, self.generator = batches, torch.Generator().manual_seed(0)
        self.num_samples = sum(len(y) for _, y in batches)

    def __iter__(self):
        return iter(self.batches)

    def __len__(self):
        return len(self.batches)


def data(n=6, batch=8, dim=4, classes=3, seed=0):
    gen = torch.Generator().manual_seed(seed)
    return Batches([(torch.randn(batch, dim, generator=gen), torch.randint(0, classes, (batch,), generator=gen))
                    for _ in range(n)])


class FakeWriter:
    def __init__(self):
        self.scalars = []

    def add_scalar(self, tag, value, step):
        self.scalars.append((tag, float(value), step))

    def add_custom_scalars(self, layout):
        pass

    def flush(self):
        pass

    def close(self):
        pass


def board():
    tensorboard = TensorBoard()
    tensorboard.setup(RunInfo(run_dir=None))
    tensorboard.writer = FakeWriter()
    return tensorboard


def trainer_with(callbacks, lr=0.1, model=None, log_every=2, **settings):
    torch.manual_seed(0)
    model = model or nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 3))
    optimizer = torch.optim.SGD(model.parameters(), lr=lr)
    scheduler = torch.optim.lr_scheduler.ConstantLR(optimizer, factor=1.0, total_iters=0)
    for callback in callbacks.values():
        if not hasattr(callback, "run"):
            callback.setup(RunInfo(run_dir=None))
    return Trainer(model, optimizer, scheduler, CPU, log_every=log_every, callbacks=callbacks,
                   steps=StepSettings(**settings))


class Snapshots(Callback):
    """Records the weights after every step (what the ratio is computed from)."""

    order = 1

    def __init__(self):
        self.after = {}

    def on_step(self, trainer):
        self.after[trainer.step] = [p.detach().clone() for n, p in trainer.model.named_parameters() if p.ndim > 1]


# ---------------------------------------------------------------- update / weight ratio


def test_the_update_ratio_is_the_norm_of_the_step_over_the_norm_of_the_weights():
    ratio, snaps, tb = UpdateRatio(every=2, per_tensor=True), Snapshots(), board()
    trainer = trainer_with({"update_ratio": ratio, "snapshots": snaps, "tensorboard": tb})
    trainer.fit(data(), data(2), epochs=1)
    logged = {(tag, step): value for tag, value, step in tb.writer.scalars if tag.startswith("update_ratio/")}
    assert sorted({step for _, step in logged}) == [2, 4, 6]  # measured every 2 steps
    for step in (2, 4, 6):
        before, after = snaps.after[step - 1], snaps.after[step]
        expected = [float((a - b).norm() / b.norm()) for a, b in zip(after, before)]
        got = [logged[(f"update_ratio/{name}", step)] for name in ("0.weight", "2.weight")]
        assert got == pytest.approx(expected, rel=1e-5)
        assert logged[("update_ratio/median", step)] == pytest.approx(sum(expected) / 2, rel=1e-5)  # of two
        assert 0 < logged[("update_ratio/median", step)] < 1


class Notes(Callback):
    """Stands in for the console: records what is said."""

    def __init__(self):
        self.lines = []

    def info(self, message):
        self.lines.append(message)


def test_a_far_off_ratio_is_said_once_and_a_healthy_one_not_at_all(monkeypatch):
    import trainlab.callbacks.console as console_module

    notes = Notes()
    monkeypatch.setattr(console_module, "Console", Notes)  # find(Console) finds the stand-in
    trainer = trainer_with({"update_ratio": UpdateRatio(every=1), "notes": notes}, lr=50.0, log_every=1)
    trainer.fit(data(), data(2), epochs=3)
    said = [line for line in notes.lines if "update/weight ratio" in line]
    assert len(said) == 1 and "too high" in said[0] and "lower optimizer.lr" in said[0]
    quiet = Notes()
    monkeypatch.setattr(console_module, "Console", Notes)
    healthy = trainer_with({"update_ratio": UpdateRatio(every=1, low=1e-9, high=10.0), "notes": quiet}, log_every=1)
    healthy.fit(data(), data(2), epochs=2)
    assert quiet.lines == []


def test_bad_update_ratio_keys_are_refused():
    from trainlab.checks import KeyProblem

    with pytest.raises(KeyProblem, match="high=0.0001: must be above"):
        UpdateRatio(low=1e-3, high=1e-4)


# ---------------------------------------------------------------- pictures


def test_the_confusion_matrix_counts_true_against_predicted():
    class Fixed(nn.Module):
        def forward(self, x):  # predicts class x[:, 0]
            return nn.functional.one_hot(x[:, 0].long(), 3).float()

    x = torch.tensor([[0.0], [1.0], [2.0], [2.0], [1.0]])
    y = torch.tensor([0, 1, 1, 2, 0])
    counts = confusion_matrix(Fixed(), [(x, y)], CPU, 3)
    assert counts.tolist() == [[1, 1, 0], [0, 1, 1], [0, 0, 1]]


def test_a_run_folder_gets_confusion_pictures_and_tensorboard_gets_the_extras(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from trainlab.build import build_callbacks, build_experiment, build_trainer
    from trainlab.config import validate
    from trainlab.build import check
    from test_seams import composed

    cfg = check(validate(composed("dataset=synthetic", "dataset.num_train=300", "dataset.val_size=60",
                                  "trainer.epochs=1", "model.channels=[8,16]", "augmentation=standard",
                                  "callbacks.console.model_summary=false")))
    experiment = build_experiment(cfg)
    run = RunInfo(run_dir=tmp_path, config={"seed": 0, "trainer": {"batch_size": 128, "epochs": 1},
                                             "optimizer": {"lr": 1e-3}},
                  summary={"params": 1, "trainable_params": 1, "device": "cpu", "train_size": 1, "val_size": 1,
                           "test_size": 1, "choices": {}},
                  data=experiment.data, input_shape=experiment.data.input_shape)
    trainer = build_trainer(experiment, build_callbacks(cfg, run))
    trainer.fit(experiment.data.train, experiment.data.val, 1)
    summary = {"steps": trainer.step, "best": {"metric": "val/acc", "value": 0.5, "epoch": 1},
               "test": {"loss": 1.0, "acc": 0.5},
               "epochs_run": 1, "epochs": 1, "time": {"train_s": 1.0}, "train_samples_per_s": 1.0, "device": "cpu",
               "params": 1, "run_dir": str(tmp_path)}
    trainer.callbacks.fire("on_test_end", trainer, summary)
    assert (tmp_path / "confusion_val.png").stat().st_size > 1000 and (tmp_path / "confusion_test.png").is_file()
    events = EventAccumulator(str(tmp_path / "tensorboard"), size_guidance={"images": 0, "tensors": 0})
    events.Reload()
    tags = events.Tags()
    assert {"images/augmented_batch", "confusion/val", "confusion/test"} <= set(tags["images"])
    assert "config/text_summary" in tags["tensors"] and "custom_scalars__config__" in tags["tensors"]
    grid = events.Images("images/augmented_batch")[0]
    assert grid.width > 28 * 4 and grid.height > 28


def test_the_test_pass_counts_the_confusion_pictures_counts_so_they_need_no_second_pass():
    from trainlab.build import build_callbacks, build_experiment, build_trainer, check
    from trainlab.commands.train import test_best_weights
    from trainlab.config import validate
    from test_seams import composed

    cfg = check(validate(composed("dataset=synthetic", "dataset.num_train=200", "dataset.val_size=40",
                                  "dataset.num_test=90", "trainer.epochs=1", "model.channels=[8,16]",
                                  "~callbacks.console")))
    experiment = build_experiment(cfg)
    run = RunInfo(data=experiment.data, input_shape=experiment.data.input_shape)
    trainer = build_trainer(experiment, build_callbacks(cfg, run))
    trainer.fit(experiment.data.train, experiment.data.val, 1)
    results = test_best_weights(trainer, experiment, run)
    counts = run.test_confusion
    assert "confusion" not in results["test"]  # summary.json gets figures, not a tensor
    assert counts.sum().item() == 90 and counts.diagonal().sum().item() / 90 == pytest.approx(results["test"]["acc"])
    assert torch.equal(counts, confusion_matrix(trainer.forward, experiment.data.test, CPU, 10))


# ---------------------------------------------------------------- a NaN loss: where and what to do


def test_first_nonfinite_names_the_weights_or_the_first_layer_in_forward_order():
    from trainlab.diagnostics.nonfinite import first_nonfinite

    model = nn.Sequential(nn.Linear(4, 4), nn.ReLU(), nn.Linear(4, 3))
    x, y = torch.randn(5, 4), torch.randint(0, 3, (5,))

    def loss_of():
        return nn.functional.cross_entropy(model(x), y)

    assert first_nonfinite(model, loss_of) is None
    with torch.no_grad():
        model[2].weight[0, 0] = float("nan")
    assert first_nonfinite(model, loss_of) == "weights of 2.weight"
    with torch.no_grad():
        model[2].weight[0, 0] = 0.0
    x[0, 0] = float("inf")
    assert first_nonfinite(model, loss_of) == "output of 0"


def test_a_diverged_run_says_step_epoch_lr_and_layer():
    trainer = trainer_with({}, lr=1e8, log_every=3)
    with pytest.raises(TrainingDiverged) as raised:
        trainer.fit(data(n=30, batch=8), data(2), epochs=2)
    details = raised.value.details
    assert details["epoch"] == 1 and details["step"] % 3 == 0 and details["lr"] == pytest.approx(1e8)
    assert details["layer"] and details["layer"].startswith(("weights of", "output of", "gradient of"))
    assert f"step {details['step']} (epoch 1, lr 1e+08)" in str(raised.value) and "lower optimizer.lr" in str(raised.value)


def test_skip_nonfinite_skips_a_bad_batch_and_stops_when_they_persist():
    batches = data(n=6)
    batches.batches[2] = (torch.full((8, 4), float("nan")), batches.batches[2][1])
    trainer = trainer_with({}, skip_nonfinite=True)
    result = trainer.fit(batches, data(2), epochs=1)
    assert trainer.skipped == 1 and trainer.step == 5 and math.isfinite(result.history[-1]["train/loss"])
    all_bad = Batches([(torch.full((8, 4), float("nan")), torch.zeros(8, dtype=torch.long)) for _ in range(12)])
    stopping = trainer_with({}, skip_nonfinite=True)
    with pytest.raises(TrainingDiverged, match="10 batches in a row"):
        stopping.fit(all_bad, data(2), epochs=1)
    assert stopping.skipped == 10 and stopping.step == 0


# ---------------------------------------------------------------- activation statistics and histograms


class HistogramWriter(FakeWriter):
    def __init__(self):
        super().__init__()
        self.histograms = []

    def add_histogram(self, tag, values, step):
        self.histograms.append((tag, values.numel(), step))


def test_activation_stats_are_those_of_the_training_batch_of_that_step():
    from trainlab.callbacks.activation_stats import ActivationStats
    from trainlab.diagnostics.activations import measure

    tb = board()
    batches = data(n=6)
    trainer = trainer_with({"activation_stats": ActivationStats(every=2), "tensorboard": tb}, lr=0.0)
    trainer.fit(batches, data(2), epochs=1)
    logged = {(tag, step): value for tag, value, step in tb.writer.scalars if tag.startswith("activations/")}
    assert sorted({step for _, step in logged}) == [2, 4, 6]
    for step in (2, 4, 6):  # lr 0: the weights are those of the start, so the batch alone decides
        rows, _ = measure(trainer.model, batches.batches[step - 1][0])
        (row,) = rows  # one ReLU layer
        assert logged[(f"activations/{row['name']}/std", step)] == pytest.approx(row["std"], rel=1e-5)
        assert logged[(f"activations/{row['name']}/dead", step)] == pytest.approx(row["dead"])


def test_histograms_of_weights_gradients_and_activations_at_their_interval():
    from trainlab.callbacks.histograms import Histograms

    tb = board()
    tb.writer = HistogramWriter()
    trainer = trainer_with({"histograms": Histograms(every=3), "tensorboard": tb})
    trainer.fit(data(n=6), data(2), epochs=1)
    seen = {(tag, step) for tag, _, step in tb.writer.histograms}
    for step in (3, 6):
        assert {(f"weights/{n}", step) for n in ("0.weight", "0.bias", "2.weight", "2.bias")} <= seen
        assert (f"gradients/0.weight", step) in seen and ("activations/1", step) in seen
    assert {step for _, step in seen} == {3, 6}
