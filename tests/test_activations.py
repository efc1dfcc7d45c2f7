"""`trainlab activations` and trainlab.diagnostics.activations: per-layer statistics of one forward batch.

The classic initialization experiment (10 layers of 500, unit-Gaussian inputs) must come out as the
textbook says: small normal weights collapse tanh activations, unit-variance weights saturate them, Xavier
keeps tanh well scaled, and with ReLU Xavier (gain 1) decays while He holds.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf
from torch import nn

from conftest import run_folders, run_trainlab
from trainlab.checkpoint import FORMAT, save_atomic
from trainlab.commands.activations import compose, measure_overrides, model_and_batch
from trainlab.data.datasets import describe, load_dataset
from trainlab.diagnostics.activations import ActivationRecorder, activation_layers, measure
from trainlab.errors import ConfigError
from trainlab.models.mlp import MLP

DEEP = ["dataset=gaussian", "model=mlp_deep"]
COLLAPSE = [*DEEP, "model.activation=tanh", "init=normal", "init.weight.std=0.01"]
SMALL = ["dataset=gaussian", "dataset.dim=64", "dataset.samples=256", "model=mlp", "model.hidden=[64,64]",
         "model.activation=tanh", "init=xavier_normal", "init.weight.gain=1.0"]


def stds(overrides: list[str]) -> list[float]:
    return [row["std"] for row in measure_overrides(overrides).rows]


# ---------------------------------------------------------------- the textbook experiment, in-process


def test_recorder_sees_tanh_collapse_with_small_normal_weights(one_thread):
    torch.manual_seed(0)
    model = MLP((1, 1, 500), 10, hidden=[500] * 10, activation="tanh")
    for layer in model.modules():
        if isinstance(layer, nn.Linear):
            nn.init.normal_(layer.weight, std=0.01)
            nn.init.zeros_(layer.bias)
    with ActivationRecorder(model) as recorder:
        with torch.no_grad():
            model(torch.randn(1000, 1, 1, 500))
        assert all(isinstance(r.stats, torch.Tensor) for r in recorder.records)  # still on the device
        rows = recorder.read()
    assert [row["name"] for row in rows] == [f"act{i}" for i in range(1, 11)]
    assert all(row["kind"] == "tanh" and row["dead"] is None for row in rows)
    assert rows[-1]["std"] < 1e-3 * rows[0]["std"]
    assert all(later["std"] < earlier["std"] for earlier, later in zip(rows, rows[1:]))


def test_config_collapse_tanh_normal_001(one_thread):
    values = stds(COLLAPSE)
    assert len(values) == 10
    assert values[-1] < 1e-3 * values[0]


def test_tanh_unit_normal_weights_saturate(one_thread):
    rows = measure_overrides([*DEEP, "model.activation=tanh", "init=normal", "init.weight.std=1.0"]).rows
    assert all(row["saturated"] > 0.5 for row in rows[1:])
    assert all(row["std"] > 0.9 for row in rows)


@pytest.mark.parametrize("gain", ["1.0", "auto"])
def test_tanh_xavier_stays_well_scaled(one_thread, gain):
    rows = measure_overrides([*DEEP, "model.activation=tanh", "init=xavier_normal", f"init.weight.gain={gain}"]).rows
    assert rows[-1]["std"] > 0.1 * rows[0]["std"]
    assert all(row["saturated"] < 0.05 for row in rows[1:])  # gain 5/3 (auto) saturates a tenth of layer 1


def test_relu_kaiming_holds_and_xavier_decays(one_thread):
    he = stds([*DEEP, "init=kaiming_normal"])
    xavier = stds([*DEEP, "init=xavier_normal", "init.weight.gain=1.0"])
    assert 0.5 < he[-1] / he[0] < 2.0
    assert xavier[-1] < 0.1 * xavier[0]


def test_mlp_deep_has_no_norm_and_inits_start_biases_at_zero():
    cfg = compose(COLLAPSE)
    assert cfg.model.norm == "none" and cfg.init.bias == 0.0 and cfg.init.weight.std == 0.01
    model, batch = model_and_batch(cfg)
    assert batch.shape == (1000, 1, 1, 500) and batch.dtype == torch.float32
    assert abs(float(batch.mean())) < 0.01 and abs(float(batch.std()) - 1.0) < 0.01
    assert all(not m.bias.detach().any() for m in model.modules() if isinstance(m, nn.Linear))


# ---------------------------------------------------------------- statistics


def test_all_negative_bias_makes_every_relu_unit_dead(one_thread):
    model = MLP((1, 1, 8), 2, hidden=[6], activation="relu")
    with torch.no_grad():
        model.fc1.weight.normal_()
        model.fc1.bias.fill_(-100.0)
    (row,), _ = measure(model, torch.randn(64, 1, 1, 8))
    assert row["dead"] == 1.0 and row["max"] == 0.0 and row["saturated"] is None


def test_dead_counts_units_never_positive_on_the_batch(one_thread):
    model = MLP((1, 1, 8), 2, hidden=[4], activation="relu")
    with torch.no_grad():
        model.fc1.weight.zero_()
        model.fc1.bias.copy_(torch.tensor([-1.0, 0.0, 1.0, 2.0]))  # 0.0 is never *positive*: dead too
    (row,), _ = measure(model, torch.randn(16, 1, 1, 8))
    assert row["dead"] == 0.5


def test_dead_channels_of_a_feature_map(one_thread):
    conv = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU())
    with torch.no_grad():
        conv[0].weight.zero_()
        conv[0].bias.copy_(torch.tensor([-1.0, 1.0, 1.0, 1.0]))
    (row,), _ = measure(conv, torch.randn(5, 1, 6, 6))
    assert row["dead"] == 0.25 and row["shape"] == [5, 4, 6, 6]


def test_saturation_uses_the_margin_to_the_bound(one_thread):
    x = torch.tensor([[-10.0, -3.0, 0.0, 3.0, 10.0, 0.5, -0.5, 2.0]])  # sigmoid: 4.5e-5 .. 0.99995
    (row,), _ = measure(nn.Sequential(nn.Sigmoid()), x)
    assert row["kind"] == "sigmoid" and row["saturated"] == pytest.approx(2 / 8)  # only +-10 within 0.01
    (row,), _ = measure(nn.Sequential(nn.Tanh()), x)
    assert row["saturated"] == pytest.approx(4 / 8)  # |tanh| > 0.99 for |x| >= 3 (tanh 2.0 = 0.964)


def test_identity_activation_measures_linear_outputs_without_the_head():
    model = MLP((1, 1, 8), 3, hidden=[5, 5, 5], activation="identity")
    layers = activation_layers(model)
    assert [(name, kind) for name, _, kind in layers] == [("fc1", "other"), ("fc2", "other"), ("fc3", "other")]


def test_a_module_called_twice_is_two_layers_in_call_order():
    class Shared(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(4, 4)
            self.relu = nn.ReLU()
            self.tanh = nn.Tanh()

        def forward(self, x):
            return self.relu(self.tanh(self.relu(self.fc(x))))

    rows, _ = measure(Shared(), torch.randn(3, 4))
    assert [row["name"] for row in rows] == ["relu (1)", "tanh", "relu (2)"]


def test_hooks_are_removed_and_each_forward_starts_afresh():
    model = MLP((1, 1, 8), 2, hidden=[4, 4], activation="tanh")
    with ActivationRecorder(model, keep_outputs=True, sample=10) as recorder:
        model(torch.randn(7, 1, 1, 8))
        model(torch.randn(3, 1, 1, 8))
        assert len(recorder.records) == 2 and recorder.read()[0]["shape"] == [3, 4]
    kept = recorder.outputs()
    assert [name for name, _ in kept] == ["act1", "act2"] and all(v.shape == (10,) for _, v in kept)
    assert all(not m._forward_hooks and not m._forward_pre_hooks for m in model.modules())
    model(torch.randn(5, 1, 1, 8))
    assert recorder.read()[0]["shape"] == [3, 4]


# ---------------------------------------------------------------- checkpoint and configuration


def save_checkpoint(model: nn.Module, run: Path) -> Path:
    path = run / "checkpoints" / "best.pt"
    save_atomic({"format": FORMAT, "model": {k: v.detach().cpu() for k, v in model.state_dict().items()}}, path)
    return path


def test_checkpoint_weights_replace_the_init(tmp_path, one_thread):
    model, _ = model_and_batch(compose(SMALL))
    with torch.no_grad():
        for layer in model.modules():
            if isinstance(layer, nn.Linear):
                layer.weight.mul_(30.0)
    save_checkpoint(model, tmp_path / "run")
    at_init = measure_overrides(SMALL).rows
    trained = measure_overrides([*SMALL, f"checkpoint={tmp_path / 'run'}"]).rows  # a run folder: its best.pt
    assert all(row["saturated"] < 0.05 for row in at_init)
    assert all(row["saturated"] > 0.8 for row in trained)


def test_checkpoint_of_another_model_or_not_a_checkpoint_is_one_line(tmp_path):
    model, _ = model_and_batch(compose(SMALL))
    path = save_checkpoint(model, tmp_path / "run")
    with pytest.raises(ConfigError, match=r"^checkpoint=.*: its weights do not fit this model .*; give the model"):
        measure_overrides([*SMALL, "model.hidden=[32,32]", f"checkpoint={path}"])
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a checkpoint")
    with pytest.raises(ConfigError, match=r"^checkpoint=.*junk.pt: .* not a readable trainlab checkpoint"):
        measure_overrides([*SMALL, f"checkpoint={junk}"])
    with pytest.raises(ConfigError, match=r"^checkpoint=.*: no such file or folder"):
        compose([*SMALL, f"checkpoint={tmp_path / 'missing.pt'}"])
    with pytest.raises(ConfigError, match=r"^checkpoint=.*: that folder has no checkpoints/best.pt"):
        compose([*SMALL, f"checkpoint={tmp_path}"])


def test_bad_activation_keys_are_refused():
    with pytest.raises(ConfigError, match=r"^activations.mode='fast': must be train or eval"):
        compose([*SMALL, "activations.mode=fast"])
    with pytest.raises(ConfigError, match=r"^activations.sample=0: must be a whole number >= 1"):
        compose([*SMALL, "activations.sample=0"])


def test_gaussian_dataset_shape_and_refusal_outside_activations():
    cfg = OmegaConf.load(Path(__file__).resolve().parents[1] / "configs" / "dataset" / "gaussian.yaml")
    cfg.command = "activations"
    shape = describe(cfg)
    assert shape.input_shape == (1, 1, 500) and shape.num_classes == 10 and shape.train_examples == 1000
    cfg.command = None
    with pytest.raises(ConfigError, match=r"^dataset=gaussian: .*`trainlab activations` only"):
        describe(cfg)
    with pytest.raises(ConfigError, match=r"^dataset=gaussian: "):
        load_dataset(cfg)


def test_gaussian_eval_mode_and_train_mode_agree_without_dropout_or_norm(one_thread):
    train = measure_overrides(SMALL).rows
    evaluated = measure_overrides([*SMALL, "activations.mode=eval"]).rows
    assert [r["std"] for r in train] == pytest.approx([r["std"] for r in evaluated])


# ---------------------------------------------------------------- the command, as a user runs it


def one_error_line(result) -> str:
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    return lines[0]


@pytest.mark.slow
def test_cli_collapse_json_png_and_tensorboard(tmp_path):
    from PIL import Image
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    result = run_trainlab(["activations", *COLLAPSE], tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    (run,) = run_folders(tmp_path, "activations")
    rows = json.loads((run / "activations.json").read_text())
    assert [row["name"] for row in rows] == [f"act{i}" for i in range(1, 11)]
    assert {"name", "mean", "std", "dead", "saturated", "kind"} <= set(rows[0])
    assert rows[-1]["std"] < 1e-3 * rows[0]["std"]
    assert "act10" in result.stdout and "saturated" in result.stdout
    with Image.open(run / "activations.png") as image:
        image.verify()
    with Image.open(run / "activations.png") as image:
        assert image.format == "PNG" and image.width > 800 and len(image.convert("RGB").getcolors(2**20)) > 20
    events = EventAccumulator(str(run / "tensorboard"), size_guidance={"histograms": 0, "scalars": 0})
    events.Reload()
    tags = sorted(events.Tags()["histograms"])
    assert tags == [f"activations/{i:02d}_act{i}" for i in range(1, 11)]
    last = events.Histograms("activations/10_act10")[0].histogram_value
    assert last.num == 100_000 and max(abs(last.min), abs(last.max)) < 1e-5  # collapsed to ~0
    assert [s.step for s in events.Scalars("activations/std")] == list(range(1, 11))


@pytest.mark.slow
def test_cli_checkpoint_of_a_trained_run_folder(tmp_path, one_thread):
    model = ["dataset=synthetic", "dataset.num_train=256", "dataset.num_test=64", "dataset.val_size=64",
             "model=mlp", "model.hidden=[32,32]", "model.activation=tanh"]
    trained = run_trainlab(["train", *model, "trainer.epochs=2", "optimizer=adam", "optimizer.lr=0.01",
                            "trainer.log_every=2"], tmp_path)
    assert trained.returncode == 0, trained.stderr[-3000:]
    (train_run,) = run_folders(tmp_path, "train")
    result = run_trainlab(["activations", *model, f"checkpoint={train_run}"], tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    (run,) = run_folders(tmp_path, "activations")
    from_cli = [row["std"] for row in json.loads((run / "activations.json").read_text())]
    assert from_cli == pytest.approx(stds([*model, f"checkpoint={train_run}"]), rel=1e-4)
    at_init = stds(model)
    assert max(abs(a - b) for a, b in zip(from_cli, at_init)) > 1e-3  # the trained weights, not the init


@pytest.mark.slow
def test_cli_missing_checkpoint_fails_before_any_folder(tmp_path):
    result = run_trainlab(["activations", *SMALL, "checkpoint=no/such/run"], tmp_path)
    assert result.returncode == 2
    assert one_error_line(result).startswith("trainlab: error: checkpoint=no/such/run: no such file or folder")
    assert not (tmp_path / "outputs").exists()


@pytest.mark.slow
def test_cli_train_refuses_the_gaussian_dataset_at_start(tmp_path):
    result = run_trainlab(["train", "dataset=gaussian", "model=mlp"], tmp_path)
    assert result.returncode == 2
    assert one_error_line(result).startswith("trainlab: error: dataset=gaussian: unit-Gaussian inputs for "
                                             "`trainlab activations` only")
    assert not (tmp_path / "outputs").exists()
