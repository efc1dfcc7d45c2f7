"""`trainlab ensemble` and the `snapshots` callback: averaged probabilities of members rebuilt from their own
checkpoints, checked against a manual averaging; snapshots kept at the ends of the schedule's cycles."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from omegaconf import OmegaConf

from conftest import run_trainlab
from test_eval import checked, fake_checkpoint, refusal, trained


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, Path]:
    return trained(tmp_path_factory)


def ensemble_json(result, cwd: Path) -> dict:
    assert result.returncode == 0, result.stderr[-3000:]
    (found,) = (cwd / "outputs" / "ensemble").glob("*/*/ensemble.json")
    return json.loads(found.read_text())


def manual_probabilities(path: Path) -> tuple[torch.Tensor, torch.Tensor]:
    """A member's test-split softmax probabilities, computed here from its checkpoint with the plain pieces
    (build_data, build_model, the saved preprocessing statistics), not with the command's code."""
    from trainlab.data import build_data
    from trainlab.data.preprocess import from_state
    from trainlab.models import build_model
    from trainlab.runtime import autocast, resolve_amp

    payload = torch.load(path, weights_only=True)
    cfg = OmegaConf.create(payload["config"])
    data = build_data(cfg, torch.device("cpu"), cfg.seed)
    model = build_model(cfg.model, data.input_shape, data.num_classes)
    model.load_state_dict(payload["model"])
    model.eval()
    normalize = from_state(payload["preprocess"])
    cpu = torch.device("cpu")
    precision = resolve_amp("auto", "bf16", cpu)[0]  # the precision the command's auto runs in (bf16 on some CPUs)
    with torch.no_grad(), autocast(cpu, precision):
        logits = model(normalize(data.test.images)).float()
    return logits.double().softmax(dim=1), data.test.labels


@pytest.mark.slow
def test_an_ensemble_of_a_cnn_and_an_mlp_equals_a_manual_averaging(runs, tmp_path):
    members = [runs["cnn"] / "checkpoints" / "best.pt", runs["mlp"] / "checkpoints" / "best.pt"]  # (a run
    # folder would give its snapshots)
    result = run_trainlab(["ensemble", f"members=[{members[0]},{members[1]}]"], tmp_path)
    report = ensemble_json(result, tmp_path)
    assert [m["model"] for m in report["members"]] == ["CNN", "MLP"]
    probabilities, labels = zip(*(manual_probabilities(run / "checkpoints" / "best.pt")
                                  for run in (runs["cnn"], runs["mlp"])))
    mean = torch.stack(probabilities).mean(dim=0)
    assert report["ensemble"]["acc"] == (mean.argmax(dim=1) == labels[0]).double().mean().item()
    assert report["ensemble"]["loss"] == pytest.approx(F.nll_loss(mean.log(), labels[0]).item(), rel=1e-9)
    for member, probs, run in zip(report["members"], probabilities, (runs["cnn"], runs["mlp"])):
        assert member["test"]["acc"] == (probs.argmax(dim=1) == labels[0]).double().mean().item()
        summary = json.loads((run / "summary.json").read_text())  # and what training reported for it
        assert member["test"]["acc"] == summary["test"]["acc"]
        assert member["test"]["loss"] == pytest.approx(summary["test"]["loss"], rel=1e-6)
        assert member["val"]["metric"] == "val/acc" and member["val"]["value"] == summary["best"]["value"]
    worse = min(member["test"]["acc"] for member in report["members"])
    assert report["ensemble"]["acc"] >= worse
    # the mean of probabilities never loses more than the members do on average (Jensen)
    assert report["ensemble"]["loss"] <= sum(m["test"]["loss"] for m in report["members"]) / 2 + 1e-9
    assert report["test_size"] == 500 and "ensemble (mean probabilities)" in result.stdout


@pytest.mark.slow
def test_a_sweep_folder_gives_its_top_k_runs_and_a_run_folder_its_snapshots(runs, tmp_path, capsys):
    report = ensemble_json(run_trainlab(["ensemble", f"members=[{runs['sweep']}]", "top_k=2"], tmp_path), tmp_path)
    values = [m["val"]["value"] for m in report["members"]]
    assert len(values) == 2 and values == sorted(values, reverse=True)  # best val/acc first
    assert {Path(m["checkpoint"]).parent.parent.name for m in report["members"]} == {"0", "1"}
    assert "an ensemble needs at least 2" in refusal(capsys, "ensemble", f"members=[{runs['sweep']}]", "top_k=1")
    (tmp_path / "snap").mkdir()
    snapshots = run_trainlab(["ensemble", f"members=[{runs['cnn']}]"], tmp_path / "snap")
    report = ensemble_json(snapshots, tmp_path / "snap")
    assert [Path(m["checkpoint"]).name for m in report["members"]] == ["snapshot_1.pt", "snapshot_2.pt"]


@pytest.mark.slow
def test_snapshots_are_written_at_the_end_of_each_cycle(runs):
    """1-epoch cycles over 2 epochs: a snapshot after each epoch, in best.pt's format; the last one holds the
    weights training ended with (last.pt's)."""
    folder = runs["cnn"] / "checkpoints"
    best = torch.load(folder / "best.pt", weights_only=True)
    last = torch.load(folder / "last.pt", weights_only=True)
    snapshots = [torch.load(folder / f"snapshot_{k}.pt", weights_only=True) for k in (1, 2)]
    assert not (folder / "snapshot_3.pt").exists()
    assert [s["epoch"] for s in snapshots] == [1, 2] and [s["snapshot"] for s in snapshots] == [1, 2]
    steps = last["step"]
    assert [s["step"] for s in snapshots] == [steps // 2, steps]
    for snapshot in snapshots:
        assert set(best) <= set(snapshot) and snapshot["format"] == best["format"]
        assert snapshot["config"] == best["config"] and snapshot["classes"] == best["classes"]
    assert snapshots[1]["metrics"] == last["metrics"]
    for name, tensor in last["model"].items():
        assert torch.equal(snapshots[1]["model"][name], tensor)


# ---------------------------------------------------------------- the snapshots callback, driven by hand


class Stub:
    """What the callback reads of a Trainer: lr, step, model, callbacks, train_loader, settings.accumulate."""

    def __init__(self, model, optimizer, steps_per_epoch: int):
        self.model, self.optimizer, self.step, self.callbacks = model, optimizer, 0, []
        self.train_loader = [None] * steps_per_epoch
        self.settings = type("Settings", (), {"accumulate": 1})()

    @property
    def lr(self) -> float:
        return float(self.optimizer.param_groups[0]["lr"])


def drive(tmp_path: Path, schedule: str, epochs: int, steps_per_epoch: int, every_epochs=None, own=False,
          lrs=None, **keys) -> list[dict]:
    """Train nothing, but step a real schedule as the Trainer does and fire the callback's events; return the
    snapshots written, in order. own: the run's config names a schedule of the user's (so the callback
    detects the cycles from the rates); lrs: a list that gets the rate of every step."""
    from trainlab.callbacks.base import EpochEnd, RunInfo
    from trainlab.callbacks.snapshots import Snapshots
    from trainlab.config import load_option
    from trainlab.optim import build_schedule

    model = torch.nn.Linear(2, 2)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    cfg = load_option("schedule", schedule)
    for key, value in keys.items():
        cfg[key] = value
    scheduler = build_schedule(cfg, optimizer, steps_per_epoch, epochs, mode="max")
    callback = Snapshots(every_epochs=every_epochs)
    config = {"schedule": {"_target_": "my_package.my_schedule"} if own else OmegaConf.to_container(cfg),
              "trainer": {"epochs": epochs}}
    callback.setup(RunInfo(run_dir=tmp_path, config=config, checkpoint_extra={"classes": ["a", "b"]}))
    trainer = Stub(model, optimizer, steps_per_epoch)
    callback.on_fit_start(trainer, 1)
    for epoch in range(1, epochs + 1):
        for _ in range(steps_per_epoch):
            if lrs is not None:
                lrs.append(trainer.lr)
            optimizer.step()
            scheduler.step()
            trainer.step += 1
            if callback.wants_steps:
                callback.on_step(trainer)
            with torch.no_grad():
                model.weight.add_(1.0)  # weights that change each step: the snapshot must be of its own step
        callback.on_epoch_end(trainer, EpochEnd(epoch, epochs, {"val/acc": epoch / 10}, trainer.lr, 0.0))
    files = sorted(tmp_path.glob("checkpoints/snapshot_*.pt"), key=lambda p: int(p.stem.split("_")[1]))
    return [torch.load(path, weights_only=True) for path in files]


def test_cosine_restarts_cycles_make_one_snapshot_each(tmp_path):
    lrs: list[float] = []
    found = drive(tmp_path, "cosine_restarts", epochs=6, steps_per_epoch=3, lrs=lrs, cycle_epochs=2, cycle_mult=1)
    assert [s["epoch"] for s in found] == [2, 4, 6] and [s["step"] for s in found] == [6, 12, 18]
    assert [s["metrics"]["val/acc"] for s in found] == [0.2, 0.4, 0.6]
    assert found[0]["classes"] == ["a", "b"] and found[0]["weights"] == "model"
    restarts = [t for t in range(1, len(lrs)) if lrs[t] > lrs[t - 1]]  # step t + 1 is the first of a new cycle
    assert restarts == [6, 12]  # (the third restart would come after training)
    # doubling cycles after a warmup epoch: 1 + 1, + 2, + 4 epochs
    found = drive(tmp_path / "mult", "cosine_restarts", epochs=8, steps_per_epoch=2, cycle_epochs=1, cycle_mult=2,
                  warmup_epochs=1)
    assert [s["epoch"] for s in found] == [2, 4, 8]


def test_cyclic_troughs_and_a_cycle_ending_mid_epoch(tmp_path):
    lrs: list[float] = []
    found = drive(tmp_path / "cyclic", "cyclic", epochs=4, steps_per_epoch=4, lrs=lrs, half_cycle_epochs=1)
    assert [s["step"] for s in found] == [8, 16] and [s["epoch"] for s in found] == [2, 4]
    assert lrs[8] == min(lrs) and lrs[8] < lrs[7] and lrs[8] < lrs[9]  # step 9 starts at the trough
    found = drive(tmp_path / "mid", "cosine_restarts", epochs=3, steps_per_epoch=4, cycle_epochs=1.5, cycle_mult=1)
    assert [s["step"] for s in found] == [6, 12]
    assert found[0]["epoch"] == 2 and found[0]["metrics"] == {}  # mid-epoch: no validation of those weights
    assert found[1]["metrics"] == {"val/acc": 0.3}
    # the weights are those of the cycle's last step (+1 per step from the start)
    assert torch.allclose(found[0]["model"]["weight"] - found[1]["model"]["weight"], torch.full((2, 2), -6.0))


def test_a_schedule_of_ones_own_is_cut_where_the_rate_restarts(tmp_path):
    found = drive(tmp_path, "cosine_restarts", epochs=6, steps_per_epoch=3, own=True, cycle_epochs=2, cycle_mult=1)
    assert [s["step"] for s in found] == [6, 12, 18]


def test_every_n_epochs_and_a_schedule_without_cycles(tmp_path):
    from trainlab.callbacks.base import RunInfo
    from trainlab.callbacks.snapshots import Snapshots
    from trainlab.errors import ConfigError

    COSINE = "trainlab.optim.cosine_schedule"
    found = drive(tmp_path / "every", "cosine", epochs=5, steps_per_epoch=2, every_epochs=2)
    assert [s["epoch"] for s in found] == [2, 4]
    with pytest.raises(ConfigError, match=r"^callbacks\.snapshots\.every_epochs=null: schedule=cosine has no "
                                          r"cycles.*callbacks\.snapshots\.every_epochs=N"):
        Snapshots().setup(RunInfo(run_dir=tmp_path, config={"schedule": {"_target_": COSINE}}))
    with pytest.raises(Exception, match="every_epochs=0: must be null"):
        Snapshots(every_epochs=0)


def test_snapshots_without_cycles_are_refused_by_the_check_before_any_run_folder(capsys):
    """compose_checked is what runs before the folder is made: the dry build sets up the callbacks with the config."""
    line = refusal(capsys, "train", "callbacks=[default,snapshots]", "schedule=cosine")
    assert line.startswith("trainlab: error: callbacks.snapshots.every_epochs=null: schedule=cosine has no cycles")
    checked("train", "callbacks=[default,snapshots]", "schedule=cosine_restarts")  # cycles: accepted
    checked("train", "callbacks=[default,snapshots]", "schedule=cosine", "callbacks.snapshots.every_epochs=2")


def test_the_callback_state_survives_a_resume(tmp_path):
    from trainlab.callbacks.snapshots import Snapshots

    callback = Snapshots()
    callback.count, callback.next_lr, callback.falling = 3, 0.01, True
    again = Snapshots()
    again.load_state_dict(callback.state_dict())
    assert (again.count, again.next_lr, again.falling) == (3, 0.01, True)


# ---------------------------------------------------------------- refusals before anything is scored


def test_members_must_share_classes_and_the_test_split(tmp_path, capsys):
    a = fake_checkpoint(tmp_path / "a")
    b = fake_checkpoint(tmp_path / "b", "model.hidden=[8]", "seed=3", "dataset.val_size=50")  # fine together
    cfg = checked("ensemble", f"members=[{a},{b}]")
    assert [m.path for m in cfg.resolved_members] == [str(a), str(b)]
    assert [m.config.seed for m in cfg.resolved_members] == [0, 3]  # each member's own config
    other = fake_checkpoint(tmp_path / "c", classes=[f"k{i}" for i in range(10)])
    assert "its classes [k0, k1, k2, k3, ... (10)] are not those of" in refusal(capsys, "ensemble",
                                                                                f"members=[{a},{other}]")
    smaller = fake_checkpoint(tmp_path / "d", "dataset.num_test=60")
    line = refusal(capsys, "ensemble", f"members=[{a},{smaller}]")
    assert "its test split has dataset.num_test=60 but" in line and "same test images" in line


def test_what_members_may_name(tmp_path, capsys):
    a = fake_checkpoint(tmp_path / "a")
    assert "no such file or folder" in refusal(capsys, "ensemble", f"members=[{a},{tmp_path / 'nowhere'}]")
    assert "is already a member" in refusal(capsys, "ensemble", f"members=[{a},{a}]")
    assert "an ensemble needs at least 2" in refusal(capsys, "ensemble", f"members=[{a}]")
    assert "members=[]: must list" in refusal(capsys, "ensemble")
    (tmp_path / "empty").mkdir()
    assert "not a trainlab run or sweep folder" in refusal(capsys, "ensemble", f"members=[{a},{tmp_path / 'empty'}]")
    assert "top_k=0: must be a whole number >= 1" in refusal(capsys, "ensemble", f"members=[{a}]", "top_k=0")
    assert refusal(capsys, "ensemble", f"members=[{a},{a}]", "model=vgg").startswith(
        "trainlab: error: model=vgg: ensemble rebuilds this from the checkpoint's own config")
