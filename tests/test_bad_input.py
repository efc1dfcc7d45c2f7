"""Every kind of bad input, as a person would type it: one line that says what is wrong and what to do, a
non-zero exit, no traceback (unless TRAINLAB_DEBUG=1), and every file that existed before byte-identical
(a finished run beside the one that failed, the bad files themselves).

Each case runs the real `trainlab` console script in a folder of its own that holds a finished run
(`done/`), a sweep folder (`sweep/`), broken checkpoint files and a file where a folder might be.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional

import pytest
import torch

from conftest import run_trainlab, trainlab_executable

BASE = ["dataset=synthetic", "trainer.epochs=1", "model.channels=[16,32]", "trainer.log_every=5"]
MLP = ["dataset=synthetic", "trainer.epochs=1", "model=mlp", "model.hidden=[32]"]


@dataclass
class Case:
    args: list[str]
    message: str  # a regular expression the one line must contain
    status: int = 2
    may_write: bool = False  # the failure comes while running: a run folder of its own may be left
    mount: Optional[str] = None  # "full", "nearly_full" or "read_only": a small tmpfs at ./disk
    prefix: str = "trainlab: error: "
    interrupt_after: Optional[float] = None  # SIGINT this many seconds after the start
    env: dict = field(default_factory=dict)


CASES = {
    # ---- composition: groups, keys, types, ranges
    "unknown optimizer option": Case(["train", *BASE, "optimizer=adamm"],
                                     r"optimizer=adamm: no such option; choose one of adadelta, .*adam, adamw"),
    "unknown model option": Case(["train", *BASE, "model=resnet2"],
                                 r"model=resnet2: no such option; choose one of .*resnet20"),
    "unknown augmentation option": Case(["train", *BASE, "augmentation=nonesuch"],
                                        r"augmentation=nonesuch: no such option; choose one of affine, "),
    "unknown init option": Case(["train", *BASE, "init=nonesuch"],
                                r"init=nonesuch: no such option; choose one of .*kaiming_normal"),
    "misspelt group": Case(["train", *BASE, "optimizr=adam"],
                           r"optimizr: no such key in the composed config; did you mean optimizer=adam\?"),
    "misspelt key": Case(["train", *BASE, "optimizer.lrr=0.1"],
                         r"optimizer.lrr: no such key .*did you mean optimizer.lr=0.1\? \(to add a new key: "
                         r"\+optimizer.lrr=0.1\)"),
    "misspelt trainer key": Case(["train", *BASE, "trainer.epoch=3"], r"did you mean trainer.epochs=3\?"),
    "misspelt callback key": Case(["train", *BASE, "callbacks.ema.decayy=0.9"],
                                  r"did you mean callbacks.ema.decay=0.9\?"),
    "misspelt parent": Case(["train", *BASE, "optimiser.lr=0.1"], r"did you mean optimizer.lr=0.1"),
    "added unknown key": Case(["train", *BASE, "+trainer.foo=3"],
                              r"trainer.foo: unknown key; known keys: accumulate, .*epochs"),
    "moved key": Case(["train", *BASE, "trainer.ema.decay=0.9"],
                      r"trainer.ema.decay: moved to callbacks.ema"),
    "not a number": Case(["train", *BASE, "trainer.epochs=abc"], r"trainer.epochs='abc': expected int"),
    "a list for a number": Case(["train", *BASE, "trainer.batch_size=[1,2]"],
                                r"trainer.batch_size=\[1, 2\]: must be a whole number >= 1 or full"),
    "zero epochs": Case(["train", *BASE, "trainer.epochs=0"], r"trainer.epochs=0: must be a whole number >= 1"),
    "negative lr": Case(["train", *BASE, "optimizer.lr=-1"], r"optimizer.lr=-1: must be a number > 0"),
    "momentum out of range": Case(["train", *BASE, "optimizer=sgd", "optimizer.momentum=2"],
                                  r"optimizer.momentum=2: must be a number in \[0, 1\)"),
    "negative warmup": Case(["train", *BASE, "schedule=cosine", "schedule.warmup_epochs=-2"],
                            r"schedule.warmup_epochs=-2: must be >= 0"),
    "label smoothing out of range": Case(["train", *BASE, "trainer.label_smoothing=2"],
                                         r"trainer.label_smoothing=2.0: must be a number in \[0, 1\)"),
    "dropout out of range": Case(["train", *BASE, "model.dropout=1.5"], r"model.dropout=1.5: must be in \[0, 1\)"),
    "model channels a word": Case(["train", *BASE, "model.channels=abc"],
                                  r"model.channels=abc: must be a list of whole numbers"),
    "checkpoint every zero steps": Case(["train", *BASE, "trainer.checkpoint_every_steps=0"],
                                        r"trainer.checkpoint_every_steps=0: must be null .* or a whole number >= 1"),
    "early stopping patience zero": Case(["train", *BASE, "callbacks.early_stopping.patience=0"],
                                         r"callbacks.early_stopping.patience=0: must be null \(off\)"),
    "negative train size": Case(["train", *BASE, "dataset.train_size=-5"], r"dataset.train_size=-5: must be null"),
    "validation larger than the data": Case(["train", *BASE, "dataset.val_size=5000"],
                                            r"dataset.val_size=5000: leaves no training examples"),
    "no such device": Case(["train", *BASE, "trainer.device=cuda"],
                           r"trainer.device=cuda: CUDA is not available here; use trainer.device=auto or cpu"),
    "a search without -m": Case(["train", *BASE, "hparams_search=lr_wd_random"],
                                r"hparams_search=lr_wd_random: a search runs many jobs; add -m"),
    "unknown command": Case(["trian", *BASE], r"unknown command 'trian'; did you mean train\?"),
    # ---- data
    "missing dataset": Case(["train", "dataset=cifar10", "dataset.download=false"],
                            r"CIFAR-10 not found .*Unpack cifar-10-python.tar.gz into dataset.root"),
    "missing image folder": Case(["train", *BASE, "dataset=imagefolder", "dataset.root=nowhere"],
                                 r"dataset.root=nowhere: folder not found"),
    "corrupt dataset files": Case(["train", *BASE, "dataset=mnist", "dataset.root=badmnist", "dataset.download=false"],
                                  r"badmnist/train-images-idx3-ubyte: truncated IDX file", may_write=True),
    # ---- checkpoints, in each place one is read
    "resume from nowhere": Case(["train", *BASE, "trainer.resume=nowhere"],
                                r"trainer.resume=nowhere: no checkpoint there"),
    "resume a folder that is not a run": Case(["train", *BASE, "trainer.resume=empty"],
                                              r"trainer.resume=empty: no checkpoint there"),
    "resume a truncated checkpoint": Case(["train", *BASE, "trainer.resume=truncated.pt"],
                                          r"trainer.resume=truncated.pt: truncated.pt is not a readable trainlab "
                                          r"checkpoint \(it is truncated or damaged\)"),
    "resume random bytes": Case(["train", *BASE, "trainer.resume=random.pt"],
                                r"random.pt is not a readable trainlab checkpoint \(it is not a PyTorch file\)"),
    "resume pickled code": Case(["train", *BASE, "trainer.resume=pickled.pt"],
                                r"it holds a pickled Python object \(argparse.Namespace\), which is not loaded"),
    "resume a foreign torch file": Case(["train", *BASE, "trainer.resume=foreign.pt"],
                                        r"foreign.pt is a PyTorch file but not a trainlab checkpoint"),
    "resume a finished run": Case(["train", *BASE, "trainer.resume=done"],
                                  r"trainer.resume=done: that run already finished all 1 epochs"),
    "resume from best.pt": Case(["train", *BASE, "trainer.resume=done/checkpoints/best.pt"],
                                r"best.pt holds weights only; resume from last.pt"),
    "resume with another lr": Case(["train", *BASE, "trainer.resume=done", "trainer.epochs=3", "optimizer.lr=0.5"],
                                   r"this run has optimizer.lr=0.5 but the checkpoint's run had 0.1"),
    "pretrained truncated": Case(["train", *BASE, "model.pretrained=truncated.pt"],
                                 r"model.pretrained=truncated.pt: cannot read it as a weights file \(it is truncated"),
    "pretrained missing": Case(["train", *BASE, "model.pretrained=nowhere.pt"],
                               r"model.pretrained=nowhere.pt: no such file"),
    "pretrained random bytes": Case(["train", *BASE, "model.pretrained=random.pt"],
                                    r"model.pretrained=random.pt: cannot read it as a weights file \(it is not a"),
    "eval truncated": Case(["eval", "checkpoint=truncated.pt"],
                           r"checkpoint=truncated.pt: truncated.pt is not a readable trainlab checkpoint \(it is "
                           r"truncated"),
    "eval missing": Case(["eval", "checkpoint=nowhere"], r"checkpoint=nowhere: no such file or folder"),
    "eval a folder that is not a run": Case(["eval", "checkpoint=empty"],
                                            r"checkpoint=empty: that folder has no checkpoints/best.pt"),
    "eval a key it takes from the checkpoint": Case(["eval", "checkpoint=done", "optimizer.lr=0.1"],
                                                    r"optimizer.lr=0.1: eval takes this from the checkpoint's own"),
    "ensemble with a member that is not a run": Case(["ensemble", "members=[done,empty]"],
                                                     r"members=empty: not a trainlab run or sweep folder"),
    "activations of a truncated checkpoint": Case(["activations", "checkpoint=truncated.pt"],
                                                  r"checkpoint=truncated.pt: .* \(it is truncated"),
    # ---- output folders
    "run folder holding a run": Case(["train", *BASE, "hydra.run.dir=done"],
                                     r"hydra.run.dir=done: that folder already holds a run; nothing in it was changed"),
    "sweep folder holding a sweep": Case(["train", "-m", *BASE, "optimizer.lr=0.1,0.2", "hydra.sweep.dir=sweep"],
                                         r"hydra.sweep.dir=sweep: that folder already holds a sweep"),
    "run folder is a file": Case(["train", *BASE, "hydra.run.dir=a_file"],
                                 r"hydra.run.dir=a_file: a file is there, not a folder"),
    "run folder under a file": Case(["train", *BASE, "hydra.run.dir=a_file/run"],
                                    r"hydra.run.dir=a_file/run: .*a_file is a file, so the folder cannot be made"),
    "read-only output folder": Case(["train", *BASE, "hydra.run.dir=disk/run"],
                                    r"hydra.run.dir=disk/run: .*disk is not writable", mount="read_only"),
    "full output folder": Case(["train", *BASE, "hydra.run.dir=disk/run"],
                               r"could not write into disk/run: No space left on device; free some space",
                               status=1, mount="full", may_write=True),
    "output folder filling up while training": Case(
        ["train", *BASE, "hydra.run.dir=disk/run"],
        r"could not write .*disk/run/(checkpoints/\w+\.pt|summary.json)\S*: No space left on device; free some space",
        mount="nearly_full", may_write=True),
    # ---- while running
    "nan loss": Case(["train", *MLP, "optimizer=sgd", "optimizer.lr=1e6"],
                     r"train/loss became nan at the log point of step \d+ \(epoch 1, .*; lower optimizer.lr", may_write=True),
    "model too large for memory": Case(["train", *MLP, "model.hidden=[1000000,1000000]"],
                                       r"model: 1,000,\d{3},\d{3},\d{3} parameters need [\d.]+ GiB for weights and "
                                       r"gradients alone, more than the [\d.]+ GiB free on cpu; make the model "
                                       r"smaller \(model.channels, model.hidden"),
    "ctrl-c during start-up": Case(["train", *BASE], r"interrupted \(before the run started", status=130,
                                   prefix="trainlab: ", interrupt_after=0.3),
}


def write_inputs(folder: Path, finished: Path) -> None:
    """What every case finds beside it: a finished run, a sweep, broken files, a file in a folder's place."""
    shutil.copytree(finished, folder / "done")
    (folder / "sweep").mkdir()
    (folder / "sweep" / "multirun.yaml").write_text("hydra: {}\n")
    shutil.copytree(finished, folder / "sweep" / "0")
    last = (finished / "checkpoints" / "last.pt").read_bytes()
    (folder / "truncated.pt").write_bytes(last[: len(last) // 3])
    (folder / "random.pt").write_bytes(bytes(torch.randint(0, 256, (4096,), generator=torch.Generator().manual_seed(0),
                                                           dtype=torch.uint8).tolist()))
    torch.save({"format": "trainlab-checkpoint-v1", "options": argparse.Namespace(lr=0.1)}, folder / "pickled.pt")
    torch.save({"w": torch.zeros(3)}, folder / "foreign.pt")
    (folder / "empty").mkdir()
    (folder / "a_file").write_text("a file where a folder could be\n")
    (folder / "badmnist").mkdir()
    for name in ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"):
        (folder / "badmnist" / name).write_bytes(b"\x00\x00\x08\x01" + bytes(range(60)))


def contents(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("finished")
    result = run_trainlab(["train", *BASE, "hydra.run.dir=run"], folder)
    assert result.returncode == 0, result.stderr[-2000:]
    return folder / "run"


def mount_disk(folder: Path, kind: str) -> Callable[[], None]:
    """A 1 MiB tmpfs at folder/disk: read-only, full, or with 160 KiB left (less than a run writes)."""
    disk = folder / "disk"
    disk.mkdir()
    options = "ro,size=1m" if kind == "read_only" else "size=1m"
    made = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(disk)], capture_output=True, text=True)
    if made.returncode != 0:
        if os.environ.get("CI"):
            pytest.fail(f"mount a tmpfs (needs root): {made.stderr.strip()}")
        pytest.skip(f"cannot mount a tmpfs here: {made.stderr.strip()}")
    if kind != "read_only":
        left = 0 if kind == "full" else 160 * 1024
        with open(disk / "filler", "wb") as filler:
            try:
                filler.write(bytes(1024 * 1024 - left))
            except OSError:
                pass  # full: what fitted stays
    return lambda: subprocess.run(["umount", str(disk)], check=True)


def catches_sigint(pid: int, timeout: float = 30) -> None:
    """Wait until process `pid` catches SIGINT (its SigCgt mask in /proc has bit 2)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("SigCgt:") and int(line.split()[1], 16) & (1 << (signal.SIGINT - 1)):
                return
        time.sleep(0.01)
    raise AssertionError(f"process {pid} never installed a SIGINT handler")


def run_case(case: Case, folder: Path) -> subprocess.CompletedProcess:
    """The console script in `folder`, with the case's environment; interrupted with SIGINT if it says so."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HYDRA_", "TRAINLAB_"))}
    env = {**env, "PYTHONWARNINGS": "ignore::DeprecationWarning", **case.env}
    process = subprocess.Popen([trainlab_executable(), *case.args], cwd=folder, env=env, text=True,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    if case.interrupt_after is not None:
        catches_sigint(process.pid)  # Python's handler is in place: the Ctrl-C reaches trainlab, not the default
        time.sleep(case.interrupt_after)
        process.send_signal(signal.SIGINT)
    out, err = process.communicate(timeout=300)
    return subprocess.CompletedProcess(process.args, process.returncode, out, err)


@pytest.mark.parametrize("name", list(CASES))
def test_bad_input_gets_one_line_a_nonzero_exit_and_changes_nothing(name, tmp_path, finished_run):
    import re

    case = CASES[name]
    write_inputs(tmp_path, finished_run)
    unmount = mount_disk(tmp_path, case.mount) if case.mount else None
    try:
        before = contents(tmp_path)
        result = run_case(case, tmp_path)
        after = contents(tmp_path)
    finally:
        if unmount is not None:
            unmount()
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert "Traceback" not in result.stderr + result.stdout, result.stderr[-3000:]
    assert len(lines) == 1, result.stderr[-3000:]
    assert lines[0].startswith(case.prefix), lines
    assert re.search(case.message, lines[0]), lines[0]
    assert result.returncode == case.status, (result.returncode, lines[0])
    changed = [path for path, data in before.items() if after.get(path) != data]
    assert not changed, f"changed or removed: {changed}"
    if not case.may_write:  # refused before anything was written: no run folder, no new file
        assert sorted(set(after) - set(before)) == [], sorted(set(after) - set(before))
        assert not (tmp_path / "outputs").exists()


def test_trainlab_debug_shows_the_traceback_a_bad_input_would_hide(tmp_path):
    unmount = mount_disk(tmp_path, "full")
    try:
        quiet = run_case(Case(["train", *BASE, "hydra.run.dir=disk/run"], ""), tmp_path)
        debug = run_case(Case(["train", *BASE, "hydra.run.dir=disk/run2"], "", env={"TRAINLAB_DEBUG": "1"}), tmp_path)
    finally:
        unmount()
    assert quiet.returncode == 1 and "Traceback" not in quiet.stderr
    assert debug.returncode != 0 and "Traceback (most recent call last)" in debug.stderr
    assert "No space left on device" in debug.stderr.splitlines()[-1]


@pytest.mark.parametrize("error, expected", [
    (torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB (GPU 0; 7.79 GiB total capacity)"),
     r"^out of memory \(it asks for 2.00 GiB\); make trainer.batch_size smaller, or the model smaller"),
    (RuntimeError("[enforce fail at alloc_cpu.cpp:127] DefaultCPUAllocator: can't allocate memory: you tried to "
                  "allocate 8589934592 bytes."), r"^out of memory \(it asks for 8.0 GiB\); make trainer.batch_size"),
    (OSError(28, "No space left on device", "runs/x/train.log"),
     r"^could not write runs/x/train.log: No space left on device; free some space or choose another output"),
    (OSError(30, "Read-only file system", "runs/x"), r"^could not write runs/x: Read-only file system; free some"),
    (KeyError("boom"), r"^unexpected KeyError: 'boom' \(TRAINLAB_DEBUG=1 shows the traceback\)$"),
])
def test_an_error_that_reaches_the_command_line_is_one_line_with_advice(error, expected):
    """What the command line prints for errors the corpus cannot provoke on this machine (a CUDA out of
    memory while training) or that come from anywhere (a bug): one line, exit 1."""
    import re

    from trainlab.errors import explain

    message, status = explain(error)
    assert re.search(expected, message), message
    assert "\n" not in message and status == 1
