"""Shared helpers: run the `trainlab` console script as a user would, in a temporary folder."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

FASHION_MNIST_SYSTEM = Path("/usr/share/datasets/fashion-mnist")
# Small and fast: a run on the synthetic dataset with a tiny CNN (one block per stage) and Adam, which learns
# it within two epochs (the default experiment's SGD is tuned for full Fashion-MNIST runs).
QUICK = ["dataset=synthetic", "trainer.epochs=2", "model.channels=[16,32]", "model.blocks_per_stage=1", "optimizer=adam",
         "optimizer.lr=0.003", "trainer.log_every=5"]


def trainlab_executable() -> str:
    script = Path(sys.executable).with_name("trainlab")
    if not script.exists():
        pytest.fail(f"the trainlab console script is not installed next to {sys.executable}; pip install -e .")
    return str(script)


def run_trainlab(args: list[str], cwd: Path, timeout: float = 300) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("HYDRA_")}
    env["PYTHONWARNINGS"] = "ignore::DeprecationWarning"
    return subprocess.run([trainlab_executable(), *args], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=timeout)


def run_folders(root: Path, kind: str = "train") -> list[Path]:
    """The run folders under root/outputs/<kind>: the ones holding a .hydra folder."""
    return sorted(p.parent for p in (root / "outputs" / kind).rglob(".hydra"))


def require_fashion_mnist() -> None:
    """Skip when the real data is absent on a developer's machine; in CI (CI=true) it must be there."""
    if not (FASHION_MNIST_SYSTEM / "train-images-idx3-ubyte.gz").exists():
        if os.environ.get("CI"):
            pytest.fail("Fashion-MNIST is missing in CI: apt-get install dataset-fashion-mnist")
        pytest.skip("Fashion-MNIST not installed (apt-get install dataset-fashion-mnist)")


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    return tmp_path


@pytest.fixture(scope="module")
def one_thread():
    """One intra-op thread for a module of tiny models: threads only add contention on 2 shared cores."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
