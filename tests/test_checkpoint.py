"""Checkpoints: atomic writes, safe loads, and the Checkpoint callback's best.pt / last.pt bookkeeping."""

from __future__ import annotations

import math
import os
import pickle
import stat
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from trainlab.callbacks.base import EpochEnd, RunInfo
from trainlab.callbacks.checkpoint import Checkpoint
from trainlab.checkpoint import FORMAT, cpu_state, load, save_atomic


class Custom:
    """A class torch.load(weights_only=True) must refuse to rebuild."""

    def __init__(self):
        self.value = 1


def payload(**extra) -> dict:
    gen = torch.Generator().manual_seed(0)
    return {"format": FORMAT, "epoch": 3, "model": {"w": torch.randn(3, 2, generator=gen), "b": torch.arange(4)},
            "metrics": {"val/acc": 0.5}, "classes": ["a", "b"], **extra}


def test_save_atomic_and_load_round_trip(tmp_path):
    original = payload()
    path = tmp_path / "nested" / "folder" / "best.pt"  # parent folders are created
    save_atomic(original, path)
    loaded = load(path)
    assert loaded["epoch"] == 3 and loaded["metrics"] == {"val/acc": 0.5} and loaded["classes"] == ["a", "b"]
    for key, value in original["model"].items():
        assert torch.equal(loaded["model"][key], value)
        assert loaded["model"][key].dtype == value.dtype


def test_load_is_weights_only(tmp_path):
    path = tmp_path / "unsafe.pt"
    torch.save(payload(obj=Custom()), path)  # a pickled class: needs arbitrary code to load
    with pytest.raises(pickle.UnpicklingError):
        load(path)


def test_saved_checkpoints_load_with_plain_torch_weights_only(tmp_path):
    path = tmp_path / "c.pt"
    save_atomic(payload(), path)
    assert torch.load(path, weights_only=True)["format"] == FORMAT


@pytest.mark.parametrize("content", [{"model": {}}, {"format": "someone-else-v1"}, [1, 2, 3]],
                         ids=["no-format", "other-format", "not-a-dict"])
def test_load_rejects_a_non_trainlab_file(tmp_path, content):
    path = tmp_path / "other.pt"
    torch.save(content, path)
    with pytest.raises(ValueError, match="not a trainlab checkpoint"):
        load(path)


def test_no_temporary_files_are_left_behind(tmp_path):
    for i in range(3):
        save_atomic(payload(epoch=i), tmp_path / "last.pt")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.pt"]
    assert load(tmp_path / "last.pt")["epoch"] == 2


def test_a_failed_save_keeps_the_old_file_and_leaves_no_temporary(tmp_path):
    path = tmp_path / "best.pt"
    save_atomic(payload(epoch=1), path)
    with pytest.raises(Exception):
        save_atomic({"format": FORMAT, "bad": lambda: None}, path)  # a lambda cannot be pickled
    assert sorted(p.name for p in tmp_path.iterdir()) == ["best.pt"]
    assert load(path)["epoch"] == 1


def test_cpu_state_is_a_detached_copy():
    model = torch.nn.Linear(2, 2)
    state = cpu_state(model.state_dict())
    with torch.no_grad():
        model.weight.add_(1.0)
    assert not torch.equal(state["weight"], model.weight)
    assert not state["weight"].requires_grad and state["weight"].device.type == "cpu"


# ---------------------------------------------------------------- the Checkpoint callback


def identity(path: Path) -> tuple[int, int]:
    """The file's inode and modification time: both change when save_atomic replaces it."""
    stat = path.stat()
    return stat.st_ino, stat.st_mtime_ns


def saver(run_dir, monitor: str, mode: str, **kwargs) -> Checkpoint:
    """A Checkpoint callback set up for a run in `run_dir` (it writes run_dir/checkpoints/*.pt)."""
    ckpt = Checkpoint(**kwargs)
    ckpt.setup(RunInfo(run_dir=run_dir, monitor=monitor, mode=mode, checkpoint_extra={"classes": ["x", "y"]}))
    return ckpt


class FakeTrainer:
    """What the callback reads from the Trainer: the model's weights and the resumable state."""

    def __init__(self, epoch: int):
        weights = {"w": torch.full((2,), float(epoch))}
        self.model = SimpleNamespace(state_dict=lambda: weights)
        self.state = {"step": 10 * epoch}
        self.fired: list[str] = []  # events the callback fires on the Trainer's callbacks (on_checkpoint)
        self.callbacks = SimpleNamespace(fire=lambda event, *args: self.fired.append(event))

    def state_dict(self) -> dict:
        return self.state


def update(ckpt: Checkpoint, epoch: int, value: float, metric: str) -> bool:
    """One epoch end, as the Trainer fires it; returns whether the callback marked the epoch best."""
    end = EpochEnd(epoch=epoch, epochs=99, metrics={metric: value, "train/loss": 1.0 / epoch}, lr=0.1, seconds=1.0)
    trainer = FakeTrainer(epoch)
    ckpt.on_epoch_end(trainer, end)
    writes_last = ckpt.save_last and ckpt.folder is not None
    assert trainer.fired == (["on_checkpoint"] if writes_last else [])  # TensorBoard flushes before last.pt
    return end.is_best


@pytest.mark.parametrize("mode, metric, values, best_epochs", [
    ("max", "val/acc", [0.5, 0.7, 0.6, 0.7, 0.8], [1, 2, 2, 2, 5]),
    ("min", "val/loss", [2.0, 1.5, 1.7, 1.5, 1.0], [1, 2, 2, 2, 5]),
])
def test_checkpoint_writes_best_only_on_improvement_and_last_every_time(tmp_path, mode, metric, values,
                                                                        best_epochs):
    ckpt = saver(tmp_path, metric, mode)
    assert ckpt.best() == {"metric": metric, "mode": mode, "value": -math.inf if mode == "max" else math.inf,
                           "epoch": None}
    previous_best = None
    for epoch, (value, best_epoch) in enumerate(zip(values, best_epochs), start=1):
        improved = update(ckpt, epoch, value, metric)
        assert improved is (best_epoch == epoch)
        best_value = values[best_epoch - 1]
        assert ckpt.best() == {"metric": metric, "mode": mode, "value": best_value, "epoch": best_epoch}
        assert ckpt.state_dict() == {"best_value": best_value, "best_epoch": best_epoch}

        last = load(ckpt.last_path)
        assert last["epoch"] == epoch and last["step"] == 10 * epoch
        assert torch.equal(last["model"]["w"], torch.full((2,), float(epoch)))
        assert last["metrics"][metric] == value and last["classes"] == ["x", "y"]
        assert last["best"]["epoch"] == best_epoch

        best = load(ckpt.best_path)
        assert best["epoch"] == best_epoch and best["metrics"][metric] == best_value
        assert torch.equal(best["model"]["w"], torch.full((2,), float(best_epoch)))
        assert best["best"] == {"metric": metric, "mode": mode, "value": best_value, "epoch": best_epoch}
        assert best["classes"] == ["x", "y"] and best["weights"] == "model"
        assert "step" not in best  # the resume state goes to last.pt only

        now = identity(ckpt.best_path)
        if previous_best is not None:
            assert (now != previous_best) is improved  # best.pt is rewritten only on improvement
        previous_best = now
    assert sorted(p.name for p in ckpt.folder.iterdir()) == ["best.pt", "last.pt"]


@pytest.mark.parametrize("mode, metric, value", [("min", "val/loss", 1e6), ("max", "val/acc", -1e6)])
def test_checkpoint_first_epoch_always_writes_best(tmp_path, mode, metric, value):
    ckpt = saver(tmp_path, metric, mode)
    assert update(ckpt, 1, value, metric) is True
    assert ckpt.best_path.is_file() and load(ckpt.best_path)["epoch"] == 1


def test_checkpoint_paths(tmp_path):
    ckpt = saver(tmp_path / "run", "val/acc", "max")
    assert ckpt.folder == tmp_path / "run" / "checkpoints"
    assert ckpt.best_path == tmp_path / "run" / "checkpoints" / "best.pt"
    assert ckpt.last_path == tmp_path / "run" / "checkpoints" / "last.pt"


def test_best_weights_go_to_best_pt_and_the_model_to_last_pt(tmp_path):
    ckpt = saver(tmp_path, "val_ema/acc", "max")
    ckpt.best_weights = lambda: {"w": torch.full((2,), -1.0)}  # what the build wires to the EMA's weights
    update(ckpt, 3, 0.5, "val_ema/acc")
    best, last = load(ckpt.best_path), load(ckpt.last_path)
    assert best["weights"] == "ema" and torch.equal(best["model"]["w"], torch.full((2,), -1.0))
    assert torch.equal(last["model"]["w"], torch.full((2,), 3.0))


def test_save_last_false_keeps_best_only_and_no_run_folder_writes_nothing(tmp_path):
    ckpt = saver(tmp_path, "val/acc", "max", save_last=False)
    update(ckpt, 1, 0.5, "val/acc")
    assert sorted(p.name for p in ckpt.folder.iterdir()) == ["best.pt"]
    dry = Checkpoint()
    dry.setup(RunInfo(run_dir=None, monitor="val/acc", mode="max"))  # the config check's dry build
    assert update(dry, 1, 0.5, "val/acc") is True and dry.best()["epoch"] == 1
    assert update(dry, 2, 0.4, "val/acc") is False
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoints"]


def test_checkpoint_state_round_trips(tmp_path):
    ckpt = saver(tmp_path, "val/loss", "min")
    update(ckpt, 1, 0.9, "val/loss")
    again = saver(tmp_path / "resumed", "val/loss", "min")
    again.load_state_dict(ckpt.state_dict())
    assert again.best() == ckpt.best()
    assert update(again, 2, 1.0, "val/loss") is False  # not better than the resumed run's best


def test_saved_checkpoint_has_the_permissions_of_a_normal_file(tmp_path):
    old = os.umask(0o022)
    try:
        save_atomic(payload(), tmp_path / "best.pt")
        (tmp_path / "plain.txt").write_text("x")
        ckpt = saver(tmp_path / "run", "val/acc", "max")
        update(ckpt, 1, 0.5, "val/acc")
    finally:
        os.umask(old)
    plain_mode = stat.S_IMODE((tmp_path / "plain.txt").stat().st_mode)
    assert plain_mode == 0o644
    assert stat.S_IMODE((tmp_path / "best.pt").stat().st_mode) == plain_mode
    for path in (ckpt.best_path, ckpt.last_path):  # what the callback writes too
        assert stat.S_IMODE(path.stat().st_mode) == plain_mode, path


def test_the_callbacks_checkpoints_load_with_plain_torch_weights_only(tmp_path):
    ckpt = saver(tmp_path, "val/acc", "max")
    update(ckpt, 1, 0.5, "val/acc")
    for path in (ckpt.best_path, ckpt.last_path):
        assert torch.load(path, weights_only=True)["format"] == FORMAT


def test_a_resumed_run_keeps_its_own_augmentation_when_the_default_option_has_more_keys():
    """Keys the checkpoint's run lacks come from this composition only within the same group option:
    augmentation has no _target_, so its choice tells flip from flip_crop (the default's crop op must not
    join a run that trained with flips alone)."""
    from trainlab.resume import continued_config

    theirs = {"augmentation": {"ops": {"flip": {"p": 0.5}}}, "trainer": {"epochs": 6}}
    ours = {"augmentation": {"ops": {"crop": {"padding": 2}, "flip": {"p": 0.5}}}, "trainer": {"epochs": 6, "new": 1}}
    kept = continued_config(ours, theirs, set(), set(), {"augmentation": "flip_crop", "trainer": "default"},
                            {"augmentation": "flip", "trainer": "default"})
    assert kept["augmentation"] == {"ops": {"flip": {"p": 0.5}}}
    assert kept["trainer"] == {"epochs": 6, "new": 1}  # a key added later to the same option still arrives
    same = continued_config(ours, theirs, set(), set(), {"augmentation": "flip"}, {"augmentation": "flip"})
    assert "crop" in same["augmentation"]["ops"]
