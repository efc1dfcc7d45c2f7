"""trainer.resume: is the checkpoint's run the one this config describes, and put its state back.

Which keys may differ between a run and its resumption is read where each key is declared: fields
marked free() in the schemas (trainlab/config.py) and each callback's `resume_free`. A key the
checkpoint's run did not have yet (the YAML gained it later) is accepted when this run gives it its
default value: the value the same choices compose to without any override.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any, Callable, Iterable, Optional

from omegaconf import OmegaConf

from trainlab import checkpoint, safety
from trainlab.config import schema_free_keys
from trainlab.errors import ConfigError


def flatten(tree: Any, prefix: str = "") -> dict[str, Any]:
    if not isinstance(tree, dict) or not tree:
        return {prefix: tree}
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        flat.update(flatten(value, f"{prefix}.{key}" if prefix else str(key)))
    return flat


def callback_free(plain_cfg: dict) -> tuple[set[str], set[str]]:
    """(keys, prefixes) that callbacks declare free: a callback with resume_free "*" frees its whole subtree."""
    keys, prefixes = set(), set()
    for name, node in (plain_cfg.get("callbacks") or {}).items():
        module, _, cls = str((node or {}).get("_target_", "")).rpartition(".")
        try:
            declared = getattr(getattr(importlib.import_module(module), cls), "resume_free", ())
        except (ImportError, AttributeError, ValueError):
            declared = ()
        if "*" in declared:
            prefixes.add(f"callbacks.{name}.")
        keys |= {f"callbacks.{name}.{key}" for key in declared}
    return keys, prefixes


def differences(ours: dict, theirs: dict, defaults: Optional[dict]) -> list[tuple[str, Any, Any]]:
    """(key, this run's value, the checkpoint run's value) for every key that makes them different runs."""
    free_keys, free_prefixes = callback_free(ours)
    free_keys |= schema_free_keys()
    flat_ours, flat_theirs = flatten(ours), flatten(theirs)
    flat_defaults = flatten(defaults) if defaults is not None else {}
    found = []
    for key in sorted(flat_ours.keys() | flat_theirs.keys()):
        if key in free_keys or any(key.startswith(p) for p in free_prefixes):
            continue
        mine, before = flat_ours.get(key, "<absent>"), flat_theirs.get(key, "<absent>")
        if mine == before:
            continue
        if key not in flat_theirs and key in flat_defaults and mine == flat_defaults[key]:
            continue  # a key added after the checkpoint was written, at its default: the same run
        found.append((key, mine, before))
    return found


def read(value: str, trusted: Iterable[str] = ()) -> dict:
    """The payload of trainer.resume's last.pt (a file or a run folder), read safely: a config in it that
    names a `_target_` trainlab does not build from a file (trainlab.safety) is refused, unless it is one of
    `trusted` (the targets the resuming run's own config names: safety.trusted_targets(cfg))."""
    path = checkpoint.resume_path(value)
    payload = checkpoint.load_for_resume(path, value)
    safety.check_config(payload.get("config"), f"trainer.resume={value}", trusted)
    if "optimizer" not in payload:
        raise ConfigError(f"trainer.resume={value}: {path.name} holds weights only; resume from last.pt")
    return payload


def run_folder(value: str) -> Optional[Path]:
    """The run folder trainer.resume continues in place: the folder given, or the run a
    <run>/checkpoints/last.pt belongs to; None for a last.pt elsewhere (then a new folder is made)."""
    path = Path(value).expanduser()
    if path.is_dir():
        return path.resolve()
    if path.parent.name == "checkpoints" and (path.parent.parent / ".hydra").is_dir():
        return path.parent.parent.resolve()
    return None


def given_keys(typed: Iterable[str], choices: dict) -> tuple[set[str], set[str]]:
    """(groups, keys) the command line set: `optimizer=sgd` chooses a group, `optimizer.lr=0.1` sets a key
    (Hydra's own keys aside)."""
    groups, keys = set(), set()
    for item in typed:
        name, sep, _ = str(item).partition("=")
        key = name.lstrip("+~")
        if not sep and not name.startswith("~") or key == "hydra" or key.startswith(("hydra.", "hydra/")):
            continue
        (groups if "." not in key and key in choices else keys).add(key)
    return groups, keys


def _section_option(section: Any) -> Any:
    return section.get("_target_") if isinstance(section, dict) else None


def same_option(top: str, ours: dict, theirs: dict, our_choices: Optional[dict], their_choices: Optional[dict]) -> bool:
    """Whether config section `top` comes from the same option of its group in both runs."""
    if our_choices and their_choices and top in our_choices and top in their_choices:
        return our_choices[top] == their_choices[top]
    return _section_option(ours.get(top)) == _section_option(theirs.get(top))


def continued_config(ours: dict, theirs: dict, groups: set[str], keys: set[str],
                     our_choices: Optional[dict] = None, their_choices: Optional[dict] = None) -> dict:
    """The config a resumed run continues with when the command line gave only some keys: the checkpoint's
    run config (`theirs`), with the groups and keys the command line gave taken from this composition
    (`ours`; resume.differences then refuses those that make it another run), and keys the checkpoint's run
    did not have yet (the configs gained them later) at this composition's value, within a section of the
    same option: the same group choice when both runs' choices are known (a section without a _target_,
    e.g. augmentation, is told apart by its choice alone), else the same _target_."""
    import copy

    effective = copy.deepcopy(theirs)
    for name, section in ours.items():
        if name in groups or name not in effective:
            effective[name] = copy.deepcopy(section)
    flat_ours, flat_effective = flatten(ours), flatten(effective)
    for key, value in flat_ours.items():
        top = key.split(".", 1)[0]
        typed = key in keys or any(key.startswith(k + ".") for k in keys)
        later = (key not in flat_effective and not any(k.startswith(key + ".") for k in flat_effective)
                 and same_option(top, ours, theirs, our_choices, their_choices)
                 and not any(".".join(key.split(".")[:i]) in flat_effective for i in range(1, key.count(".") + 1)))
        if top not in groups and (typed or later):
            node, parts = effective, key.split(".")
            for part in parts[:-1]:
                if not isinstance(node.get(part), dict):
                    node[part] = {}
                node = node[part]
            node[parts[-1]] = copy.deepcopy(value)
    return effective


def check(cfg, defaults: Optional[Callable[[], dict]] = None, typed: Optional[list[str]] = None,
          choices: Optional[dict] = None) -> dict:
    """Read trainer.resume's last.pt and refuse, naming the key, when it cannot be continued by `cfg`;
    return the checkpoint's payload. `defaults()` gives the config the same choices compose to without
    overrides (resolved, plain), for keys the checkpoint's run did not have. `typed`: the overrides the
    command line gave (None: unknown, then all of `cfg` must agree); with them, the keys the command line
    left out come from the checkpoint's run (continued_config) and `cfg` is replaced, in place, by that
    config, so the overrides of the first run need not be repeated."""
    from omegaconf import open_dict

    from trainlab.config import validate

    value = cfg.trainer.resume
    payload = read(value, safety.trusted_targets(cfg))
    ours = OmegaConf.to_container(cfg, resolve=True)
    if typed is not None:
        groups, keys = given_keys(typed, choices or {})
        ours = continued_config(ours, payload["config"], groups, keys, choices, payload.get("choices"))
        ours["trainer"]["resume"] = value
    found = differences(ours, payload["config"], defaults() if defaults is not None else None)
    if found:
        key, mine, before = found[0]
        raise ConfigError(f"trainer.resume={value}: this run has {key}={mine!r} but the checkpoint's run had "
                          f"{before!r}; resuming continues that same run, so leave {key} out (or give it that "
                          "value)" + {0: "", 1: " (1 more key differs)"}.get(len(found) - 1,
                                                                             f" ({len(found) - 1} more keys differ)"))
    if payload["epoch"] >= ours["trainer"]["epochs"]:
        raise ConfigError(f"trainer.resume={value}: that run already finished all {payload['epoch']} epochs")
    if typed is not None:
        effective = validate(OmegaConf.create(ours))
        with open_dict(cfg):  # the dry build and the run see the config the run continues with
            for key in list(cfg.keys()):
                del cfg[key]
            for key, node in effective.items():
                cfg[key] = node
    return payload


def restore(trainer, payload: dict, value: str, run_dir: Optional[Path], train_loader) -> int:
    """Load the payload into the built trainer (weights, optimizer, schedule, RNGs, callbacks) and carry the
    resumed run's best.pt into this run's folder (run_dir None: not this process's job, as on the ranks
    > 0 of a data-parallel run); return the epoch to continue from."""
    try:
        start_epoch = trainer.load_state_dict(payload, train_loader)
    except ConfigError as error:  # a callback's own refusal (e.g. early stopping had already stopped it)
        raise ConfigError(f"trainer.resume={value}: {error}") from None
    if run_dir is None:
        return start_epoch
    source = checkpoint.resume_path(value).parent / "best.pt"
    target = Path(run_dir) / "checkpoints" / "best.pt"
    if payload["best"].get("epoch") is not None and source.is_file() and source.resolve() != target.resolve():
        checkpoint.save_atomic(checkpoint.load(source), target)
    return start_epoch
