"""A checkpoint may come from someone else: the config it carries is never built from modules outside
trainlab, torch and torchvision (trainlab/safety.py), by eval, ensemble, trainer.resume or model.pretrained.

The files here are trainlab checkpoints (trainlab's format, written like best.pt/last.pt) whose config was
edited to name a foreign `_target_` under the model, the optimizer, an augmentation op or a callback.
The targets that would leave a trace (logging.FileHandler creates its file, os.makedirs its folder, neither
blocked by Hydra's own instantiate policy) show that nothing ran: the file is not there afterwards.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch

from conftest import run_trainlab
from test_eval import checked, fake_checkpoint, refusal
from trainlab import safety
from trainlab.errors import ConfigError

# where a foreign target goes in a checkpoint's config
SECTIONS = ("model", "optimizer", "augmentation", "callbacks")
NAMES = ("subprocess.run", "os.system", "builtins.eval")
KEY = {"model": "model._target_", "optimizer": "optimizer._target_",
       "augmentation": "augmentation.ops.evil._target_", "callbacks": "callbacks.evil._target_"}


def plant(section: str, target: str, args: list):
    """A config_edit putting {_target_: target, _args_: args} under `section`."""
    def edit(config: dict) -> None:
        node = {"_target_": target, "_args_": args}
        if section in ("model", "optimizer"):
            config[section].update(node)
        elif section == "augmentation":
            config["augmentation"].setdefault("ops", {})["evil"] = node
        else:
            config["callbacks"]["evil"] = node
    return edit


def evil_run(folder: Path, section: str, target: str, args: list) -> Path:
    """A run folder whose best.pt and last.pt (with an optimizer state, as trainer.resume wants) name `target`."""
    best = fake_checkpoint(folder, config_edit=plant(section, target, args))
    payload = torch.load(best, weights_only=True)
    payload.update(optimizer={}, scheduler={}, step=1, rng={}, callbacks={})
    torch.save(payload, best.parent / "last.pt")
    return folder


# ---------------------------------------------------------------- the rule


@pytest.mark.parametrize("section", SECTIONS)
@pytest.mark.parametrize("target", NAMES)
def test_a_foreign_target_anywhere_is_refused_with_one_line(section, target):
    config = {"model": {"_target_": "trainlab.models.mlp.MLP"}, "optimizer": {"_target_": "torch.optim.SGD"},
              "augmentation": {"ops": {}}, "callbacks": {}}
    plant(section, target, ["x"])(config)
    with pytest.raises(ConfigError) as error:
        safety.check_config(config, "checkpoint=x/best.pt")
    message = str(error.value)
    assert message.startswith(f"checkpoint=x/best.pt: {KEY[section]}={target}: not a trainlab, torch or "
                              "torchvision class; refusing to build from a file's config")
    assert "\n" not in message


def test_the_whole_tree_is_walked_lists_too():
    config = {"model": {"_target_": "trainlab.models.cnn.CNN", "blocks": [{"_target_": "torch.nn.ReLU"},
                                                                          {"inner": {"_target_": "os.system"}}]}}
    assert dict(safety.targets(config)) == {"model._target_": "trainlab.models.cnn.CNN",
                                            "model.blocks.0._target_": "torch.nn.ReLU",
                                            "model.blocks.1.inner._target_": "os.system"}
    with pytest.raises(ConfigError, match=r"^f: model\.blocks\.1\.inner\._target_=os\.system: not a trainlab"):
        safety.check_config(config, "f")


def test_what_is_allowed_and_what_is_not_inside_the_allowed_packages():
    for fine in ("trainlab.models.cnn.CNN", "torch.optim.SGD", "torch.nn.init.kaiming_normal_",
                 "torchvision.models.resnet18", "trainlab.data.augment.HorizontalFlip"):
        assert safety.problem(fine) is None, fine
    for bad in ("torch.hub.load", "torch.load", "torch.save", "torchvision.io.write_png", "torch.jit.load",
                "torch.utils.cpp_extension.load", "trainlab.commands.run_command", "torchvision.utils.save_image"):
        assert "reads or writes files" in safety.problem(bad), bad
    assert "private" in safety.problem("torch._C._set_print_stack_traces_on_fatal_signal")
    assert safety.problem("torchvision") == "not a trainlab, torch or torchvision class"
    assert safety.problem("torchvisionx.models.A") == "not a trainlab, torch or torchvision class"
    assert safety.problem(["not", "a", "name"]) == "not a class name"


def test_the_users_own_targets_are_trusted():
    config = {"model": {"_target_": "my_package.MyNet"}, "callbacks": {"probe": {"_target_": "my_probe.Probe"}}}
    composed = {"model": {"_target_": "my_package.MyNet"}, "trust": ["my_probe.Probe"]}
    safety.check_config(config, "f", safety.trusted_targets(composed))
    with pytest.raises(ConfigError, match=r"callbacks\.probe\._target_=my_probe\.Probe"):
        safety.check_config(config, "f", safety.trusted_targets({"model": {"_target_": "my_package.MyNet"}}))


def test_an_interpolation_in_a_saved_config_is_refused():
    config = {"model": {"_target_": "trainlab.models.mlp.MLP"},
              "extra": "${oc.create:'{_target_: os.system, _args_: [touch x]}'}"}
    with pytest.raises(ConfigError, match=r"^f: extra=\$\{oc\.create.*: an interpolation in a saved config"):
        safety.check_config(config, "f")


def test_the_threat_is_real_without_the_rule(tmp_path):
    """What the planted nodes would do if they were built: Hydra's instantiate creates the file."""
    from hydra.utils import instantiate

    handler = instantiate({"_target_": "logging.FileHandler", "_args_": [str(tmp_path / "made")]})
    handler.close()
    assert (tmp_path / "made").exists()


# ---------------------------------------------------------------- each place a config is read back (in process)


@pytest.mark.parametrize("section", SECTIONS)
def test_eval_ensemble_resume_and_pretrained_refuse_it(section, tmp_path, capsys):
    """Each of the four readers, the brief's three targets in turn; the line names the file's key and target."""
    target = NAMES[SECTIONS.index(section) % len(NAMES)]
    run = evil_run(tmp_path / "evil", section, target, [["touch", str(tmp_path / "ran")]])
    good = fake_checkpoint(tmp_path / "good")
    expected = f": {KEY[section]}={target}: not a trainlab, torch or torchvision class"
    cases = [("eval", [f"checkpoint={run}"], f"checkpoint={run}"),
             ("ensemble", [f"members=[{good},{run}]"], f"members={run / 'checkpoints' / 'best.pt'}"),
             ("train", ["dataset=synthetic", "model=mlp", f"trainer.resume={run}"], f"trainer.resume={run}"),
             ("train", ["dataset=synthetic", "model=mlp", f"model.pretrained={run}"], f"model.pretrained={run}")]
    for command, overrides, source in cases:
        line = refusal(capsys, command, *overrides)
        assert line.startswith(f"trainlab: error: {source}{expected}; refusing to build"), (command, line)
    assert not (tmp_path / "ran").exists()


def test_resume_and_pretrained_trust_what_the_resuming_run_names(tmp_path):
    """The user's own class, named in their composed config, passes the rule (here, a model option of theirs)."""
    from omegaconf import OmegaConf

    from trainlab import resume
    from trainlab.transfer import split_model_config

    run = evil_run(tmp_path / "own", "callbacks", "my_probe.Probe", [])
    with pytest.raises(ConfigError, match=r"^trainer\.resume=.*: callbacks\.evil\._target_=my_probe\.Probe"):
        resume.read(str(run))
    assert resume.read(str(run), trusted={"my_probe.Probe"})["epoch"] == 1
    composed = OmegaConf.create({"model": {"_target_": "trainlab.models.mlp.MLP", "pretrained": str(run)},
                                 "callbacks": {"evil": {"_target_": "my_probe.Probe"}}})
    split_model_config(composed.model)  # the root of the model node names the class: trusted
    with pytest.raises(ConfigError, match=r"^model\.pretrained=.*: callbacks\.evil\._target_=my_probe\.Probe"):
        split_model_config(OmegaConf.create({"_target_": "trainlab.models.mlp.MLP", "pretrained": str(run)}))
    # eval trusts what trust=[...] names
    cfg = checked("eval", f"checkpoint={run}", "trust=[my_probe.Probe]")
    assert dict(cfg.callbacks) == {}  # and builds no callback of the checkpoint's anyway


# ---------------------------------------------------------------- the CLI: exit 2, one line, nothing ran


CLI_CASES = {
    "eval": ("model", "logging.FileHandler"),
    "ensemble": ("optimizer", "os.makedirs"),
    "resume": ("augmentation", "logging.FileHandler"),
    "pretrained": ("callbacks", "os.makedirs"),
}


@pytest.mark.slow
@pytest.mark.parametrize("reader", list(CLI_CASES))
def test_the_cli_refuses_a_planted_checkpoint_and_runs_nothing(reader, tmp_path):
    section, target = CLI_CASES[reader]
    marker = tmp_path / "ran_here"
    run = evil_run(tmp_path / "evil", section, target, [str(marker)])
    good = fake_checkpoint(tmp_path / "good").parent.parent
    args = {"eval": ["eval", f"checkpoint={run}"],
            "ensemble": ["ensemble", f"members=[{good},{run}]"],
            "resume": ["train", "dataset=synthetic", "model=mlp", f"trainer.resume={run}"],
            "pretrained": ["train", "dataset=synthetic", "model=mlp", f"model.pretrained={run}"]}[reader]
    result = run_trainlab(args, tmp_path)
    assert result.returncode == 2, result.stderr[-2000:]
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("trainlab: error: "), lines
    assert f"{KEY[section]}={target}: not a trainlab, torch or torchvision class" in lines[0]
    assert "Traceback" not in result.stderr
    assert not marker.exists()
    assert not (tmp_path / "outputs").exists()  # refused before any run folder was made
    shutil.rmtree(run)
