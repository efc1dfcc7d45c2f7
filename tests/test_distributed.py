"""Data-parallel training (trainer.devices, torchrun) on this CPU with gloo: the ranks' union is the
single-process run, one run folder, failures and signals end every rank, resume brings every rank back."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from conftest import run_folders, run_trainlab, trainlab_executable
from trainlab.data.loader import DeviceLoader

# No randomness but the shuffling (no augmentation, dropout or batch norm), fp32: the gradient of a batch
# split in two and averaged by DDP is the whole batch's, so the weights must agree to float rounding.
# 501 training examples at batch 64: the last batch (53) splits unevenly (27 / 26) and must be weighed.
EXACT = ["dataset=synthetic", "dataset.num_train=533", "dataset.val_size=32", "dataset.num_test=63",
         "trainer.epochs=2", "model.channels=[8,16]", "model.norm=none", "augmentation=none",
         "trainer.batch_size=64", "trainer.amp=false", "tta=none", "callbacks.console.model_summary=false"]


def weights(run: Path) -> dict[str, torch.Tensor]:
    return torch.load(run / "checkpoints" / "last.pt", weights_only=True)["model"]


def largest_difference(a: dict, b: dict) -> float:
    assert a.keys() == b.keys()
    return max((a[k].float() - b[k].float()).abs().max().item() for k in a)


def event_files(run: Path) -> list[Path]:
    return sorted((run / "tensorboard").rglob("events.out.tfevents.*"))


# -- the loader's shards ----------------------------------------------------------------------------


def shard_loaders(ranks: int, count: int = 53, batch: int = 8, shuffle: bool = True) -> list[DeviceLoader]:
    images = torch.arange(count, dtype=torch.uint8).view(count, 1, 1, 1)
    labels = torch.arange(count)
    loaders = []
    for rank in range(ranks):
        loader = DeviceLoader(images, labels, batch, normalize=lambda x: x.float(), shuffle=shuffle, seed=3)
        if ranks > 1:
            loader.shard(rank, ranks, seed=3)
        loaders.append(loader)
    return loaders


@pytest.mark.parametrize("ranks", [2, 3])
def test_the_ranks_batches_together_are_the_single_process_batches(ranks):
    (single,) = shard_loaders(1)
    parts = shard_loaders(ranks)
    for epoch in range(2):  # the permutation moves on alike on every rank
        whole = [labels.tolist() for _, labels in single]
        pieces = [[labels.tolist() for _, labels in loader] for loader in parts]
        assert all(len(p) == len(whole) for p in pieces), "every rank steps as often"
        for i, batch in enumerate(whole):
            joined = [x for p in pieces for x in p[i]]
            assert joined == batch, f"epoch {epoch} batch {i}: the ranks' parts in rank order are the batch"
            sizes = [len(p[i]) for p in pieces]
            assert max(sizes) - min(sizes) <= 1 and sizes == sorted(sizes, reverse=True)
            assert parts[0].global_batch(i) == len(batch)


def test_a_last_training_batch_smaller_than_the_ranks_is_left_out_and_evaluation_loses_nothing():
    parts = shard_loaders(4, count=17, batch=8)  # 8 + 8 + 1: the last one cannot give each of 4 ranks a sample
    assert [len(loader) for loader in parts] == [2] * 4
    evaluation = shard_loaders(4, count=17, batch=8, shuffle=False)
    seen = sorted(x for loader in evaluation for _, labels in loader for x in labels.tolist())
    assert seen == list(range(17)), "evaluation shards cover the split exactly once"


def test_each_rank_augments_with_its_own_stream_and_shuffles_with_the_shared_one():
    a, b = shard_loaders(2)
    assert torch.equal(a.order_generator.get_state(), b.order_generator.get_state())
    assert not torch.equal(a.generator.get_state(), b.generator.get_state())
    next(iter(a)), next(iter(b))
    state = a.rng_state()
    assert set(state) == {"loader", "order"}
    first = [labels.tolist() for _, labels in a]
    a.set_rng_state(state)
    assert [labels.tolist() for _, labels in a] == first, "rng_state/set_rng_state bring the epoch back"


# -- whole runs -------------------------------------------------------------------------------------


@pytest.mark.slow
def test_two_processes_train_the_weights_one_process_trains(tmp_path):
    """trainer.devices=2 (and torchrun with 2 processes) against one process with the same global batch and
    seed, with gradient accumulation on: the same weights after every step, the same metrics (the ranks'
    sums and counts reduced), one run folder with one event file, best.pt and summary.json."""
    one = run_trainlab(["train", *EXACT, "trainer.accumulate=2", "hydra.run.dir=one"], tmp_path)
    assert one.returncode == 0, one.stderr[-2000:]
    two = run_trainlab(["train", *EXACT, "trainer.accumulate=2", "trainer.devices=2"], tmp_path)
    assert two.returncode == 0, two.stderr[-2000:]
    (folder,) = run_folders(tmp_path)
    assert largest_difference(weights(tmp_path / "one"), weights(folder)) < 1e-6
    single, parallel = (json.loads((run / "summary.json").read_text()) for run in (tmp_path / "one", folder))
    assert parallel["devices"] == 2 and single["devices"] == 1 and parallel["status"] == "completed"
    assert parallel["steps"] == single["steps"] and parallel["train_size"] == single["train_size"] == 501
    # each rank trained on its part of every batch, not on the whole of it (same gradients either way)
    assert parallel["train_samples"] == single["train_samples"] == 2 * 501
    for split in ("test",):
        assert parallel[split]["acc"] == pytest.approx(single[split]["acc"], abs=1e-9)
        assert parallel[split]["loss"] == pytest.approx(single[split]["loss"], rel=1e-5)
    for key in ("train/loss", "val/loss", "val/acc", "train/acc"):
        assert parallel["final"][key] == pytest.approx(single["final"][key], rel=1e-5), key
    # rank 0 alone writes: the event files of one process (its scalars, and the HParams session's)
    assert len(event_files(folder)) == len(event_files(tmp_path / "one")) == 2
    assert (folder / "checkpoints" / "best.pt").is_file()
    assert "epoch 2/2" in (folder / "train.log").read_text(), "rank 0's console lines reach train.log"

    env = {k: v for k, v in os.environ.items() if not k.startswith("HYDRA_")}
    torchrun = Path(sys.executable).with_name("torchrun")
    launched = subprocess.run([str(torchrun), "--nproc-per-node", "2", "-m", "trainlab", "train", *EXACT,
                               "trainer.accumulate=2", "hydra.run.dir=torchrun"], cwd=tmp_path, env=env,
                              capture_output=True, text=True, timeout=300)
    assert launched.returncode == 0, launched.stderr[-2000:]
    assert largest_difference(weights(folder), weights(tmp_path / "torchrun")) < 1e-6
    assert len(run_folders(tmp_path)) == 1, "torchrun's ranks made no folder of their own"
    assert json.loads((tmp_path / "torchrun" / "summary.json").read_text())["devices"] == 2
    assert len(event_files(tmp_path / "torchrun")) == 2

    # the cluster path: a submitit job of 2 tasks (submitit_local here, submitit_slurm on a cluster)
    cluster = run_trainlab(["train", "-m", *EXACT, "trainer.accumulate=2", "hydra/launcher=submitit_local",
                            "hydra.launcher.tasks_per_node=2", "hydra.launcher.timeout_min=5",
                            "hydra.sweep.dir=cluster"], tmp_path)
    assert cluster.returncode == 0, cluster.stderr[-2000:]
    job = tmp_path / "cluster" / "0"
    assert json.loads((job / "summary.json").read_text())["devices"] == 2
    assert largest_difference(weights(folder), weights(job)) < 1e-6
    assert len(event_files(job)) == 2
    assert (job / "train.log").read_text().count("returned to the sweeper") == 1, "rank 0 alone reports"


FAULTY = '''
from trainlab.callbacks.base import Callback


class FailOnRankOne(Callback):
    every_rank = True

    def on_epoch_end(self, trainer, end):
        if trainer.world.rank == 1 and end.epoch == 2:
            raise RuntimeError("rank one broke on purpose")
'''


@pytest.mark.slow
def test_an_error_in_one_rank_ends_the_run_with_its_message(tmp_path):
    (tmp_path / "faulty.py").write_text(FAULTY)
    env = {k: v for k, v in os.environ.items() if not k.startswith("HYDRA_")}
    env["PYTHONPATH"] = str(tmp_path)
    started = time.monotonic()
    result = subprocess.run([trainlab_executable(), "train", *EXACT, "trainer.epochs=30", "trainer.devices=2",
                             "+callbacks.faulty._target_=faulty.FailOnRankOne", "hydra.run.dir=run"],
                            cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    took = time.monotonic() - started
    assert result.returncode != 0
    assert "rank 1" in result.stderr and "rank one broke on purpose" in result.stderr, result.stderr[-2000:]
    assert "Traceback" not in result.stderr
    assert took < 90, f"the other rank was ended, not left waiting ({took:.0f} s)"
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["status"] == "failed" and "rank one broke on purpose" in summary["error"]


@pytest.mark.slow
def test_ctrl_c_stops_every_rank_and_resume_continues_every_rank_exactly(tmp_path):
    """SIGINT to the job: the ranks agree at a log point, last.pt holds every rank's random streams
    (flips and dropout draw per rank), and `trainer.resume` ends with the weights of the run left alone."""
    config = ["train", "dataset=synthetic", "dataset.num_train=600", "dataset.val_size=100", "model=mlp",
              "model.hidden=[32]", "model.dropout=0.2", "augmentation=flip", "trainer.batch_size=8",
              "trainer.epochs=4", "trainer.log_every=3", "optimizer=adam", "optimizer.lr=0.001",
              "trainer.devices=2", "callbacks.console.model_summary=false"]
    straight = run_trainlab([*config, "hydra.run.dir=straight"], tmp_path)
    assert straight.returncode == 0, straight.stderr[-2000:]
    env = {k: v for k, v in os.environ.items() if not k.startswith("HYDRA_")}
    env["PYTHONUNBUFFERED"] = "1"
    process = subprocess.Popen([trainlab_executable(), *config, "hydra.run.dir=cut"], cwd=tmp_path, env=env,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    for line in process.stdout:
        if line.startswith("epoch 2/4"):
            time.sleep(0.3)
            process.send_signal(signal.SIGINT)
            break
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 130, stderr[-2000:]
    assert f"continue with: trainlab train trainer.resume={tmp_path / 'cut'}" in stderr
    summary = json.loads((tmp_path / "cut" / "summary.json").read_text())
    assert summary["status"] == "interrupted"
    last = torch.load(tmp_path / "cut" / "checkpoints" / "last.pt", weights_only=True)
    assert last["step"] == summary["steps"] and len(last["rng"]["ranks"]) == 2
    resumed = run_trainlab(["train", "trainer.resume=cut"], tmp_path)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    a, b = (torch.load(tmp_path / name / "checkpoints" / "last.pt", weights_only=True) for name in ("straight", "cut"))
    assert a["step"] == b["step"]
    for key, tensor in a["model"].items():
        assert torch.equal(b["model"][key], tensor), key


# -- refused before anything is touched -------------------------------------------------------------


@pytest.mark.parametrize("overrides, message", [
    (["trainer.devices=2", "trainer.batch_size=63"],
     "trainer.batch_size=63: does not divide among trainer.devices=2"),
    (["trainer.devices=2", "trainer.skip_nonfinite=true"], "trainer.skip_nonfinite=true with trainer.devices=2"),
    (["trainer.devices=0"], "trainer.devices=0"),
    (["trainer.sync_bn=true", "trainer.device=cpu"], "trainer.sync_bn=true on cpu: SyncBatchNorm runs on CUDA only"),
    (["trainer.devices=2", "callbacks.images.confusion=epoch"],
     "callbacks.images.confusion=epoch with trainer.devices=2"),
])
def test_settings_data_parallel_runs_cannot_have_are_refused(tmp_path, overrides, message):
    result = run_trainlab(["train", "dataset=synthetic", *overrides], tmp_path)
    assert result.returncode == 2 and message in result.stderr, result.stderr[-2000:]
    assert "Traceback" not in result.stderr and not (tmp_path / "outputs").exists()


def test_torchrun_and_trainer_devices_must_agree(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("HYDRA_")}
    env.update(RANK="0", WORLD_SIZE="2", LOCAL_RANK="0", MASTER_ADDR="127.0.0.1", MASTER_PORT="1")
    for extra, message in ((["trainer.devices=3"], "trainer.devices=3: torchrun started 2 processes"),
                           (["-m", "seed=1,2"], "-m under torchrun")):
        result = subprocess.run([trainlab_executable(), "train", "dataset=synthetic", *extra], cwd=tmp_path,
                                env=env, capture_output=True, text=True, timeout=60)
        assert result.returncode == 2 and message in result.stderr, result.stderr[-2000:]
        assert not (tmp_path / "outputs").exists()


@pytest.mark.slow
def test_every_rank_stops_together_on_early_stopping_and_on_divergence(tmp_path):
    """Decisions taken from reduced values are the same on every rank: early stopping ends the run at one
    epoch for all (no rank left waiting in a collective), and a loss gone NaN stops all at one log point."""
    stopped = run_trainlab(["train", *EXACT, "trainer.epochs=20", "trainer.devices=2", "optimizer.lr=1e-12",
                            "schedule=constant", "callbacks.early_stopping.patience=1", "hydra.run.dir=early"],
                           tmp_path, timeout=300)
    assert stopped.returncode == 0, stopped.stderr[-2000:]
    summary = json.loads((tmp_path / "early" / "summary.json").read_text())
    assert summary["status"] == "completed" and summary["epochs_run"] == 2 and summary["stopped_early"]
    diverged = run_trainlab(["train", *EXACT, "trainer.devices=2", "optimizer.lr=1e12", "schedule=constant",
                             "trainer.log_every=2", "hydra.run.dir=diverged"], tmp_path, timeout=300)
    assert diverged.returncode == 2 and "train/loss became" in diverged.stderr, diverged.stderr[-2000:]
    assert "Traceback" not in diverged.stderr
    assert json.loads((tmp_path / "diverged" / "summary.json").read_text())["status"] == "diverged"


@pytest.mark.slow
def test_a_streamed_dataset_shards_the_same_way(tmp_path):
    """A folder dataset too large for memory (dataset.max_memory_mb=0: decoded batch by batch through the
    DataLoader path) trains to the single process's weights with 2 processes, as the in-memory one does."""
    from test_cli import write_image_folder

    root = write_image_folder(tmp_path / "pets", per_class=22)  # 66 images: 60 train at batch 8, 7 full + 4
    config = ["train", "dataset=imagefolder", f"dataset.root={root}", "dataset.image_size=8", "dataset.max_memory_mb=0",
              "dataset.val_size=6", "dataset.num_workers=0", "model=mlp", "model.hidden=[16]", "optimizer.lr=0.01",
              "trainer.epochs=2", "trainer.batch_size=8", "augmentation=none", "trainer.amp=false", "tta=none",
              "callbacks.console.model_summary=false"]
    for name, extra in (("one", []), ("two", ["trainer.devices=2"])):
        result = run_trainlab([*config, *extra, f"hydra.run.dir={name}"], tmp_path)
        assert result.returncode == 0, f"{name}: {result.stderr[-2000:]}"
    assert not (root / ".trainlab_cache").exists(), "streamed, not cached in memory"
    assert largest_difference(weights(tmp_path / "one"), weights(tmp_path / "two")) < 1e-6
    single, parallel = (json.loads((tmp_path / name / "summary.json").read_text()) for name in ("one", "two"))
    assert parallel["test"]["acc"] == pytest.approx(single["test"]["acc"], abs=1e-9)


@pytest.mark.slow
def test_parallel_jobs_of_a_sweep_each_run_their_ranks_at_their_own_port(tmp_path):
    """hydra/launcher=joblib with 2 jobs at once, each trainer.devices=2: 4 processes, 2 rendezvous ports."""
    import re

    result = run_trainlab(["train", "-m", *EXACT, "trainer.epochs=1", "seed=0,1", "trainer.devices=2",
                           "hydra/launcher=joblib", "hydra.launcher.n_jobs=2", "hydra.sweep.dir=sweep"], tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    ports = set()
    for job in ("0", "1"):
        summary = json.loads((tmp_path / "sweep" / job / "summary.json").read_text())
        assert summary["status"] == "completed" and summary["devices"] == 2
        ports |= set(re.findall(r"rendezvous at 127.0.0.1:(\d+)", (tmp_path / "sweep" / job / "train.log").read_text()))
    assert len(ports) == 2, ports


def test_other_commands_say_they_run_in_one_process(tmp_path):
    result = run_trainlab(["schedule", "trainer.devices=2"], tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "trainer.devices=2 is for trainlab train; schedule runs in one process" in result.stderr
