"""`trainlab` as a user runs it: a subprocess in a temporary folder, results read back as users read them."""

from __future__ import annotations

import json
import time
import subprocess
import sys
from datetime import datetime
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from conftest import QUICK, require_fashion_mnist, run_folders, run_trainlab

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
SUMMARY_KEYS = {"status", "best", "test", "time", "device", "params", "train_samples_per_s", "epochs_run"}


@pytest.fixture(scope="module")
def synthetic_run(tmp_path_factory) -> tuple[Path, subprocess.CompletedProcess]:
    root = tmp_path_factory.mktemp("synthetic_run")
    result = run_trainlab(["train", *QUICK, "trainer.epochs=3", "callbacks.update_ratio.every=5",
                           "callbacks.activation_stats.every=5", "augmentation=flip"], root)
    assert result.returncode == 0, result.stderr[-3000:]
    folders = run_folders(root)
    assert len(folders) == 1, folders
    return folders[0], result


def scalars(run_dir: Path) -> dict[str, list]:
    events = EventAccumulator(str(run_dir / "tensorboard"))
    events.Reload()
    return {tag: events.Scalars(tag) for tag in events.Tags()["scalars"]}


@pytest.mark.slow
def test_run_folder_has_the_contract_files(synthetic_run):
    run_dir, _ = synthetic_run
    assert run_dir.parent.parent.name == "train" and run_dir.parent.parent.parent.name == "outputs"
    datetime.strptime(run_dir.parent.name, "%Y-%m-%d")
    for name in (".hydra/config.yaml", "checkpoints/best.pt", "checkpoints/last.pt", "summary.json"):
        assert (run_dir / name).is_file(), name
    assert list((run_dir / "tensorboard").glob("events.out.tfevents.*"))
    config = OmegaConf.load(run_dir / ".hydra" / "config.yaml")
    assert config.dataset.name == "synthetic" and config.trainer.epochs == 3


@pytest.mark.slow
def test_console_shows_epoch_lines_table_and_run_folder(synthetic_run):
    run_dir, result = synthetic_run
    lines = [line for line in result.stdout.splitlines() if line.startswith("epoch ")]
    assert len(lines) == 3
    assert all("train loss" in line and "val loss" in line and "lr " in line for line in lines)
    assert "trainlab: results" in result.stdout
    assert str(run_dir) in result.stdout.replace("\n", "")


@pytest.mark.slow
def test_summary_json(synthetic_run):
    run_dir, _ = synthetic_run
    summary = json.loads((run_dir / "summary.json").read_text())
    assert SUMMARY_KEYS <= summary.keys()
    assert summary["status"] == "completed"
    assert summary["epochs_run"] == 3
    assert summary["device"] == "cpu"
    assert summary["best"]["metric"] == "val/acc" and 1 <= summary["best"]["epoch"] <= 3
    assert summary["best"]["value"] > 0.3, "the synthetic dataset is learnable: well above 10% chance"
    assert 0.0 <= summary["test"]["acc"] <= 1.0 and summary["test"]["loss"] > 0
    assert summary["train_samples_per_s"] > 0 and summary["time"]["train_s"] > 0
    model = torch.load(run_dir / "checkpoints" / "best.pt", weights_only=True)["model"]
    assert summary["params"] == sum(t.numel() for k, t in model.items() if "running" not in k and "num_batches" not in k)


@pytest.mark.slow
def test_tensorboard_scalars(synthetic_run):
    run_dir, _ = synthetic_run
    found = scalars(run_dir)
    for tag in ("train/loss", "lr", "train/acc", "val/loss", "val/acc", "test/acc"):
        assert tag in found, f"{tag} missing from {sorted(found)}"
    assert len(found["val/acc"]) == 3 and len(found["train/acc"]) == 3
    summary = json.loads((run_dir / "summary.json").read_text())
    assert max(e.value for e in found["val/acc"]) == pytest.approx(summary["best"]["value"], abs=1e-6)
    # 1800 examples / 128 = 15 steps per epoch, 45 steps; logged every 5 steps
    steps = [e.step for e in found["train/loss"]]
    assert steps == sorted(steps) and len(steps) == 9 and steps[-1] == summary["steps"] == 45
    lrs = [e.value for e in found["lr"]]
    assert lrs[0] > lrs[-1], "cosine schedule: the learning rate falls"


@pytest.mark.slow
def test_the_diagnostics_of_a_healthy_run_are_there_and_plausible(synthetic_run):
    import math

    run_dir, _ = synthetic_run
    found = scalars(run_dir)
    for tag, values in found.items():
        assert all(math.isfinite(e.value) for e in values), tag
    ratios = found["update_ratio/median"]
    assert [e.step for e in ratios] == list(range(5, 46, 5))
    assert all(0 < e.value < 1 for e in ratios), "a healthy run moves its weights by a fraction of their size"
    per_tensor = [tag for tag in found if tag.startswith("update_ratio/") and tag.endswith(".weight")]
    assert "update_ratio/head.weight" in per_tensor and len(per_tensor) >= 3
    stds = [tag for tag in found if tag.startswith("activations/") and tag.endswith("/std")]
    deads = [tag for tag in found if tag.startswith("activations/") and tag.endswith("/dead")]
    assert len(stds) == 2 and len(deads) == 2  # the two activations of model.channels=[16,32]
    assert all(0 <= e.value <= 1 for tag in deads for e in found[tag])
    assert all(e.value > 0 for tag in stds for e in found[tag])
    assert all(e.value > 0 for e in found["train/grad_norm"])
    events = EventAccumulator(str(run_dir / "tensorboard"), size_guidance={"images": 0, "tensors": 0})
    events.Reload()
    assert {"images/augmented_batch", "confusion/val", "confusion/test"} <= set(events.Tags()["images"])
    assert "config/text_summary" in events.Tags()["tensors"]
    assert (run_dir / "confusion_test.png").is_file() and (run_dir / "confusion_val.png").is_file()


@pytest.mark.slow
def test_best_checkpoint_reproduces_logged_val_accuracy(synthetic_run):
    from trainlab.data import build_data
    from trainlab.models import build_model
    from trainlab.train import Trainer

    run_dir, _ = synthetic_run
    best = torch.load(run_dir / "checkpoints" / "best.pt", weights_only=True)
    config = OmegaConf.create(best["config"])
    data = build_data(config, torch.device("cpu"), config.seed)
    assert best["preprocess"]["name"] == "mean_std"
    assert torch.allclose(data.preprocess.state["mean"], best["preprocess"]["mean"])
    model = build_model(config.model, data.input_shape, data.num_classes)
    model.load_state_dict(best["model"])
    trainer = Trainer(model, None, None, torch.device("cpu"))
    val = trainer.evaluate(data.val)
    summary = json.loads((run_dir / "summary.json").read_text())
    assert val["acc"] == pytest.approx(summary["best"]["value"], abs=1e-9)
    assert val["acc"] == pytest.approx(best["metrics"]["val/acc"], abs=1e-9)
    assert trainer.evaluate(data.test)["acc"] == pytest.approx(summary["test"]["acc"], abs=1e-9)


@pytest.mark.slow
def test_last_checkpoint_holds_what_resuming_needs(synthetic_run):
    run_dir, _ = synthetic_run
    last = torch.load(run_dir / "checkpoints" / "last.pt", weights_only=True)
    assert last["epoch"] == 3 and last["step"] == 45
    assert {"optimizer", "scheduler", "rng", "model", "config"} <= last.keys()
    assert last["optimizer"]["state"], "Adam's moments are saved"


@pytest.mark.slow
def test_overrides_change_choices_and_values(tmp_path):
    result = run_trainlab(["train", "dataset=synthetic", "optimizer=sgd", "optimizer.lr=0.05", "schedule=step",
                           "model=mlp", "trainer.epochs=1"], tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    (run_dir,) = run_folders(tmp_path)
    best = torch.load(run_dir / "checkpoints" / "last.pt", weights_only=True)
    assert best["config"]["optimizer"]["_target_"] == "torch.optim.SGD"
    assert best["optimizer"]["param_groups"][0]["initial_lr"] == 0.05
    assert {"fc1.weight", "head.weight"} <= best["model"].keys(), "an MLP: fc1 ... head"
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["choices"]["optimizer"] == "sgd" and summary["choices"]["model"] == "mlp"


@pytest.mark.slow
def test_fashion_mnist_slice(tmp_path):
    require_fashion_mnist()
    result = run_trainlab(["train", "dataset.train_size=2000", "dataset.val_size=500", "trainer.epochs=2",
                           "model.channels=[16,32]", "optimizer=adam", "optimizer.lr=0.003",
                           "dataset.root=" + str(tmp_path / "data")],
                          tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    (run_dir,) = run_folders(tmp_path)
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["train_size"] == 2000 and summary["val_size"] == 500 and summary["test_size"] == 10000
    assert summary["test"]["acc"] > 0.3, "two epochs on 2000 Fashion-MNIST images beat 10% chance clearly"


@pytest.mark.slow
def test_multirun_leaves_one_folder_per_job(tmp_path):
    result = run_trainlab(["train", "-m", *QUICK, "trainer.epochs=1", "optimizer=sgd,adam"], tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    folders = run_folders(tmp_path, "multirun")
    assert [f.name for f in folders] == ["0", "1"]
    assert folders[0].parent == folders[1].parent
    targets = {json.loads((f / "summary.json").read_text())["choices"]["optimizer"] for f in folders}
    assert targets == {"sgd", "adam"}


def test_help_lists_groups_and_options(tmp_path):
    result = run_trainlab(["train", "--help"], tmp_path)
    assert result.returncode == 0
    assert "optimizer: adadelta, adagrad, adam, adamw, momentum, nadam, nesterov, radam, rmsprop, sgd" in result.stdout
    for group in ("dataset", "schedule", "tta", "callbacks", "model", "init"):  # each option file of each group
        line = f"{group}: " + ", ".join(sorted(p.stem for p in (CONFIGS / group).glob("*.yaml")))
        assert line in result.stdout, line
    assert not (tmp_path / "outputs").exists(), "--help makes no run folder"


def test_cfg_job_prints_config_without_importing_torch(tmp_path):
    code = ("import sys; from trainlab.cli import main; main(['train', '--cfg', 'job', 'optimizer=sgd']); "
            "assert 'torch' not in sys.modules, 'torch was imported'")
    result = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    config = OmegaConf.create(result.stdout)
    assert config.optimizer._target_ == "torch.optim.SGD"
    assert not (tmp_path / "outputs").exists()


def test_user_configs_folder_adds_options(tmp_path):
    (tmp_path / "configs" / "optimizer").mkdir(parents=True)
    (tmp_path / "configs" / "optimizer" / "my_sgd.yaml").write_text(
        "_target_: torch.optim.SGD\n_partial_: true\nlr: 0.123\nmomentum: 0.5\n")
    result = run_trainlab(["train", "--cfg", "job", "optimizer=my_sgd"], tmp_path)
    assert result.returncode == 0, result.stderr
    assert OmegaConf.create(result.stdout).optimizer.lr == 0.123


@pytest.mark.parametrize("override, key", [
    ("trainer.epochs=-1", "trainer.epochs"),
    ("trainer.batch_size=abc", "trainer.batch_size"),
    ("trainer.device=tpu", "trainer.device"),
    ("optimizer.lr=-0.1", "optimizer"),
    ("model.activation=swishy", "model.activation"),
])
@pytest.mark.slow
def test_bad_values_fail_at_start_with_one_clear_line(tmp_path, override, key):
    earlier = tmp_path / "outputs" / "train" / "2020-01-01" / "00-00-00"
    earlier.mkdir(parents=True)
    (earlier / "summary.json").write_text('{"status": "completed"}')
    result = run_trainlab(["train", *QUICK, override], tmp_path)
    assert result.returncode == 2
    errors = [line for line in result.stderr.splitlines() if line.startswith("trainlab: error:")]
    assert len(errors) == 1 and key in errors[0], result.stderr
    assert "Traceback" not in result.stderr
    assert (earlier / "summary.json").read_text() == '{"status": "completed"}', "earlier runs are untouched"
    assert run_folders(tmp_path) == [] and sorted((tmp_path / "outputs" / "train").iterdir()) == [earlier.parent], \
        "no new folder"


def test_unknown_option_names_the_group(tmp_path):
    result = run_trainlab(["train", "optimizer=adamm"], tmp_path)
    assert result.returncode == 2
    errors = [line for line in result.stderr.splitlines() if line.startswith("trainlab: error:")]
    assert len(errors) == 1, result.stderr
    assert errors[0].startswith("trainlab: error: optimizer=adamm: no such option; choose one of ")
    listed = errors[0].split("choose one of ")[1].split(" (")[0].split(", ")
    assert listed == sorted(p.stem for p in (CONFIGS / "optimizer").glob("*.yaml"))


def test_unknown_command(tmp_path):
    result = run_trainlab(["trian"], tmp_path)
    assert result.returncode == 2 and "unknown command 'trian'" in result.stderr


@pytest.mark.slow
def test_missing_dataset_message(tmp_path, monkeypatch):
    # An explicit empty root, no system folder visible, download off: the message says where and how.
    result = run_trainlab(["train", "dataset.root=" + str(tmp_path / "nothing"), "dataset.download=false",
                           "dataset.system_root=" + str(tmp_path / "no_system")], tmp_path)
    assert result.returncode == 2, result.stderr
    assert "Fashion-MNIST not found" in result.stderr and "apt-get install dataset-fashion-mnist" in result.stderr


def test_runs_started_in_the_same_second_get_their_own_folders(tmp_path):
    from trainlab.commands import claim_run_dir

    now = datetime(2026, 1, 2, 3, 4, 5)
    first, second, third = (claim_run_dir(tmp_path / "outputs" / "train", now) for _ in range(3))
    assert first.name == "03-04-05" and first.parent.name == "2026-01-02"
    assert len({first, second, third}) == 3 and all(p.is_dir() for p in (first, second, third))


@pytest.mark.slow
def test_explicit_run_dir_is_respected(tmp_path):
    result = run_trainlab(["train", *QUICK, "trainer.epochs=1", "hydra.run.dir=mine"], tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    assert (tmp_path / "mine" / "summary.json").is_file() and (tmp_path / "mine" / ".hydra").is_dir()
    assert not (tmp_path / "outputs").exists()


def files_and_bytes(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.mark.slow
def test_a_folder_holding_a_run_is_never_written_by_another(tmp_path):
    assert run_trainlab(["train", *QUICK, "trainer.epochs=1", "hydra.run.dir=done"], tmp_path).returncode == 0
    before = files_and_bytes(tmp_path / "done")
    assert {"summary.json", "checkpoints/best.pt", "checkpoints/last.pt"} <= set(before)
    again = run_trainlab(["train", *QUICK, "trainer.epochs=1", "hydra.run.dir=done"], tmp_path)
    assert again.returncode == 2
    errors = [line for line in again.stderr.splitlines() if line.startswith("trainlab: error:")]
    assert len(errors) == 1 and "hydra.run.dir=done: that folder already holds a run" in errors[0]
    assert "trainer.resume=done" in errors[0] and "Traceback" not in again.stderr
    assert files_and_bytes(tmp_path / "done") == before, "not one byte of the finished run changed"


@pytest.mark.slow
def test_a_sweep_folder_holding_jobs_is_refused(tmp_path):
    sweep = tmp_path / "sweep"
    (sweep / "0").mkdir(parents=True)
    (sweep / "0" / "summary.json").write_text('{"status": "completed"}')
    result = run_trainlab(["train", "-m", *QUICK, "optimizer.lr=0.1,0.2", "hydra.sweep.dir=sweep"], tmp_path)
    assert result.returncode == 2 and "hydra.sweep.dir=sweep: that folder already holds a sweep" in result.stderr
    assert sorted(p.name for p in sweep.iterdir()) == ["0"]
    assert (sweep / "0" / "summary.json").read_text() == '{"status": "completed"}'


@pytest.mark.slow
def test_a_bad_config_leaves_no_folder_behind(tmp_path):
    for bad in (["trainer.epochs=0"], ["optimizer.lr=-1"], ["callbacks.ema.decay=7"], ["optimizer=adamm"],
                ["augmentation=standard", "augmentation.ops.crop.padding=-3"]):
        result = run_trainlab(["train", *QUICK, *bad], tmp_path)
        assert result.returncode == 2, (bad, result.stderr[-1000:])
        assert not (tmp_path / "outputs").exists(), bad


@pytest.mark.slow
def test_every_job_of_a_grid_sweep_is_checked_before_the_sweep_starts(tmp_path):
    result = run_trainlab(["train", "-m", *QUICK, "optimizer.lr=0.01,-1", "trainer.epochs=1"], tmp_path)
    assert result.returncode == 2
    errors = [line for line in result.stderr.splitlines() if line.startswith("trainlab: error:")]
    assert len(errors) == 1 and "optimizer.lr=-1: must be a number > 0" in errors[0], result.stderr
    assert "job " in errors[0] and "optimizer.lr=-1" in errors[0].split(": ")[2], "the error names the job"
    assert not (tmp_path / "outputs").exists(), "not even the good job ran: no sweep folder"


@pytest.mark.slow
def test_a_callback_of_ones_own_is_one_class_and_one_yaml(tmp_path):
    (tmp_path / "my_probe.py").write_text(
        "import json\n"
        "from trainlab.callbacks import Callback\n\n"
        "class Probe(Callback):\n"
        "    def __init__(self, tag='probe'):\n"
        "        self.tag, self.seen = tag, []\n"
        "    def on_epoch_end(self, trainer, end):\n"
        "        self.seen.append(round(end.metrics['val/acc'], 6))\n"
        "    def on_fit_end(self, trainer, result, error):\n"
        "        (self.run.run_dir / f'{self.tag}.json').write_text(json.dumps(self.seen))\n")
    (tmp_path / "configs" / "callbacks").mkdir(parents=True)
    (tmp_path / "configs" / "callbacks" / "probe.yaml").write_text("probe:\n  _target_: my_probe.Probe\n  tag: probe\n")
    import os

    env_path = os.environ.get("PYTHONPATH", "")
    os.environ["PYTHONPATH"] = f"{tmp_path}{os.pathsep}{env_path}" if env_path else str(tmp_path)
    try:
        result = run_trainlab(["train", *QUICK, "callbacks=[default,probe]", "callbacks.probe.tag=seen",
                               "hydra.run.dir=run"], tmp_path)
    finally:
        os.environ["PYTHONPATH"] = env_path
    assert result.returncode == 0, result.stderr[-2000:]
    seen = json.loads((tmp_path / "run" / "seen.json").read_text())
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert len(seen) == 2 and max(seen) == pytest.approx(summary["best"]["value"], abs=1e-6)


@pytest.mark.slow
def test_a_killed_run_resumed_in_place_ends_as_if_left_alone(tmp_path):
    """SIGKILL in the middle of an epoch, then `trainlab train trainer.resume=<folder>` with no other
    override: the run continues in its own folder, from its own config, inside the epoch where its last.pt
    was written (trainer.checkpoint_every_steps), to the same weights, metrics and TensorBoard scalars (the
    points logged after last.pt superseded) as the same run left alone. Dropout and flips draw randomness
    in every step, so any lost or repeated draw would show."""
    import os
    import signal

    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from conftest import trainlab_executable

    config = ["train", "dataset=synthetic", "dataset.num_train=600", "dataset.val_size=100", "model=mlp",
              "model.hidden=[32]", "model.dropout=0.2", "augmentation=flip", "trainer.batch_size=8",
              "trainer.epochs=6", "trainer.log_every=3", "trainer.checkpoint_every_steps=5",
              "optimizer=adam", "optimizer.lr=0.001"]  # a stable run (lr 0.1 at batch 8 makes this MLP chaotic)
    straight = run_trainlab([*config, "hydra.run.dir=straight"], tmp_path)
    assert straight.returncode == 0, straight.stderr[-2000:]

    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    process = subprocess.Popen([trainlab_executable(), *config, "hydra.run.dir=cut"], cwd=tmp_path, env=env,
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    last = tmp_path / "cut" / "checkpoints" / "last.pt"
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and process.poll() is None:  # kill it early in epoch 3 (63 batches each)
        try:
            payload = torch.load(last, weights_only=True)  # written atomically: never half a file
        except FileNotFoundError:
            payload = {}
        if payload.get("epoch", 0) >= 2 and payload.get("progress") and payload["progress"]["batch"] < 30:
            process.send_signal(signal.SIGKILL)
            break
        time.sleep(0.005)
    process.communicate(timeout=120)
    assert process.returncode == -signal.SIGKILL, "killed before it finished"
    cut = torch.load(last, weights_only=True)
    assert cut["progress"] is not None and 0 < cut["progress"]["batch"] < 63, "last.pt from inside an epoch"
    stopped_at = cut["epoch"]
    original = {name: (tmp_path / "cut" / ".hydra" / name).read_bytes() for name in ("config.yaml", "overrides.yaml")}

    resumed = run_trainlab(["train", "trainer.resume=cut"], tmp_path)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert f"at epoch {stopped_at + 1} (inside it: batch {cut['progress']['batch'] + 1}, step {cut['step'] + 1})" \
        in resumed.stdout.replace("\n", " ")
    assert not (tmp_path / "outputs").exists(), "resumed in place: no new run folder"
    assert {n: (tmp_path / "cut" / ".hydra" / n).read_bytes() for n in original} == original
    ours = torch.load(tmp_path / "cut" / "checkpoints" / "last.pt", weights_only=True)
    reference = torch.load(tmp_path / "straight" / "checkpoints" / "last.pt", weights_only=True)
    assert ours["step"] == reference["step"] and ours["epoch"] == 6
    for key, tensor in reference["model"].items():
        assert torch.equal(ours["model"][key], tensor), key
    summaries = [json.loads((tmp_path / name / "summary.json").read_text()) for name in ("straight", "cut")]
    assert summaries[0]["best"] == summaries[1]["best"] and summaries[0]["test"] == summaries[1]["test"]
    assert summaries[1]["choices"] == summaries[0]["choices"], "the run's own choices, not the defaults'"
    runs = {}
    for name in ("straight", "cut"):
        events = EventAccumulator(str(tmp_path / name / "tensorboard"), size_guidance={"scalars": 0})
        events.Reload()
        runs[name] = {tag: [(e.step, e.value) for e in events.Scalars(tag)]
                      for tag in ("train/loss", "train/acc", "val/acc")}
    for tag in ("train/loss", "train/acc", "val/acc"):
        steps = [step for step, _ in runs["cut"][tag]]
        assert steps == sorted(set(steps)), f"{tag}: duplicated or out-of-order points"
        assert runs["cut"][tag] == runs["straight"][tag], tag


@pytest.mark.slow
@pytest.mark.parametrize("name, code", [("SIGTERM", 143), ("SIGINT", 130)])
def test_a_signal_ends_a_run_as_interrupted_with_how_to_continue(tmp_path, name, code):
    """SIGTERM (a scheduler's) and Ctrl-C stop at the next step boundary: status interrupted, the signal and
    the step in summary.json, the command that continues, no traceback."""
    import os
    import signal

    from conftest import trainlab_executable

    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    process = subprocess.Popen([trainlab_executable(), "train", *QUICK, "trainer.epochs=400", "hydra.run.dir=run"],
                               cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    for line in process.stdout:
        if line.startswith("epoch   2/400"):
            process.send_signal(getattr(signal, name))
            break
    _, stderr = process.communicate(timeout=300)
    assert process.returncode == code, stderr[-2000:]
    assert "Traceback" not in stderr
    assert f"continue with: trainlab train trainer.resume={tmp_path / 'run'}" in stderr
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["status"] == "interrupted" and summary["signal"] == name and summary["steps"] > 0
    last = torch.load(tmp_path / "run" / "checkpoints" / "last.pt", weights_only=True)
    assert last["step"] == summary["steps"], "last.pt of the step the signal stopped at"
    assert last["progress"]["epoch"] == last["epoch"] + 1 and last["progress"]["batch"] >= 1


@pytest.mark.slow
def test_resume_refuses_a_different_config(tmp_path):
    config = ["train", *QUICK, "trainer.epochs=2", "hydra.run.dir=first"]
    assert run_trainlab(config, tmp_path).returncode == 0
    result = run_trainlab(["train", *QUICK, "trainer.epochs=2", "optimizer.lr=0.1", "trainer.resume=first"],
                          tmp_path)
    assert result.returncode == 2
    assert "optimizer.lr=0.1" in result.stderr and "leave optimizer.lr out" in result.stderr
    finished = run_trainlab(["train", *QUICK, "trainer.epochs=2", "trainer.resume=first"], tmp_path)
    assert finished.returncode == 2 and "already finished" in finished.stderr
    missing = run_trainlab(["train", *QUICK, "trainer.resume=nowhere"], tmp_path)
    assert missing.returncode == 2 and "trainer.resume=nowhere: no checkpoint there" in missing.stderr


@pytest.mark.slow
def test_a_checkpoint_from_before_a_key_existed_resumes_at_its_default(tmp_path):
    assert run_trainlab(["train", *QUICK, "hydra.run.dir=old"], tmp_path).returncode == 0
    last = tmp_path / "old" / "checkpoints" / "last.pt"
    payload = torch.load(last, weights_only=True)
    del payload["config"]["model"]["dropout"], payload["config"]["callbacks"]["ema"]["every"]  # an older trainlab's run
    payload["epoch"] = 1  # as if it had stopped after its first epoch (only the config check matters here)
    torch.save(payload, last)
    refused = run_trainlab(["train", *QUICK, "model.dropout=0.3", "trainer.resume=old"], tmp_path)
    assert refused.returncode == 2 and "model.dropout=0.3" in refused.stderr and "<absent>" in refused.stderr
    resumed = run_trainlab(["train", *QUICK, "trainer.resume=old", "hydra.run.dir=new"], tmp_path)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert json.loads((tmp_path / "new" / "summary.json").read_text())["epochs_run"] == 2


@pytest.mark.slow
def test_divergence_stops_a_run_but_not_a_sweep(tmp_path):
    config = ["dataset=synthetic", "model=mlp", "model.hidden=[32]", "optimizer=sgd", "trainer.epochs=2"]
    single = run_trainlab(["train", *config, "optimizer.lr=1e6"], tmp_path)
    assert single.returncode == 2 and "train/loss became nan" in single.stderr
    (run_dir,) = run_folders(tmp_path)
    assert json.loads((run_dir / "summary.json").read_text())["status"] == "diverged"

    sweep = run_trainlab(["train", "-m", *config, "optimizer.lr=1e6,0.05"], tmp_path)
    assert sweep.returncode == 0, sweep.stderr[-2000:]
    statuses = [json.loads((f / "summary.json").read_text())["status"] for f in run_folders(tmp_path, "multirun")]
    assert statuses == ["diverged", "completed"]


@pytest.mark.slow
def test_augment_writes_a_grid_png_and_logs_it_to_tensorboard(tmp_path):
    from torchvision.io import read_image

    result = run_trainlab(["augment", "dataset=synthetic", "augmentation=flip_crop", "augmentation.ops.crop.padding=6",
                           "grid.images=3", "grid.versions=4"], tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    (png,) = (tmp_path / "outputs" / "augment").rglob("augment.png")
    assert str(png) in result.stdout.replace("\n", "")
    grid = read_image(str(png))
    tile, pad = 28 * 2, 2  # 28x28 images drawn x2
    assert grid.shape[1:] == (3 * (tile + pad) + pad, 5 * (tile + pad) + pad)
    row = [grid[:, pad:pad + tile, pad + c * (tile + pad):pad + c * (tile + pad) + tile] for c in range(5)]
    assert sum(not torch.equal(row[0], other) for other in row[1:]) >= 3, "the draws differ from the original"
    events = EventAccumulator(str(png.parent / "tensorboard"))
    events.Reload()
    assert "augment/grid" in events.Tags()["images"]


def test_grid_rows_start_with_the_originals():
    from trainlab.data.augment import HorizontalFlip
    from trainlab.data.pipeline import Pipeline
    from trainlab.commands.augment import grid_rows

    originals = torch.randint(0, 256, (2, 1, 4, 5), dtype=torch.uint8)
    tiles = grid_rows(originals, Pipeline({"flip": HorizontalFlip(p=1.0)}), None, 3, torch.Generator())
    assert tiles.shape == (8, 1, 4, 5)
    assert torch.equal(tiles[0], originals[0]) and torch.equal(tiles[4], originals[1])
    assert torch.equal(tiles[1], originals[0].flip(-1)) and torch.equal(tiles[7], originals[1].flip(-1))


def write_image_folder(root: Path, classes=("cat", "dog", "fox"), per_class=10, with_test=True) -> Path:
    from torchvision.io import write_png

    gen = torch.Generator().manual_seed(0)
    for split, count in (("train", per_class), ("test", 3)) if with_test else (("train", per_class),):
        for k, name in enumerate(classes):
            folder = root / split / name
            folder.mkdir(parents=True)
            for i in range(count):  # each class its own colour, plus noise: learnable
                image = torch.full((3, 12, 12), 40, dtype=torch.uint8)
                image[k] = 200
                image = (image.int() + torch.randint(-30, 30, (3, 12, 12), generator=gen)).clamp(0, 255).to(torch.uint8)
                write_png(image, str(folder / f"{i}.png"))
    return root


@pytest.mark.parametrize("memory, path", [("2048", "in memory"), ("0", "streamed")])
@pytest.mark.slow
def test_imagefolder_trains_in_memory_and_streamed(tmp_path, memory, path):
    root = write_image_folder(tmp_path / "pets")
    result = run_trainlab(["train", "dataset=imagefolder", f"dataset.root={root}", "dataset.image_size=8",
                           f"dataset.max_memory_mb={memory}", "dataset.val_size=6", "dataset.num_workers=0",
                           "model=mlp", "model.hidden=[16]", "optimizer.lr=0.01", "trainer.epochs=3",
                           "trainer.batch_size=8", "augmentation=flip"], tmp_path)
    assert result.returncode == 0, f"{path}: {result.stderr[-3000:]}"
    (run_dir,) = run_folders(tmp_path)
    summary = json.loads((run_dir / "summary.json").read_text())
    assert (summary["train_size"], summary["val_size"], summary["test_size"]) == (24, 6, 9)
    assert summary["test"]["acc"] > 0.5, "three colours are easy to tell apart"
    best = torch.load(run_dir / "checkpoints" / "best.pt", weights_only=True)
    assert best["classes"] == ["cat", "dog", "fox"]
    assert (root / ".trainlab_cache").exists() == (path == "in memory")


@pytest.mark.slow
def test_imagefolder_without_test_split_reports_no_test(tmp_path):
    root = write_image_folder(tmp_path / "pets", with_test=False)
    result = run_trainlab(["train", "dataset=imagefolder", f"dataset.root={root}", "dataset.image_size=8",
                           "dataset.val_size=6", "dataset.num_workers=0", "model=mlp", "model.hidden=[8]",
                           "trainer.epochs=1"], tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    (run_dir,) = run_folders(tmp_path)
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["status"] == "completed" and summary["test"] is None


@pytest.mark.slow
def test_empty_class_folder_fails_with_its_name(tmp_path):
    root = write_image_folder(tmp_path / "pets")
    (root / "train" / "owl").mkdir()
    result = run_trainlab(["train", "dataset=imagefolder", f"dataset.root={root}", "dataset.image_size=8"], tmp_path)
    assert result.returncode == 2 and "owl" in result.stderr and "Traceback" not in result.stderr


@pytest.mark.parametrize("overrides, message", [
    (["augmentation=flip", "augmentation.ops.flip.p=1.5"], "augmentation.ops.flip: cannot build trainlab.data.augment.HorizontalFlip: p=1.5: a probability must be in [0, 1]"),
    (["augmentation=mixup", "augmentation.mix.mixup_alpha=-1"], "augmentation.mix: mixup_alpha=-1"),
    (["augmentation=cutout", "augmentation.ops.cutout.size=40"], "augmentation.ops.cutout: size=40"),
    (["+augmentation.ops.blur._target_=trainlab.data.augment.GaussianBlur"], "augmentation.ops.blur._target_=trainlab.data.augment.GaussianBlur: trainlab.data.augment has no 'GaussianBlur'"),
    (["dataset.folds=5", "dataset.fold=5"], "dataset.fold=5: must be in 0..k-1"),
])
@pytest.mark.slow
def test_bad_augmentation_and_split_settings_fail_at_start(tmp_path, overrides, message):
    result = run_trainlab(["train", "dataset=synthetic", *overrides], tmp_path)
    assert result.returncode == 2, result.stderr[-2000:]
    errors = [line for line in result.stderr.splitlines() if line.startswith("trainlab: error:")]
    assert len(errors) == 1 and message in errors[0], result.stderr[-2000:]
    assert not list((tmp_path / "outputs").rglob("*.pt")), "nothing was trained"


def test_one_op_can_be_changed_or_dropped_from_the_command_line(tmp_path):
    result = run_trainlab(["train", "augmentation=standard", "augmentation.ops.crop.padding=2", "~augmentation.ops.flip",
                           "--cfg", "job"], tmp_path)
    assert result.returncode == 0, result.stderr
    ops = OmegaConf.create(result.stdout).augmentation.ops
    assert list(ops) == ["crop"] and ops.crop.padding == 2


@pytest.mark.slow
def test_kfold_validation_folds_partition_the_training_split(tmp_path):
    base = ["train", "dataset=synthetic", "dataset.num_train=300", "dataset.folds=3", "model=mlp",
            "model.hidden=[8]", "trainer.epochs=1"]
    for fold in range(3):
        result = run_trainlab([*base, f"dataset.fold={fold}", f"hydra.run.dir=fold{fold}"], tmp_path)
        assert result.returncode == 0, result.stderr[-2000:]
    sizes = [json.loads((tmp_path / f"fold{k}" / "summary.json").read_text()) for k in range(3)]
    assert [s["val_size"] for s in sizes] == [100, 100, 100]
    assert all(s["train_size"] == 200 for s in sizes)


@pytest.mark.slow
def test_pretrain_then_linear_probe_through_the_cli(tmp_path):
    small = ["dataset=synthetic", "model.channels=[8,16]", "optimizer.lr=0.003", "callbacks.console.model_summary=false"]
    pretrain = run_trainlab(["train", *small, "trainer.epochs=2", "hydra.run.dir=pre"], tmp_path)
    assert pretrain.returncode == 0, pretrain.stderr[-2000:]
    source = tmp_path / "pre" / "checkpoints" / "best.pt"
    probe = run_trainlab(["train", *small, "experiment=linear_probe", f"model.pretrained={source}",
                          "dataset.generator_seed=1", "dataset.num_classes=5", "trainer.epochs=1",
                          "hydra.run.dir=probe"], tmp_path)
    assert probe.returncode == 0, probe.stderr[-2000:]
    assert "newly initialised: head.weight, head.bias" in probe.stdout
    assert "frozen: model.freeze=backbone" in probe.stdout
    summary = json.loads((tmp_path / "probe" / "summary.json").read_text())
    assert summary["transfer"]["new"] == ["head.weight", "head.bias"] and summary["transfer"]["loaded"] > 0
    assert summary["trainable_params"] == 16 * 5 + 5
    before = torch.load(source, weights_only=True)["model"]
    after = torch.load(tmp_path / "probe" / "checkpoints" / "last.pt", weights_only=True)["model"]
    for key, tensor in before.items():
        if not key.startswith("head."):
            assert torch.equal(after[key], tensor), f"{key} moved although frozen"
    assert after["head.weight"].shape == (5, 16)


@pytest.mark.slow
def test_bad_model_names_and_misfit_weights_fail_with_one_line(tmp_path):
    quick = ["dataset=synthetic", "trainer.epochs=1", "callbacks.console.model_summary=false"]
    typo = run_trainlab(["train", *quick, "model=torchvision", "model.name=resnt18"], tmp_path)
    assert typo.returncode == 2 and "model.name" in typo.stderr and "resnet18" in typo.stderr, typo.stderr[-2000:]
    mlp = run_trainlab(["train", *quick, "model=mlp", "hydra.run.dir=mlp"], tmp_path)
    assert mlp.returncode == 0, mlp.stderr[-2000:]
    misfit = run_trainlab(["train", *quick, "model.pretrained=mlp"], tmp_path)
    errors = [line for line in misfit.stderr.splitlines() if line.startswith("trainlab: error:")]
    assert misfit.returncode == 2 and len(errors) == 1, misfit.stderr[-2000:]
    assert "model.pretrained=mlp" in errors[0] and "not fit" in errors[0] and "features.0.weight" in errors[0]


@pytest.mark.parametrize("overrides, message", [
    (["optimizer.lr=0"], "optimizer.lr=0: must be a number > 0"),
    (["optimizer=momentum", "optimizer.momentum=1"], "optimizer.momentum=1: must be a number in [0, 1)"),
    (["optimizer.betas=[0.9,1.0]"], "optimizer.betas"),
    (["schedule.warmup_epochs=5", "trainer.epochs=5"], "schedule.warmup_epochs=5: must be >= 0 and shorter than training"),
    (["schedule=multistep", "schedule.milestone_unit=epoch", "schedule.milestones=[30,60,90]"],
     "schedule.milestones=[30, 60, 90]: epoch 30 is past the last epoch"),
    (["trainer.monitor=val_ema/acc"], "trainer.monitor=val_ema/acc: never logged because the EMA is off"),
])
@pytest.mark.slow
def test_bad_optimizer_schedule_and_monitor_settings_fail_at_start(tmp_path, overrides, message):
    result = run_trainlab(["train", "dataset=synthetic", "callbacks.console.model_summary=false", *overrides], tmp_path)
    errors = [line for line in result.stderr.splitlines() if line.startswith("trainlab: error:")]
    assert result.returncode == 2 and len(errors) == 1 and message in errors[0], result.stderr[-2000:]
    assert not list((tmp_path / "outputs").rglob("*.pt")), "stopped before training"


@pytest.mark.slow
def test_early_stopping_and_ema_through_the_cli(tmp_path):
    result = run_trainlab(["train", "dataset=synthetic", "model=mlp", "trainer.epochs=30", "optimizer.lr=1e-9",
                           "schedule=constant", "callbacks.early_stopping.patience=2", "callbacks.ema.decay=0.9",
                           "callbacks.console.model_summary=false"], tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    (run_dir,) = run_folders(tmp_path)
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["stopped_early"] and "did not improve" in summary["stopped_early"]
    assert summary["epochs_run"] < 30 and summary["ema"] == 0.9
    assert "did not improve" in result.stdout
    assert "val_ema/acc" in scalars(run_dir)
