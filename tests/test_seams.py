"""The seams: one build for every command, callbacks in the Trainer, every check before anything is
touched, resume across config evolution, and the small truths (divergence at the log interval, lr curves)."""

from __future__ import annotations

import math

import pytest
import torch
from omegaconf import OmegaConf
from torch import nn

from trainlab.callbacks.base import Callback, CallbackList
from trainlab.config import load_option, validate
from trainlab.data.datasets import describe
from trainlab.errors import ConfigError, TrainingDiverged
from trainlab.train import Trainer

CPU = torch.device("cpu")
pytestmark = pytest.mark.usefixtures("one_thread")


def composed(*overrides: str):
    from hydra import compose, initialize_config_dir

    from trainlab.commands import config_dir

    with initialize_config_dir(version_base="1.3", config_dir=str(config_dir())):
        return compose("train", overrides=list(overrides))


class Batches:
    """A loader of fixed batches with the generator the Trainer expects."""

    def __init__(self, batches):
        self.batches = batches
        self.generator = torch.Generator().manual_seed(0)
        self.num_samples = sum(len(y) for _, y in batches)

    def __iter__(self):
        return iter(self.batches)

    def __len__(self):
        return len(self.batches)


def tiny_data(n_batches=6, batch=8):
    gen = torch.Generator().manual_seed(0)
    return Batches([(torch.randn(batch, 4, generator=gen), torch.randint(0, 3, (batch,), generator=gen))
                    for _ in range(n_batches)])


def tiny_trainer(callbacks=None, log_every=2, model=None):
    torch.manual_seed(0)
    model = model or nn.Linear(4, 3)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    scheduler = torch.optim.lr_scheduler.LinearLR(optimizer, start_factor=1.0, end_factor=0.1, total_iters=12)
    return Trainer(model, optimizer, scheduler, CPU, log_every=log_every, callbacks=callbacks)


class Recorder(Callback):
    def __init__(self):
        self.events, self.steps, self.logs = [], 0, []

    def on_fit_start(self, trainer, start_epoch):
        self.events.append("fit_start")

    def on_epoch_start(self, trainer, epoch, epochs):
        self.events.append(f"epoch_start {epoch}")

    def on_step(self, trainer):
        self.steps += 1

    def on_log(self, trainer, scalars):
        self.logs.append((trainer.step, dict(scalars)))

    def on_validation_end(self, trainer, metrics):
        metrics["val/extra"] = 1.0  # a callback may add metrics

    def on_epoch_end(self, trainer, end):
        self.events.append(f"epoch_end {end.epoch} extra={end.metrics['val/extra']}")

    def on_fit_end(self, trainer, result, error):
        self.events.append(f"fit_end {type(error).__name__ if error else None}")

    def state_dict(self):
        return {"steps": self.steps}

    def load_state_dict(self, state):
        self.steps = state["steps"]


class EpochOnly(Callback):
    pass


# ---------------------------------------------------------------- callbacks


def test_events_arrive_in_order_with_metrics_and_log_values():
    recorder = Recorder()
    trainer = tiny_trainer({"recorder": recorder})
    trainer.fit(tiny_data(), tiny_data(2), epochs=2)
    assert recorder.events == ["fit_start", "epoch_start 1", "epoch_end 1 extra=1.0", "epoch_start 2",
                               "epoch_end 2 extra=1.0", "fit_end None"]
    assert recorder.steps == 12 == trainer.step
    assert [step for step, _ in recorder.logs] == [2, 4, 6, 8, 10, 12]
    assert all(set(values) >= {"train/loss", "lr"} and math.isfinite(values["train/loss"])
               for _, values in recorder.logs)
    # the lr a log point carries is the one its step used (LinearLR: 1.0 -> 0.1 over 12 steps)
    assert recorder.logs[0][1]["lr"] == pytest.approx(0.1 * (1 - 0.9 * 1 / 12))


def test_only_callbacks_that_use_on_step_are_called_per_step():
    callbacks = CallbackList({"a": Recorder(), "b": EpochOnly()})
    assert [type(cb).__name__ for cb in callbacks.stepping] == ["Recorder"]


def test_callbacks_are_sorted_by_order():
    first, last = EpochOnly(), EpochOnly()
    first.order, last.order = 1, 99
    assert list(CallbackList({"z": last, "a": first}).named) == ["a", "z"]


def test_fit_end_hears_the_error_that_ended_fit():
    recorder = Recorder()
    broken = tiny_data()
    broken.batches[3] = (torch.full((8, 4), float("nan")), broken.batches[3][1])
    trainer = tiny_trainer({"recorder": recorder}, log_every=2)
    with pytest.raises(TrainingDiverged):
        trainer.fit(broken, tiny_data(2), epochs=2)
    assert recorder.events[-1] == "fit_end TrainingDiverged"


def test_callback_state_is_in_the_trainer_state_and_comes_back():
    recorder = Recorder()
    trainer = tiny_trainer({"recorder": recorder})
    loader = tiny_data()
    trainer.fit(loader, tiny_data(2), epochs=1)
    state = {**trainer.state_dict(), "model": trainer.model.state_dict(), "epoch": 1}
    assert state["callbacks"]["recorder"] == {"steps": 6}
    again = Recorder()
    other = tiny_trainer({"recorder": again})
    assert other.load_state_dict(state, loader) == 2
    assert again.steps == 6 and other.step == 6


# ---------------------------------------------------------------- small truths


def test_a_nan_loss_stops_at_the_log_interval_where_it_is_first_read():
    broken = tiny_data(n_batches=20)
    for i in range(3, 20):  # from the 4th batch on the loss is NaN
        broken.batches[i] = (torch.full((8, 4), float("nan")), broken.batches[i][1])
    trainer = tiny_trainer(log_every=2)
    with pytest.raises(TrainingDiverged, match="at the log point of step 4 "):
        trainer.fit(broken, tiny_data(2), epochs=1)
    assert trainer.step == 4  # not the 20 steps of the epoch


def test_the_epoch_lr_is_the_one_its_last_step_used():
    trainer = tiny_trainer(log_every=100)
    result = trainer.fit(tiny_data(), tiny_data(2), epochs=2)
    # LinearLR from 0.1 to 0.01 over 12 steps: step s (1-based) uses 0.1 * (1 - 0.9 * (s - 1) / 12)
    assert [h["lr"] for h in result.history] == pytest.approx([0.1 * (1 - 0.9 * 5 / 12), 0.1 * (1 - 0.9 * 11 / 12)])
    assert trainer.lr == pytest.approx(0.01)  # what the console used to show: the rate after the last step


# ---------------------------------------------------------------- every check first


@pytest.mark.parametrize("overrides, message", [
    (["optimizer.lr=-1"], "optimizer.lr=-1: must be a number > 0"),
    (["schedule=step", "schedule.step_epochs=0"], "schedule.step_epochs=0"),
    (["augmentation=standard", "augmentation.ops.crop.padding=-1"], "augmentation.ops.crop"),
    (["model=resnet20", "model.depth=21"], "model.depth=21"),
    (["model=torchvision", "model.name=alexnet", "model.small_input=false"], "model.name=alexnet: cannot take [1, 28, 28] inputs"),
    (["callbacks.ema.decay=2"], "callbacks.ema.decay=2: must be null (off) or a number in (0, 1)"),
    (["+callbacks.ema.decy=2"], "callbacks.ema.decy: unknown key; known keys: decay, every"),
    (["callbacks.early_stopping.patience=0"], "callbacks.early_stopping.patience=0"),
    (["callbacks.ema.select_best=true"], "callbacks.ema.select_best=true: needs the EMA on"),
    (["dataset=imagefolder", "dataset.channels=2"], "dataset.channels=2"),
    (["dataset=cifar100", "dataset.label_mode=medium"], "dataset.label_mode='medium'"),
])
def test_the_dry_build_names_the_key_before_any_file_is_read(overrides, message, monkeypatch):
    import trainlab.data.datasets as datasets
    from trainlab.build import check

    def no_reading(*args, **kwargs):
        raise AssertionError("a dataset was read during the check")

    monkeypatch.setattr(datasets, "load_dataset", no_reading)
    with pytest.raises(ConfigError) as error:
        check(validate(composed(*overrides)))
    assert message in str(error.value)


def test_every_shipped_option_passes_the_dry_build():
    from trainlab.build import check
    from trainlab.commands import config_dir

    for group in ("model", "optimizer", "schedule", "augmentation", "init", "preprocess", "tta", "experiment"):
        for option in sorted(p.stem for p in (config_dir() / group).glob("*.yaml")):
            extra = ["dataset=cifar10"] if group in ("augmentation",) else []
            if option in ("linear_probe", "finetune_top", "finetune_all"):
                continue  # they need model.pretrained: a file
            check(validate(composed(f"{group}={option}", *extra)))


def test_describe_gives_the_shape_without_files(tmp_path):
    assert describe(OmegaConf.create({"name": "fashion_mnist"})).input_shape == (1, 28, 28)
    assert describe(OmegaConf.create({"name": "cifar100", "label_mode": "coarse"})).num_classes == 20
    folder = describe(OmegaConf.create({"name": "imagefolder", "root": str(tmp_path / "none"), "image_size": [24, 32],
                                        "channels": 1}))
    assert folder.input_shape == (1, 24, 32) and folder.train_examples is None
    assert describe(load_option("dataset", "synthetic")).train_examples == 2000


def test_moved_trainer_keys_say_where_they_went():
    cfg = composed()
    OmegaConf.set_struct(cfg, False)
    cfg.trainer.ema = {"decay": 0.9}
    with pytest.raises(ConfigError, match=r"^trainer\.ema: moved to callbacks\.ema"):
        validate(cfg)


# ---------------------------------------------------------------- resume across config evolution


def test_a_key_added_after_the_checkpoint_is_fine_at_its_default_and_named_otherwise():
    from trainlab.resume import differences

    defaults = OmegaConf.to_container(validate(composed()), resolve=True)
    theirs = OmegaConf.to_container(validate(composed()), resolve=True)
    del theirs["model"]["dropout"]  # the checkpoint's run predates model.dropout
    del theirs["callbacks"]["ema"]["every"]
    assert differences(defaults, theirs, defaults) == []
    ours = OmegaConf.to_container(validate(composed("model.dropout=0.5")), resolve=True)
    assert differences(ours, theirs, defaults) == [("model.dropout", 0.5, "<absent>")]
    assert differences(defaults, theirs, None)[0][0] == "callbacks.ema.every"  # no defaults known: named


def test_keys_marked_free_may_differ_and_others_may_not():
    from trainlab.resume import differences

    base = OmegaConf.to_container(validate(composed()), resolve=True)
    changed = OmegaConf.to_container(validate(composed(
        "trainer.device=cpu", "trainer.log_every=7", "dataset.root=elsewhere", "callbacks.console.progress=false",
        "callbacks.tensorboard.flush_secs=5", "model.pretrained=x.pt")), resolve=True)
    assert differences(changed, base, None) == []
    assert [key for key, *_ in differences(OmegaConf.to_container(
        validate(composed("callbacks.ema.decay=0.9", "trainer.epochs=9")), resolve=True), base, None)] == [
        "callbacks.ema.decay", "trainer.epochs"]
