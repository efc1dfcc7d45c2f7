"""`trainlab eval`: a checkpoint rebuilt from its own config and statistics, scored on its run's splits.

The slow tests train two tiny runs once per session (`trained`: a CNN and an MLP on synthetic data, as one
sweep, with TTA and snapshots) and check that eval's figures are exactly what training logged for the same
weights. The fast ones compose the command in-process the way the runner does (compose_checked) on small
checkpoints written here, for how the command line combines with the checkpoint's config.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from conftest import run_trainlab

# the small runs the brief asks for: synthetic, 2 epochs, a tiny CNN, 400 training images
SMALL = ["dataset=synthetic", "trainer.epochs=2", "dataset.num_train=400", "trainer.batch_size=32",
         "optimizer.lr=0.01", "callbacks.console.progress=false"]
TINY_CNN = "defaults:\n  - cnn\n  - _self_\nchannels: [8, 16]\n"  # ./configs/model/tiny_cnn.yaml: model.channels=[8,16]


def trained(tmp_path_factory) -> dict[str, Path]:
    """Two small runs, trained once per test session (a sweep: job 0 a CNN with channels [8, 16], from a user
    option in ./configs, job 1 an MLP), each with TTA (tta=flip), a cosine-with-restarts schedule of 1-epoch
    cycles and the snapshots callback. Shared by test_eval, test_ensemble and test_safety (the finished
    sweep is found again on disk)."""
    root = tmp_path_factory.getbasetemp() / "trainlab_eval_runs"
    sweep = root / "sweep"
    done = root / "done"
    if not done.exists():
        (root / "configs" / "model").mkdir(parents=True, exist_ok=True)
        (root / "configs" / "model" / "tiny_cnn.yaml").write_text(TINY_CNN)
        result = run_trainlab(["train", "-m", "model=tiny_cnn,mlp", *SMALL, "tta=flip", "schedule=cosine_restarts",
                               "schedule.cycle_epochs=1", "schedule.cycle_mult=1", "callbacks=[default,snapshots]",
                               f"hydra.sweep.dir={sweep}"], root)
        assert result.returncode == 0, result.stderr[-3000:]
        done.touch()
    return {"root": root, "sweep": sweep, "cnn": sweep / "0", "mlp": sweep / "1"}


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, Path]:
    return trained(tmp_path_factory)


def eval_json(result, cwd: Path) -> dict:
    assert result.returncode == 0, result.stderr[-3000:]
    (found,) = (cwd / "outputs" / "eval").glob("*/*/eval.json")
    return json.loads(found.read_text())


# ---------------------------------------------------------------- the figures training logged


@pytest.mark.slow
def test_eval_on_the_validation_split_equals_what_training_logged(runs, tmp_path):
    best = torch.load(runs["cnn"] / "checkpoints" / "best.pt", weights_only=True)
    report = eval_json(run_trainlab(["eval", f"checkpoint={runs['cnn']}", "split=val"], tmp_path), tmp_path)
    assert report["split"] == "val" and report["epoch"] == best["epoch"]
    assert report["acc"] == best["metrics"]["val/acc"]  # exactly: the same weights, split and scoring
    assert report["loss"] == pytest.approx(best["metrics"]["val/loss"], rel=1e-6, abs=1e-7)
    assert report["logged"]["plain"]["acc"] == report["acc"]
    assert report["samples"] == 200 and report["device"] == "cpu"  # synthetic's val_size; trainer.device auto


@pytest.mark.slow
def test_eval_on_the_test_split_equals_summary_json_with_and_without_tta(runs, tmp_path):
    summary = json.loads((runs["mlp"] / "summary.json").read_text())
    result = run_trainlab(["eval", f"checkpoint={runs['mlp']}/checkpoints/best.pt"], tmp_path)
    report = eval_json(result, tmp_path)
    assert report["acc"] == summary["test"]["acc"]
    assert report["loss"] == pytest.approx(summary["test"]["loss"], rel=1e-6, abs=1e-7)
    assert report["tta"]["views"] == 2  # tta=flip, from the checkpoint's own config
    assert report["tta"]["acc"] == summary["test_tta"]["acc"]
    assert report["tta"]["loss"] == pytest.approx(summary["test_tta"]["loss"], rel=1e-6, abs=1e-7)
    # the rest of the report: top-5 (10 classes), per-class accuracy and the confusion matrix agree
    counts = torch.tensor(report["confusion"])
    assert counts.shape == (10, 10) and int(counts.sum()) == report["samples"] == summary["test_size"]
    assert counts.diagonal().sum().item() / report["samples"] == pytest.approx(report["acc"], abs=1e-12)
    for index, (name, row) in enumerate(report["per_class"].items()):
        assert name == report["classes"][index] and row["samples"] == int(counts[index].sum())
        assert row["acc"] == pytest.approx(int(counts[index, index]) / row["samples"])
    assert report["acc"] <= report["top5"] <= 1.0
    assert report["time"]["eval_s"] > 0 and report["time"]["samples_per_s"] > 0
    run_dir = next((tmp_path / "outputs" / "eval").glob("*/*"))
    assert (run_dir / "confusion_test.png").stat().st_size > 1000
    assert "top-1" in result.stdout and "training logged (summary.json)" in result.stdout and "(same)" in result.stdout


@pytest.mark.slow
def test_eval_of_a_snapshot_and_a_changed_split(runs, tmp_path):
    """A snapshot file is a checkpoint like best.pt; a dataset key on the command line changes the data, and
    then training's figures are not claimed."""
    snapshot = torch.load(runs["cnn"] / "checkpoints" / "snapshot_1.pt", weights_only=True)
    report = eval_json(run_trainlab(["eval", f"checkpoint={runs['cnn']}/checkpoints/snapshot_1.pt", "split=val",
                                     "tta=none", "dataset.val_size=100"], tmp_path), tmp_path)
    assert report["epoch"] == snapshot["epoch"] == 1 and report["tta"] is None
    assert report["samples"] == 100 and report["logged"]["plain"] is None
    assert report["config"]["dataset"]["num_train"] == 400  # the rest of the dataset section: the checkpoint's


# ---------------------------------------------------------------- how the command line combines (in process)


def composed(command: str, *overrides: str):
    """The validated config `trainlab <command> OVERRIDES` composes (no checks of the command's own)."""
    from hydra import compose, initialize_config_dir

    from trainlab.commands import config_dir
    from trainlab.config import validate

    with initialize_config_dir(version_base="1.3", config_dir=str(config_dir()), job_name=command):
        return validate(compose(command, overrides=list(overrides)))


def fake_checkpoint(folder: Path, *overrides: str, classes=None, config_edit=None) -> Path:
    """A run folder holding a checkpoints/best.pt as trainlab writes it (untrained weights) for
    `trainlab train dataset=synthetic model=mlp OVERRIDES`; config_edit(plain config) may change its config."""
    from omegaconf import OmegaConf

    from trainlab.checkpoint import FORMAT
    from trainlab.data.datasets import describe
    from trainlab.models import build_model

    cfg = composed("train", "dataset=synthetic", "dataset.num_train=300", "dataset.num_test=100", "model=mlp",
                   "model.hidden=[16]", *overrides)
    shape = describe(cfg.dataset)
    torch.manual_seed(0)
    model = build_model(cfg.model, shape.input_shape, shape.num_classes)
    config = OmegaConf.to_container(cfg, resolve=True)
    if config_edit is not None:
        config_edit(config)
    payload = {"format": FORMAT, "epoch": 1, "metrics": {"val/acc": 0.5, "val/loss": 1.0}, "model": model.state_dict(),
               "best": {}, "weights": "model", "config": config,
               "preprocess": {"name": "mean_std", "mean": torch.tensor([0.5]), "std": torch.tensor([0.25])},
               "classes": classes or [f"class_{k}" for k in range(shape.num_classes)]}
    path = folder / "checkpoints" / "best.pt"
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(payload, path)
    return path


def checked(command: str, *overrides: str):
    """What the runner checks for `trainlab <command> OVERRIDES` before it makes a folder (compose_checked);
    a refusal exits 2 with its line on stderr."""
    import importlib

    from trainlab.commands import compose_checked

    module = importlib.import_module(f"trainlab.commands.{command}")
    (config,) = compose_checked(module, command, [list(overrides)], None)
    return config


def refusal(capsys, command: str, *overrides: str) -> str:
    with pytest.raises(SystemExit) as stop:
        checked(command, *overrides)
    assert stop.value.code == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1, lines
    return lines[0]


def test_the_checkpoints_config_is_the_base_and_the_command_line_goes_on_top(tmp_path):
    fake_checkpoint(tmp_path / "run", "dataset.val_size=40", "seed=7")
    cfg = checked("eval", f"checkpoint={tmp_path / 'run'}", "split=val", "trainer.device=cpu",
                  "+dataset.num_test=50", "tta=flip")
    assert cfg.model._target_.endswith("MLP") and list(cfg.model.hidden) == [16]  # the checkpoint's model
    assert cfg.seed == 7 and cfg.dataset.name == "synthetic" and cfg.dataset.val_size == 40
    assert cfg.dataset.num_train == 300 and cfg.dataset.num_test == 50  # a key given on top of the checkpoint's
    assert cfg.tta.flip is True and cfg.split == "val" and cfg.trainer.device == "cpu"
    assert dict(cfg.callbacks) == {} and cfg.model.pretrained is None and cfg.trainer.resume is None
    # a group chosen on the command line replaces the whole section
    cfg = checked("eval", f"checkpoint={tmp_path / 'run'}", "dataset=synthetic")
    assert cfg.dataset.num_train == 2000 and cfg.dataset.val_size == 200


def test_keys_eval_takes_from_the_checkpoint_are_refused(tmp_path, capsys):
    fake_checkpoint(tmp_path / "run")
    where = f"checkpoint={tmp_path / 'run'}"
    line = refusal(capsys, "eval", where, "model=vgg")
    assert line.startswith("trainlab: error: model=vgg: eval rebuilds this from the checkpoint's own config")
    line = refusal(capsys, "eval", where, "trainer.epochs=9")
    assert line.startswith("trainlab: error: trainer.epochs=9: eval takes this from the checkpoint's own config")
    assert "trainer.{device," in line
    assert refusal(capsys, "eval", where, "optimizer.lr=0.5").startswith("trainlab: error: optimizer.lr=0.5:")
    assert "split='train': must be test, val or target" in refusal(capsys, "eval", where, "split=train")
    assert "checkpoint=null: must name" in refusal(capsys, "eval")
    assert "no such file or folder" in refusal(capsys, "eval", f"checkpoint={tmp_path / 'nowhere'}")


def test_data_of_another_shape_or_a_file_that_is_not_a_trainlab_checkpoint_are_refused(tmp_path, capsys):
    path = fake_checkpoint(tmp_path / "run")
    line = refusal(capsys, "eval", f"checkpoint={path}", "+dataset.image_size=32")
    assert "dataset.name=synthetic: its images are [1, 32, 32]" in line and "[1, 28, 28]" in line
    line = refusal(capsys, "eval", f"checkpoint={path}", "+dataset.num_classes=4")
    assert "4 classes but" in line and "trained for 10" in line
    plain = tmp_path / "weights.pt"
    torch.save({"weight": torch.zeros(2)}, plain)
    assert "is not a trainlab checkpoint" in refusal(capsys, "eval", f"checkpoint={plain}")
    (tmp_path / "garbage.pt").write_bytes(b"not a torch file")
    assert "is not a readable trainlab checkpoint" in refusal(capsys, "eval", f"checkpoint={tmp_path / 'garbage.pt'}")


def test_run_rebuilds_the_model_and_the_saved_preprocessing(tmp_path, capsys):
    """In process: the weights and the preprocessing statistics are the checkpoint's (not refitted)."""
    from trainlab.commands import eval as evaluation
    from trainlab.evaluate import evaluate

    path = fake_checkpoint(tmp_path / "run", "tta=none")  # the run's own test-time augmentation: none
    cfg = checked("eval", f"checkpoint={path}", "trainer.device=cpu")
    (tmp_path / "out").mkdir()
    report = evaluation.run(cfg, tmp_path / "out")
    payload = evaluation.load(path, "checkpoint")
    rebuilt = evaluation.rebuild(cfg, payload, "checkpoint")
    assert float(rebuilt.preprocess.state["mean"]) == 0.5 and float(rebuilt.preprocess.state["std"]) == 0.25
    assert float(rebuilt.data.preprocess.state["mean"]) != 0.5  # what fitting the training split would give
    for name, tensor in rebuilt.model.state_dict().items():
        assert torch.equal(tensor, payload["model"][name])
    assert report["acc"] == evaluate(rebuilt.model, rebuilt.loader("test"), rebuilt.device)["acc"]
    assert report["samples"] == 100 and report["top5"] is not None and report["tta"] is None
    assert json.loads((tmp_path / "out" / "eval.json").read_text())["acc"] == report["acc"]
    assert (tmp_path / "out" / "confusion_test.png").is_file()
    assert "trainlab eval: test split" in capsys.readouterr().out


def test_explicit_overrides_from_the_runner_are_used_when_it_passes_them(tmp_path):
    """With Context.overrides (the typed overrides) a key given at its default value counts too."""
    from trainlab.commands import Context
    from trainlab.commands import eval as evaluation

    fake_checkpoint(tmp_path / "run", "dataset.val_size=40")
    cfg = composed("eval", f"checkpoint={tmp_path / 'run'}", "dataset.val_size=5000", "trainer.device=cpu")
    context = Context("eval", {"dataset": "fashion_mnist", "tta": "none"})
    context.overrides = [f"checkpoint={tmp_path / 'run'}", "dataset.val_size=5000", "trainer.device=cpu"]
    given = evaluation.command_line(cfg, context)
    assert given.groups == {} and given.keys == {"checkpoint": str(tmp_path / "run"), "dataset.val_size": 5000,
                                                  "trainer.device": "cpu"}
    evaluation.check(cfg, context)
    assert cfg.dataset.val_size == 5000 and cfg.dataset.num_train == 300
