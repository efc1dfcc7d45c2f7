"""Long runs and long sweeps hold their resources flat: a run's peak memory does not grow with its epochs,
and a sweep of many jobs in one process leaves no open files or threads behind.

A probe callback (one class, one YAML in ./configs, as a user adds one) records what the process holds
at each epoch end (run) or each job's start (sweep), with every default callback on: checkpoints,
TensorBoard, the console.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from conftest import run_trainlab

PROBE = '''
import json, os, resource, threading
from trainlab.callbacks import Callback


class Probe(Callback):
    """Appends {epoch, peak_rss_kib, fds, threads} to <cwd>/probe.jsonl at the events it is told."""

    def __init__(self, at="epoch_end"):
        self.at = at

    def record(self, epoch):
        with open("probe.jsonl", "a") as out:
            out.write(json.dumps({"epoch": epoch,
                                  "peak_rss_kib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
                                  "fds": len(os.listdir("/proc/self/fd")),
                                  "threads": threading.active_count()}) + "\\n")

    def on_fit_start(self, trainer, *args):
        if self.at == "fit_start":
            self.record(0)

    def on_epoch_end(self, trainer, end):
        if self.at == "epoch_end":
            self.record(end.epoch)
'''

TINY = ["dataset=synthetic", "dataset.num_train=640", "dataset.val_size=128", "dataset.num_test=128",
        "model.channels=[8,16]", "trainer.batch_size=64", "trainer.log_every=5", "callbacks=[default,probe]"]


def with_probe(folder: Path, at: str) -> dict:
    (folder / "load_probe.py").write_text(PROBE)
    (folder / "configs" / "callbacks").mkdir(parents=True)
    (folder / "configs" / "callbacks" / "probe.yaml").write_text(
        f"probe:\n  _target_: load_probe.Probe\n  at: {at}\n")
    path = os.environ.get("PYTHONPATH", "")
    return {"PYTHONPATH": f"{folder}{os.pathsep}{path}" if path else str(folder)}


def records(folder: Path) -> list[dict]:
    return [json.loads(line) for line in (folder / "probe.jsonl").read_text().splitlines()]


@pytest.mark.slow
def test_peak_memory_after_30_epochs_is_within_5_percent_of_after_2(tmp_path, monkeypatch):
    for key, value in with_probe(tmp_path, "epoch_end").items():
        monkeypatch.setenv(key, value)
    result = run_trainlab(["train", *TINY, "trainer.epochs=30", "callbacks.checkpoint.save_last=true"], tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    seen = records(tmp_path)
    assert [r["epoch"] for r in seen] == list(range(1, 31))
    after_2, after_30 = seen[1]["peak_rss_kib"], seen[-1]["peak_rss_kib"]
    assert after_30 < after_2 * 1.05, f"peak RSS grew from {after_2} KiB (epoch 2) to {after_30} KiB (epoch 30)"
    assert seen[-1]["fds"] <= seen[1]["fds"] and seen[-1]["threads"] <= seen[1]["threads"]


@pytest.mark.slow
def test_a_50_job_sweep_in_one_process_leaks_no_files_or_threads(tmp_path, monkeypatch):
    for key, value in with_probe(tmp_path, "fit_start").items():
        monkeypatch.setenv(key, value)
    result = run_trainlab(["train", "-m", *TINY, "dataset.num_train=256", "dataset.val_size=64", "trainer.epochs=1",
                           "seed=range(50)", "hydra.sweep.dir=sweep"], tmp_path, timeout=1200)
    assert result.returncode == 0, result.stderr[-2000:]
    seen = records(tmp_path)
    assert len(seen) == 50  # the basic launcher: every job in this one process
    # A leak grows with the jobs (one file per job would be +40 by the end); a file open for a moment while
    # the probe looks (TensorBoard's writer finishing) is not one.
    early, late = seen[2:12], seen[-10:]
    for kind in ("fds", "threads"):  # what the last jobs hold at the least: no more than the first at the most
        assert min(r[kind] for r in late) <= max(r[kind] for r in early), [r[kind] for r in seen]
    assert late[-1]["peak_rss_kib"] < early[3]["peak_rss_kib"] * 1.05, [r["peak_rss_kib"] for r in seen]
