"""Domain adaptation end to end through the CLI: `experiment=dann` with a target domain, the source-only
baseline, target labels that never reach the loss, two processes, and the refusals of domains that cannot meet."""

from __future__ import annotations

import gzip
import json
import struct
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import require_fashion_mnist, run_folders, run_trainlab

SMALL = ["model.channels=[8,16]", "model.blocks_per_stage=1", "trainer.log_every=4",
         "callbacks.console.model_summary=false"]


def summary_of(run: Path) -> dict:
    return json.loads((run / "summary.json").read_text())


def scalar_tags(run: Path) -> set[str]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    tags: set[str] = set()
    for path in (run / "tensorboard").glob("events.out.tfevents.*"):
        events = EventAccumulator(str(path))
        events.Reload()
        tags |= set(events.Tags()["scalars"]) | {f"image:{t}" for t in events.Tags()["images"]}
    return tags


@pytest.mark.parametrize("adaptation", ["dann", "none"])
def test_dann_and_the_source_only_baseline_run_end_to_end_on_fashion_mnist_m(tmp_path, adaptation):
    require_fashion_mnist()
    result = run_trainlab(["train", "experiment=dann", "dataset=fashion_mnist", "domain=fashion_mnist_m",
                           f"adaptation={adaptation}", "dataset.train_size=384", "dataset.val_size=256",
                           "domain.data.train_size=384", "trainer.epochs=1", "trainer.batch_size=64",
                           "callbacks.images.features=64", "callbacks.images.features_projection=pca", *SMALL],
                          tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    (run,) = run_folders(tmp_path)
    summary = summary_of(run)
    assert summary["status"] == "completed"
    assert summary["adaptation"] == {"method": adaptation, "domain": "fashion_mnist+textured",
                                     "target_train_size": 384, "target_test_size": 10000}
    assert 0.0 <= summary["target_test"]["acc"] <= 1.0 and 0.0 <= summary["test"]["acc"] <= 1.0
    assert "target test acc (fashion_mnist+textured)" in result.stdout
    assert (run / "features.png").stat().st_size > 10_000
    tags = scalar_tags(run)
    assert {"target_test/acc", "image:adaptation/features"} <= tags
    domain_tags = {"domain/acc", "domain/lambda", "domain/loss_source", "domain/loss_target"}
    assert (domain_tags <= tags) if adaptation == "dann" else not (domain_tags & tags)
    best = torch.load(run / "checkpoints" / "best.pt", weights_only=True)
    assert not any(key.startswith("domain") for key in best["model"])  # the deployable classifier alone
    first_conv = next(v for k, v in best["model"].items() if v.dim() == 4)
    assert first_conv.shape[1] == 3  # grey source images repeated to RGB, the target's channel count
    last = torch.load(run / "checkpoints" / "last.pt", weights_only=True)
    assert ("adaptation" in last) == (adaptation == "dann")


def write_idx(path: Path, array: np.ndarray) -> None:
    data = bytes([0, 0, 0x08, array.ndim]) + b"".join(struct.pack(">I", d) for d in array.shape) + array.tobytes()
    path.write_bytes(gzip.compress(data))


def write_target(folder: Path, train_labels: np.ndarray) -> None:
    """A small MNIST-format target domain: the same images whatever `train_labels` says."""
    rng = np.random.default_rng(5)
    folder.mkdir(parents=True, exist_ok=True)
    write_idx(folder / "train-images-idx3-ubyte.gz", rng.integers(0, 256, (160, 28, 28), dtype=np.uint8))
    write_idx(folder / "train-labels-idx1-ubyte.gz", train_labels.astype(np.uint8))
    write_idx(folder / "t10k-images-idx3-ubyte.gz", rng.integers(0, 256, (40, 28, 28), dtype=np.uint8))
    write_idx(folder / "t10k-labels-idx1-ubyte.gz", (np.arange(40) % 10).astype(np.uint8))


SYNTHETIC_DANN = ["experiment=dann", "dataset=synthetic", "dataset.num_train=232", "dataset.val_size=40",
                  "dataset.num_test=40", "domain=mnist", "domain.shift=inverted", "domain.data.download=false",
                  "trainer.epochs=2", "trainer.batch_size=32", "trainer.amp=false", "augmentation=none", "tta=none",
                  "callbacks.images.features=0", *SMALL]


def weights(run: Path) -> dict[str, torch.Tensor]:
    last = torch.load(run / "checkpoints" / "last.pt", weights_only=True)
    return {**last["model"], **{f"domain.{k}": v for k, v in last.get("adaptation", {}).get("classifier", {}).items()}}


def test_target_labels_never_reach_the_loss_scrambled_they_give_the_same_weights(tmp_path):
    labels = np.arange(160) % 10
    write_target(tmp_path / "target_a", labels)
    write_target(tmp_path / "target_b", np.random.default_rng(1).permutation(labels)[::-1].copy())
    runs = {}
    for name, extra in (("a", ["domain.data.root=target_a"]), ("b", ["domain.data.root=target_b"]),
                        ("none", ["domain.data.root=target_a", "adaptation=none"])):
        result = run_trainlab(["train", *SYNTHETIC_DANN, *extra, f"hydra.run.dir=runs/{name}"], tmp_path)
        assert result.returncode == 0, result.stderr[-2000:]
        runs[name] = weights(tmp_path / "runs" / name)
    assert runs["a"].keys() == runs["b"].keys() and any(k.startswith("domain.") for k in runs["a"])
    assert all(torch.equal(runs["a"][k], runs["b"][k]) for k in runs["a"])
    # the target images do train the model (so the equality above is not vacuous)
    assert any(not torch.equal(runs["a"][k], runs["none"][k]) for k in runs["none"])


@pytest.mark.slow
def test_two_processes_train_dann_as_one_process_does(tmp_path):
    write_target(tmp_path / "target", np.arange(160) % 10)
    exact = [*SYNTHETIC_DANN, "domain.data.root=target", "model.norm=none", "adaptation.dropout=0",
             "dataset.num_train=235"]  # 195 training images: the last batch (3) splits unevenly
    for name, devices in (("one", 1), ("two", 2)):
        result = run_trainlab(["train", *exact, f"trainer.devices={devices}", f"hydra.run.dir=runs/{name}"], tmp_path)
        assert result.returncode == 0, result.stderr[-2000:]
    one, two = weights(tmp_path / "runs" / "one"), weights(tmp_path / "runs" / "two")
    assert max((one[k] - two[k]).abs().max().item() for k in one) < 1e-5
    assert summary_of(tmp_path / "runs" / "two")["target_test"] == pytest.approx(
        summary_of(tmp_path / "runs" / "one")["target_test"], abs=1e-5)


@pytest.mark.parametrize("overrides, message", [
    (["adaptation=dann"], "adaptation=dann: needs a target domain to adapt to; add e.g. domain=fashion_mnist_m"),
    (["domain=fashion_mnist_m", "dataset.num_classes=4"],
     "dataset=synthetic has 4 classes but domain.data=fashion_mnist has 10: the two domains must share one label set"),
    (["domain=shifted", "dataset.channels=2"],
     "dataset=synthetic has 2-channel images and domain=synthetic+inverted 2-channel ones: only grey (1) and RGB (3)"),
    (["domain=mnist_m", "domain.data.root=nowhere"], "MNIST-M not found (looked in nowhere/mnist_m, nowhere)"),
    (["domain=fashion_mnist_m", "domain.shift=swirled"], "domain.shift='swirled': unknown shift; use null or one of"),
    (["experiment=dann", "adaptation.lambda_schedule=steep"],
     "adaptation.lambda_schedule='steep': must be ganin or constant"),
    (["experiment=dann", "adaptation.hidden=[0]"], "adaptation.hidden=[0]: must be a list of whole numbers >= 1"),
])
def test_domains_that_cannot_meet_are_refused_before_anything_is_written(tmp_path, overrides, message):
    result = run_trainlab(["train", "dataset=synthetic", *overrides], tmp_path)
    assert result.returncode != 0
    assert message in result.stderr, result.stderr[-1500:]
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "outputs").exists()


@pytest.mark.slow
def test_a_killed_dann_run_resumed_ends_as_if_left_alone(tmp_path):
    """SIGKILL inside an epoch, then trainer.resume: the domain classifier, the target loader's order, position
    and random streams come back from last.pt, so the weights are bit-identical to the run left alone (the
    target pass (5 batches) does not line up with the source epoch (6 batches), flips and the domain
    classifier's dropout draw every step)."""
    import signal
    import subprocess
    import time

    from conftest import trainlab_executable

    write_target(tmp_path / "target", np.arange(160) % 10)
    config = ["train", *SYNTHETIC_DANN, "domain.data.root=target", "augmentation=flip", "trainer.epochs=8",
              "trainer.checkpoint_every_steps=2"]
    straight = run_trainlab([*config, "hydra.run.dir=straight"], tmp_path)
    assert straight.returncode == 0, straight.stderr[-2000:]
    process = subprocess.Popen([trainlab_executable(), *config, "hydra.run.dir=cut"], cwd=tmp_path,
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    last = tmp_path / "cut" / "checkpoints" / "last.pt"
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and process.poll() is None:
        try:
            payload = torch.load(last, weights_only=True)
        except (FileNotFoundError, RuntimeError, EOFError):
            payload = {}
        if payload.get("epoch", 0) >= 2 and payload.get("progress"):
            process.send_signal(signal.SIGKILL)
            break
        time.sleep(0.002)
    process.communicate(timeout=120)
    assert process.returncode == -signal.SIGKILL, "killed before it finished"
    resumed = run_trainlab(["train", "trainer.resume=cut"], tmp_path)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    ours, reference = weights(tmp_path / "cut"), weights(tmp_path / "straight")
    assert ours.keys() == reference.keys() and any(k.startswith("domain.") for k in ours)
    for key, tensor in reference.items():
        assert torch.equal(ours[key], tensor), key


def test_eval_scores_the_target_split_and_draws_the_baseline_beside_dann(tmp_path):
    write_target(tmp_path / "target", np.arange(160) % 10)
    quick = [*SYNTHETIC_DANN, "domain.data.root=target", "trainer.epochs=1"]
    without_domain = [key for key in quick if not key.startswith("domain")] + ["~domain", "adaptation=none"]
    for name, args in (("dann", quick), ("none", [*quick, "adaptation=none"]), ("plain", without_domain)):
        result = run_trainlab(["train", *args, f"hydra.run.dir=runs/{name}"], tmp_path)
        assert result.returncode == 0, result.stderr[-2000:]
    result = run_trainlab(["eval", "checkpoint=runs/dann", "split=target", "compare=runs/none",
                           "hydra.run.dir=evaluated"], tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    report = json.loads((tmp_path / "evaluated" / "eval.json").read_text())
    assert report["split"] == "target" and report["samples"] == 40
    assert report["acc"] == pytest.approx(summary_of(tmp_path / "runs" / "dann")["target_test"]["acc"], abs=1e-6)
    assert report["logged"]["plain"]["acc"] == pytest.approx(report["acc"], abs=1e-6)
    assert (tmp_path / "evaluated" / "features.png").stat().st_size > 10_000
    refused = run_trainlab(["eval", "checkpoint=runs/plain", "split=target"], tmp_path)
    assert refused.returncode != 0 and "was trained without a target domain" in refused.stderr
    assert "Traceback" not in refused.stderr


def test_a_diverging_dann_run_stops_with_the_divergence_message(tmp_path):
    """A NaN loss in a DANN run ends as a divergence, with its one line and summary.json. (Here the weights go
    non-finite first, so the report's replay of the source batch, done when only the loss is, is not reached.)"""
    write_target(tmp_path / "target", np.arange(160) % 10)
    result = run_trainlab(["train", *SYNTHETIC_DANN, "domain.data.root=target", "optimizer.lr=1e8",
                           "hydra.run.dir=run"], tmp_path)
    assert result.returncode != 0
    assert "train/loss became" in result.stderr and "Traceback" not in result.stderr, result.stderr[-1500:]
    assert json.loads((tmp_path / "run" / "summary.json").read_text())["status"] == "diverged"
