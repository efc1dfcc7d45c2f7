"""The Trainer on a small synthetic dataset: it learns, logs what it should, evaluates and checkpoints right."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from trainlab.config import load_option

from trainlab.callbacks.base import RunInfo
from trainlab.callbacks.checkpoint import Checkpoint
from trainlab.callbacks.tensorboard import TensorBoard
from trainlab.checkpoint import load
from trainlab.data import split_train_val
from trainlab.data.datasets import make_synthetic
from trainlab.data.loader import DeviceLoader
from trainlab.data.preprocess import MeanStd
from trainlab.models.mlp import MLP
from trainlab.optim import build_optimizer, build_schedule
from trainlab.train import StepSettings, Trainer

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
CPU = torch.device("cpu")
NUM_CLASSES = 10
EPOCHS = 3
BATCH = 32
LOG_EVERY = 5
CHANCE = 1.0 / NUM_CLASSES


pytestmark = pytest.mark.usefixtures("one_thread")  # tiny models: one thread is faster on 2 shared cores


class FakeWriter:
    """Records what a SummaryWriter would be given."""

    def __init__(self):
        self.calls: list[tuple[str, float, int]] = []
        self.flushes = 0

    def add_scalar(self, tag, value, step):
        self.calls.append((tag, float(value), int(step)))

    def flush(self):
        self.flushes += 1

    def series(self, tag) -> list[tuple[int, float]]:
        return [(step, value) for t, value, step in self.calls if t == tag]


def logging_callbacks(writer: FakeWriter, folder=None) -> dict:
    """The TensorBoard callback writing into `writer`, and (with a folder) the checkpoint callback."""
    tensorboard = TensorBoard()
    tensorboard.setup(RunInfo(run_dir=None))
    tensorboard.writer = writer
    callbacks = {"tensorboard": tensorboard}
    if folder is not None:
        checkpoint = Checkpoint()
        checkpoint.setup(RunInfo(run_dir=folder, monitor="val/acc", mode="max"))
        callbacks["checkpoint"] = checkpoint
    return callbacks


class Data:
    def __init__(self):
        dataset = make_synthetic(num_train=600, num_test=100, generator_seed=0)
        self.train_x, self.train_y, self.val_x, self.val_y = split_train_val(dataset, 100, None, seed=0)
        self.normalize = MeanStd().fit(self.train_x)
        self.input_shape = dataset.input_shape

    def train_loader(self, seed=1):
        return DeviceLoader(self.train_x, self.train_y, BATCH, normalize=self.normalize, shuffle=True, seed=seed)

    def val_loader(self):
        return DeviceLoader(self.val_x, self.val_y, 64, normalize=self.normalize)  # 100 = 64 + 36

    def model(self, seed=0):
        torch.manual_seed(seed)
        return MLP(self.input_shape, NUM_CLASSES, hidden=(64,))


@pytest.fixture(scope="module")
def data() -> Data:
    return Data()


@pytest.fixture(scope="module")
def fitted(data, tmp_path_factory):
    """One 3-epoch Adam + cosine run, with a fake writer and a checkpointer, shared by the tests below."""
    train, val = data.train_loader(), data.val_loader()
    model = data.model()
    optimizer = build_optimizer(load_option("optimizer", "adam"), model)
    scheduler = build_schedule(load_option("schedule", "cosine"), optimizer, len(train), EPOCHS)
    writer = FakeWriter()
    callbacks = logging_callbacks(writer, tmp_path_factory.mktemp("run"))
    checkpointer = callbacks["checkpoint"]
    trainer = Trainer(model, optimizer, scheduler, CPU, log_every=LOG_EVERY, callbacks=callbacks)
    before = trainer.evaluate(val)
    result = trainer.fit(train, val, EPOCHS)
    return dict(trainer=trainer, writer=writer, checkpointer=checkpointer, before=before, result=result,
                train=train, val=val, base_lr=optimizer.defaults["lr"])


def steps_per_epoch(data) -> int:
    return math.ceil(data.train_x.shape[0] / BATCH)


def test_fit_learns(fitted):
    before, history = fitted["before"], fitted["result"].history
    assert abs(before["loss"] - math.log(NUM_CLASSES)) < 0.3  # an untrained model is near uniform
    assert history[-1]["val/loss"] < before["loss"] - 0.3
    assert history[-1]["val/acc"] >= 4 * CHANCE
    assert history[-1]["train/acc"] >= 4 * CHANCE
    assert history[-1]["train/loss"] < history[0]["train/loss"]


def test_fit_result_bookkeeping(fitted, data):
    result, trainer = fitted["result"], fitted["trainer"]
    spe = steps_per_epoch(data)
    assert result.epochs_run == EPOCHS
    assert [h["epoch"] for h in result.history] == list(range(1, EPOCHS + 1))
    assert result.samples_seen == EPOCHS * data.train_x.shape[0]
    assert trainer.step == EPOCHS * spe
    assert result.train_seconds > 0 and result.eval_seconds > 0
    # the lr of each epoch's last step follows the cosine schedule over all steps (min_lr 0)
    total = EPOCHS * spe
    for h in result.history:
        t = h["epoch"] * spe - 1
        assert h["lr"] == pytest.approx(fitted["base_lr"] * (1 + math.cos(math.pi * t / total)) / 2, abs=1e-9)


def test_writer_gets_train_loss_and_lr_at_log_intervals(fitted, data):
    writer, base_lr = fitted["writer"], fitted["base_lr"]
    spe = steps_per_epoch(data)
    total = EPOCHS * spe
    epoch_ends = {spe * e for e in range(1, EPOCHS + 1)}
    expected_steps = sorted(set(range(LOG_EVERY, total + 1, LOG_EVERY)) | epoch_ends)
    loss = writer.series("train/loss")
    lr = writer.series("lr")
    assert [s for s, _ in loss] == expected_steps
    assert [s for s, _ in lr] == expected_steps
    # the lr logged at step s is the one that step s used: after s - 1 scheduler steps
    for step, value in lr:
        assert value == pytest.approx(base_lr * (1 + math.cos(math.pi * (step - 1) / total)) / 2, abs=1e-12)
    assert all(math.isfinite(v) and v > 0 for _, v in loss)
    assert abs(loss[0][1] - math.log(NUM_CLASSES)) < 0.5
    assert writer.flushes >= 1


def test_writer_gets_epoch_metrics(fitted, data):
    writer, history = fitted["writer"], fitted["result"].history
    spe = steps_per_epoch(data)
    ends = [spe * e for e in range(1, EPOCHS + 1)]
    for tag in ("train/acc", "val/loss", "val/acc"):
        series = writer.series(tag)
        assert [s for s, _ in series] == ends, tag
        assert [v for _, v in series] == pytest.approx([h[tag] for h in history]), tag
    assert writer.series("epoch") == [(end, float(e)) for e, end in enumerate(ends, start=1)]


def manual_metrics(model, images, labels, normalize):
    model.eval()
    with torch.no_grad():
        logits = model(normalize(images))
    correct = int((logits.argmax(dim=1) == labels).sum())
    return correct / labels.numel(), F.cross_entropy(logits, labels).item()


def test_evaluate_matches_a_manual_computation(fitted, data):
    trainer = fitted["trainer"]
    got = trainer.evaluate(data.val_loader())
    acc, loss = manual_metrics(trainer.model, data.val_x, data.val_y, data.normalize)
    assert got["acc"] == pytest.approx(acc, abs=1e-12)
    assert got["loss"] == pytest.approx(loss, rel=1e-5)
    assert got["acc"] == fitted["result"].history[-1]["val/acc"]  # the model's final state was scored


def test_evaluate_ignores_label_smoothing(data):
    model = data.model(seed=3)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    scheduler = torch.optim.lr_scheduler.ConstantLR(optimizer, factor=1.0, total_iters=0)
    smoothed = Trainer(model, optimizer, scheduler, CPU, steps=StepSettings(label_smoothing=0.3))
    got = smoothed.evaluate(data.val_loader())
    acc, loss = manual_metrics(model, data.val_x, data.val_y, data.normalize)
    assert got["loss"] == pytest.approx(loss, rel=1e-5)
    assert got["acc"] == pytest.approx(acc, abs=1e-12)


def test_best_checkpoint_reloads_to_the_recorded_val_acc(fitted, data):
    checkpointer, history = fitted["checkpointer"], fitted["result"].history
    accs = [h["val/acc"] for h in history]
    best = checkpointer.best()
    assert best["value"] == max(accs)
    assert best["epoch"] == accs.index(max(accs)) + 1  # the first epoch reaching the best value
    saved = load(checkpointer.best_path)
    assert saved["epoch"] == best["epoch"] and saved["metrics"]["val/acc"] == best["value"]
    fresh = data.model(seed=123)
    fresh.load_state_dict(saved["model"])
    optimizer = torch.optim.SGD(fresh.parameters(), lr=0.0)
    scheduler = torch.optim.lr_scheduler.ConstantLR(optimizer, factor=1.0, total_iters=0)
    reloaded = Trainer(fresh, optimizer, scheduler, CPU).evaluate(data.val_loader())
    assert reloaded["acc"] == pytest.approx(best["value"], abs=1e-12)
    assert reloaded["loss"] == pytest.approx(history[best["epoch"] - 1]["val/loss"], rel=1e-5)


def test_last_checkpoint_holds_the_resume_state(fitted, data):
    checkpointer = fitted["checkpointer"]
    last = load(checkpointer.last_path)
    assert last["epoch"] == EPOCHS
    assert last["step"] == EPOCHS * steps_per_epoch(data)
    assert last["optimizer"]["state"]  # Adam moments exist after training
    assert last["scheduler"]["last_epoch"] == last["step"]
    model = fitted["trainer"].model
    for key, value in model.state_dict().items():
        assert torch.equal(last["model"][key], value), key


def test_log_every_larger_than_an_epoch_logs_at_epoch_ends_only(data):
    train = data.train_loader()
    model = data.model()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    scheduler = torch.optim.lr_scheduler.ConstantLR(optimizer, factor=1.0, total_iters=0)
    writer = FakeWriter()
    trainer = Trainer(model, optimizer, scheduler, CPU, log_every=10_000, callbacks=logging_callbacks(writer))
    result = trainer.fit(train, data.val_loader(), 2)
    spe = steps_per_epoch(data)
    assert [s for s, _ in writer.series("train/loss")] == [spe, 2 * spe]
    assert [v for _, v in writer.series("lr")] == pytest.approx([0.01, 0.01])
    assert result.epochs_run == 2 and trainer.step == 2 * spe
