"""Every command README.md shows keeps working.

`trainlab train ...` commands are composed for real (`--cfg job`, every combination of a sweep), so a
renamed group, option or key in the configs fails here; the set-up commands name real Makefile targets.
"""

from __future__ import annotations

import itertools
import re
import shlex
import subprocess
from pathlib import Path

import pytest
from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import OmegaConf

from conftest import run_trainlab

REPO = Path(__file__).resolve().parents[1]
README = (REPO / "README.md").read_text()


def shown_commands() -> list[str]:
    """Lines of README's shell blocks (```sh) that start with a command."""
    blocks = re.findall(r"```sh\n(.*?)```", README, flags=re.S)
    lines = [line.split(" #")[0].strip() for block in blocks for line in block.splitlines()]
    return [line for line in lines if line and not line.startswith("#")]


def sweep_expansions(args: list[str]) -> list[list[str]]:
    """A multirun's overrides as the single runs it launches (every combination of comma lists)."""
    options = [[f"{arg.split('=', 1)[0]}={value}" for value in arg.split("=", 1)[1].split(",")]
               if "=" in arg and "," in arg.split("=", 1)[1] and not arg.split("=", 1)[1].startswith("[")
               else [arg] for arg in args if arg not in ("-m", "--multirun")]
    return [list(combination) for combination in itertools.product(*options)]


PARSER = OverridesParser.create()
COMMANDS = shown_commands()
TRAIN_COMMANDS = [c for c in COMMANDS if c.startswith(("trainlab train", "trainlab augment", "trainlab schedule",
                                                      "trainlab check", "trainlab lr-find", "trainlab activations",
                                                      "trainlab eval", "trainlab ensemble"))]


def test_readme_shows_the_two_setup_commands_and_they_exist():
    assert "make train" in COMMANDS and "make test" in COMMANDS
    for target in ("train", "test"):
        dry = subprocess.run(["make", "-n", target], cwd=REPO, capture_output=True, text=True)
        assert dry.returncode == 0, dry.stderr
    assert "make test" in (REPO / ".ci" / "run").read_text(), "CI runs README's test command"


def test_readme_shows_several_train_commands():
    assert len(TRAIN_COMMANDS) >= 4
    assert any(" -m " in f" {c} " for c in TRAIN_COMMANDS), "a sweep example"


@pytest.mark.parametrize("command", TRAIN_COMMANDS)
def test_train_command_composes(command, tmp_path):
    args = shlex.split(command)[1:]
    if any(flag in args for flag in ("--help", "--cfg", "-h")):
        result = run_trainlab(args, tmp_path)
        assert result.returncode == 0, result.stderr
        return
    for single in sweep_expansions(args[1:]):
        result = run_trainlab([args[0], *single, "--cfg", "job"], tmp_path)
        assert result.returncode == 0, f"{command} -> {single}: {result.stderr}"
        config = OmegaConf.create(result.stdout)
        for override in single:
            parsed = PARSER.parse_override(override)
            if "." in parsed.key_or_group and not parsed.key_or_group.startswith("hydra."):  # a job value: shown below
                shown = OmegaConf.select(config, parsed.key_or_group)
                shown = OmegaConf.to_container(shown) if OmegaConf.is_config(shown) else shown
                assert shown == parsed.value(), (override, shown)


def test_other_commands_are_installed():
    from conftest import trainlab_executable

    bin_dir = Path(trainlab_executable()).parent
    for command in COMMANDS:
        program = shlex.split(command)[0]
        if program in ("make", "trainlab", "git", "cd", "python", "pip", "sudo"):
            continue
        assert (bin_dir / program).exists(), f"README shows `{command}` but {program} is not installed"
