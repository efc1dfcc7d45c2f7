"""Speed work (issue 12): airbench's whitened net, the `auto` trainer choices, the speed-run experiment and
the benchmark suite's own plumbing (its figures are measured by `make benchmark`, never asserted here)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir

from trainlab.build import build_experiment
from trainlab.config import validate
from trainlab.errors import ConfigError
from trainlab.models.airbench import Airbench, image_patches
from trainlab.runtime import (resolve_amp, resolve_channels_last, resolve_compile, resolve_eval_batch_size)

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = ROOT / "configs"
CPU, CUDA, MPS = torch.device("cpu"), torch.device("cuda"), torch.device("mps")
TINY = ["dataset=synthetic", "dataset.num_train=96", "dataset.val_size=32", "dataset.num_test=32",
        "trainer.batch_size=32", "trainer.epochs=1"]


def composed(*overrides):
    with initialize_config_dir(str(CONFIGS), version_base="1.3"):
        return compose("train", overrides=list(overrides))


def digits(n=64, seed=0):
    """Images with structure (neighbouring pixels correlated), like real ones: blurred noise."""
    x = torch.randn(n, 1, 16, 16, generator=torch.Generator().manual_seed(seed))
    return torch.nn.functional.avg_pool2d(x, 3, stride=1, padding=1) * 3 + 0.5


# --- the whitened net -------------------------------------------------------------------------------------


def test_whitening_decorrelates_the_training_patches():
    images = digits()
    model = Airbench([1, 16, 16], 10, channels=[8, 16], whiten_kernel=2, whiten_eps=1e-8)
    raw = image_patches(images, 2)
    raw_covariance = raw.T @ raw / len(raw)
    assert (raw_covariance - torch.diag(raw_covariance.diag())).abs().max() > 0.1  # neighbours correlate
    model.init_from_data(images)
    weight = model.whiten.weight.detach()
    assert weight.shape == (8, 1, 2, 2)
    assert torch.allclose(weight[:4], -weight[4:])  # each filter and its negative: GELU keeps both signs
    responses = raw @ weight[:4].reshape(4, -1).T.double().float()
    covariance = responses.T @ responses / len(responses)
    assert torch.allclose(covariance, torch.eye(4), atol=1e-3)  # whitened: unit variance, uncorrelated
    assert torch.all(model.whiten.bias == 0)


def test_only_the_whitening_bias_and_the_batch_norm_shifts_learn_beside_the_convs():
    model = Airbench([1, 28, 28], 10, channels=[8, 16, 16])
    frozen = {name for name, p in model.named_parameters() if not p.requires_grad}
    assert "whiten.weight" in frozen and "whiten.bias" not in frozen
    assert {n for n in frozen if n != "whiten.weight"} == {n for n, _ in model.named_parameters()
                                                           if n.endswith(("norm1.weight", "norm2.weight"))}
    logits = model(torch.randn(4, 1, 28, 28))
    assert logits.shape == (4, 10)
    logits.sum().backward()
    assert model.whiten.weight.grad is None and model.groups[0].norm1.weight.grad is None
    assert model.head.bias is None and model.groups[0].conv1.weight.grad is not None


def test_convs_start_as_identity_on_their_first_channels():
    conv = Airbench([1, 28, 28], 10, channels=[8, 8]).groups[1].conv1
    x = torch.randn(2, 8, 5, 5)
    assert torch.allclose(conv(x), x, atol=1e-6)


@pytest.mark.parametrize("kwargs, key", [
    ({"channels": [8, 8, 8, 8, 8]}, "model.channels"),
    ({"channels": []}, "model.channels"),
    ({"whiten_kernel": 0}, "model.whiten_kernel"),
])
def test_bad_airbench_settings_name_their_key(kwargs, key):
    with pytest.raises(ConfigError, match=key):
        Airbench([1, 28, 28], 10, **kwargs)


def test_build_fits_the_whitening_to_a_training_batch_without_changing_the_shuffle():
    cfg = validate(composed(*TINY, "model=airbench", "model.channels=[8,8]"))
    experiment = build_experiment(cfg)
    assert experiment.init_report["init_from_data"] is True
    weight = experiment.model.whiten.weight.detach()
    assert torch.allclose(weight[:4], -weight[4:]) and not torch.allclose(weight, torch.zeros_like(weight))
    plain = build_experiment(validate(composed(*TINY)))  # no data-dependent set-up: the same batches follow
    first, second = [labels for _, labels in experiment.data.train], [labels for _, labels in plain.data.train]
    assert len(first) == len(second) >= 2 and all(torch.equal(a, b) for a, b in zip(first, second))


# --- the `auto` choices -----------------------------------------------------------------------------------


def test_auto_resolves_per_device_as_measured():
    assert resolve_channels_last("auto", CPU) and resolve_channels_last("auto", CUDA)
    assert not resolve_channels_last("auto", MPS) and not resolve_channels_last("false", CPU)
    assert resolve_compile("auto", CUDA) and not resolve_compile("auto", CPU)
    assert resolve_compile("true", CPU) and not resolve_compile("false", CUDA) and resolve_compile(True, CPU)
    assert resolve_amp("auto", "bf16", CUDA)[0] == torch.bfloat16


def test_auto_amp_on_the_cpu_is_bf16_only_where_the_cpu_has_bf16_instructions(monkeypatch):
    from trainlab import runtime

    monkeypatch.setattr(runtime, "cpu_has_bf16", lambda: True)
    assert resolve_amp("auto", "bf16", CPU) == (torch.bfloat16, [])
    assert resolve_amp("auto", "fp16", CPU) == (None, [])  # torch's CPU kernels do not train in fp16
    assert resolve_amp("false", "bf16", CPU) == (None, [])
    monkeypatch.setattr(runtime, "cpu_has_bf16", lambda: False)  # emulated bf16 is slow: auto stays fp32
    assert resolve_amp("auto", "bf16", CPU) == (None, [])


@pytest.mark.skipif(not Path("/proc/cpuinfo").is_file(), reason="reads the CPU flags Linux reports")
def test_the_cpu_bf16_probe_agrees_with_the_flags_linux_reports():
    from trainlab.runtime import cpu_has_bf16

    flags = set(next(line for line in Path("/proc/cpuinfo").read_text().splitlines()
                     if line.startswith("flags")).split(":", 1)[1].split())
    assert cpu_has_bf16() == bool({"avx512_bf16", "amx_tile"} & flags)


def test_auto_eval_batch_size_is_per_device_and_smaller_for_large_images():
    assert resolve_eval_batch_size("auto", CPU, (1, 28, 28)) == 256
    assert resolve_eval_batch_size("auto", CUDA, (3, 32, 32)) == 2048
    assert resolve_eval_batch_size("auto", CUDA, (3, 224, 224)) == 2**25 // (3 * 224 * 224)
    assert resolve_eval_batch_size(300, CUDA, (3, 224, 224)) == 300
    cfg = build_experiment(validate(composed(*TINY)))
    assert cfg.data.val.batch_size == 256 and cfg.data.test.batch_size == 256


def test_auto_channels_last_reaches_the_model_and_the_batches_on_cpu():
    experiment = build_experiment(validate(composed(*TINY)))
    conv = experiment.model.features[0]
    images, _ = next(iter(experiment.data.train))
    assert conv.weight.is_contiguous(memory_format=torch.channels_last)
    assert images.is_contiguous(memory_format=torch.channels_last)


@pytest.mark.parametrize("override", ["trainer.compile=maybe", "trainer.eval_batch_size=0",
                                      "trainer.eval_batch_size=big"])
def test_bad_auto_values_name_their_key(override):
    with pytest.raises(ConfigError) as error:
        validate(composed(override))
    assert str(error.value).startswith(override.split("=")[0])


# --- the speed-run experiment -----------------------------------------------------------------------------


def test_the_speedrun_experiment_composes_the_airbench_recipe():
    cfg = composed("experiment=fmnist_speedrun")
    assert cfg.model._target_ == "trainlab.models.airbench.Airbench"
    assert cfg.optimizer.nesterov and cfg.trainer.label_smoothing == 0.2
    assert cfg.schedule.warmup_epochs > 0 and cfg.schedule.end_factor == 0
    assert not cfg.tta.flip and cfg.tta.crops == 1 and not cfg.augmentation.get("ops")  # measured worse at 5 epochs
    airbench = composed("experiment=fmnist_speedrun", "augmentation=flip_crop", "tta=crops_flip")  # the ablation's
    assert set(airbench.augmentation.ops) == {"crop", "flip"} and airbench.augmentation.ops.crop.padding == 2


def test_the_speedrun_recipe_trains_end_to_end(tmp_path):
    trainlab = str(Path(sys.executable).with_name("trainlab"))
    result = subprocess.run([trainlab, "train", "experiment=fmnist_speedrun", *TINY, "trainer.epochs=2", "model.channels=[8,8]",
                             f"hydra.run.dir={tmp_path}"], capture_output=True, text=True, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["choices"]["model"] == "airbench" and 0 <= summary["test"]["acc"] <= 1
    assert summary["runtime"]["channels_last"] and not summary["runtime"]["compiled"]  # auto on the CPU


# --- the suite's plumbing ---------------------------------------------------------------------------------


def benchmark_module(name):
    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        return __import__(name)
    finally:
        sys.path.remove(str(ROOT / "benchmarks"))


def test_the_suite_table_shows_each_figure_its_target_and_whether_it_is_met():
    suite, common = benchmark_module("suite"), benchmark_module("common")
    records = [{"benchmark": "trainer_vs_plain", "figures": [common.figure("Trainer / plain", 0.98, "x", ">= 0.97", True)]},
               {"benchmark": "time", "figures": [common.figure("lowest accuracy", 0.9312, "acc", ">= 93.0%", True),
                                                 common.figure("wall", 312.5, "s", "< 300", False)]}]
    table = suite.markdown(records, {"cpu": "Test CPU", "cores": 2, "torch_threads": 2, "torch": "2.x", "python": "3"})
    assert "Test CPU, 2 cores" in table and "no GPU" in table
    assert "| trainer_vs_plain | Trainer / plain | 0.98x | >= 0.97 | yes |" in table
    assert "| time | lowest accuracy | 93.12% | >= 93.0% | yes |" in table
    assert "| time | wall | 312.5 s | < 300 | **no** |" in table


def test_time_to_accuracy_runs_each_seed_and_records_its_accuracy(tmp_path):
    out = tmp_path / "record.json"
    result = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "time_to_accuracy.py"), "--experiment",
                             "default", "--seeds", "0", "1", "--json", str(out), *TINY, "model.channels=[4,8]"],
                            capture_output=True, text=True, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    record = json.loads(out.read_text())
    assert [run["seed"] for run in record["runs"]] == [0, 1]
    assert all(0 <= run["test_acc"] <= 1 and run["wall_s"] > 0 for run in record["runs"])
    wall, lowest = record["figures"]
    assert lowest["value"] == min(run["test_acc"] for run in record["runs"]) and lowest["target"] == ">= 91.5%"
    assert record["machine"]["cores"] >= 1
    assert "test acc" in (tmp_path / "default_seed1.log").read_text()  # each run's console, beside the record


def test_peak_rss_of_a_child_is_its_own():
    common = benchmark_module("common")
    code, small = common.peak_rss_of([sys.executable, "-c", "pass"])
    code2, large = common.peak_rss_of([sys.executable, "-c", "import time; x = bytearray(300 * 2**20); time.sleep(0.3)"])
    assert code == code2 == 0 and large - small > 250


def test_without_whitening_the_first_conv_trains_and_keeps_its_initialization():
    model = Airbench([1, 16, 16], 10, channels=[8, 16], whiten=False)
    before = model.whiten.weight.detach().clone()
    model.init_from_data(digits())
    assert model.whiten.weight.requires_grad and torch.equal(model.whiten.weight, before)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal on a machine without CUDA")
@pytest.mark.parametrize("script", ["cuda_check.py", "cuda_check.sh"])
def test_the_cuda_check_fails_loudly_without_cuda(script):
    command = ([sys.executable] if script.endswith(".py") else ["bash"]) + [str(ROOT / "benchmarks" / script)]
    result = subprocess.run(command, capture_output=True, text=True, cwd=ROOT)
    assert result.returncode != 0
    assert "CUDA is not available" in result.stderr and "fall back to the CPU" in result.stderr
    assert "Traceback" not in result.stderr


def test_a_single_run_composes_its_config_once_for_the_checks_and_once_for_hydra(tmp_path):
    """Hydra's get_mode composes the whole config only to read hydra.mode; a single run tells it the mode
    its pre-check found (and puts get_mode back after)."""
    script = (
        "import sys\n"
        "from hydra._internal import config_loader_impl, hydra\n"
        "calls = []\n"
        "load = config_loader_impl.ConfigLoaderImpl.load_configuration\n"
        "def counted(self, *a, **k):\n"
        "    calls.append(1)\n"
        "    return load(self, *a, **k)\n"
        "config_loader_impl.ConfigLoaderImpl.load_configuration = counted\n"
        "get_mode = hydra.Hydra.get_mode\n"
        "from trainlab.cli import main\n"
        f"sys.argv = ['trainlab', 'train', {', '.join(map(repr, TINY))}]\n"
        "try:\n"
        "    main()\n"
        "finally:\n"
        "    print('compositions', len(calls), 'restored', hydra.Hydra.get_mode is get_mode)\n"
    )
    result = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "compositions 2 restored True" in result.stdout
    assert len(list((tmp_path / "outputs" / "train").glob("*/*/summary.json"))) == 1
