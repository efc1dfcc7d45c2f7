"""The typed schema of the trainer and dataset keys, and the checks run before anything is built.

Hydra composes the YAML; this module makes sure the result makes sense, so that a wrong type or an
impossible value fails at start with one line naming the key (not after an hour of training).
Only omegaconf is imported here: `trainlab train --cfg job` must not pay for torch.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any, Callable, Optional

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from trainlab.errors import ConfigError

DEVICES = ("auto", "cpu", "cuda", "mps")
MONITORED = ("val/acc", "val/loss")
SWITCHES = ("auto", "true", "false")


@dataclass
class TrainerSchema:
    epochs: int = 5
    batch_size: int = 128
    eval_batch_size: int = 256
    device: str = "auto"
    monitor: str = "val/acc"
    mode: str = "max"
    drop_last: bool = False
    label_smoothing: float = 0.0
    log_every: int = 50
    deterministic: bool = False
    amp: str = "auto"
    channels_last: str = "auto"
    progress: bool = True
    model_summary: bool = True
    resume: Optional[str] = None


@dataclass
class DatasetSchema:
    name: str = "fashion_mnist"
    root: str = "data"
    train_size: Optional[int] = None
    val_size: Any = 5000  # a count, or a fraction in (0, 1) of the training split
    download: bool = True
    folds: Optional[int] = None  # k-fold cross-validation: k >= 2, with `fold` the validation fold
    fold: int = 0


def _positive_int(value: Any) -> bool:
    return value >= 1


# key -> (test, what a valid value looks like); each test sees an already type-checked value.
TRAINER_RULES: dict[str, tuple[Callable[[Any], bool], str]] = {
    "epochs": (_positive_int, "a whole number >= 1"),
    "batch_size": (_positive_int, "a whole number >= 1"),
    "eval_batch_size": (_positive_int, "a whole number >= 1"),
    "device": (lambda v: v in DEVICES or v.startswith("cuda:"), "one of " + "|".join(DEVICES)),
    "monitor": (lambda v: v in MONITORED, "one of " + "|".join(MONITORED)),
    "mode": (lambda v: v in ("max", "min"), "max or min"),
    "label_smoothing": (lambda v: 0.0 <= v < 1.0, "a number in [0, 1)"),
    "log_every": (_positive_int, "a whole number >= 1"),
    "amp": (lambda v: v.lower() in SWITCHES, "auto, true or false"),
    "channels_last": (lambda v: v.lower() in SWITCHES, "auto, true or false"),
}


def _valid_val_size(value: Any) -> bool:
    if isinstance(value, bool):
        return False
    if isinstance(value, int):
        return value >= 0
    return isinstance(value, float) and 0.0 < value < 1.0


DATASET_RULES: dict[str, tuple[Callable[[Any], bool], str]] = {
    "train_size": (lambda v: v is None or v >= 1, "null (all) or a whole number >= 1"),
    "val_size": (_valid_val_size, "a count >= 0 or a fraction in (0, 1)"),
    "folds": (lambda v: v is None or v >= 2, "null (no cross-validation) or a whole number >= 2"),
    "fold": (lambda v: v >= 0, "a whole number >= 0"),
}


def _typed(schema: type, node: DictConfig, prefix: str, allow_extra: bool) -> DictConfig:
    """Merge `node` onto the schema's defaults; a value of the wrong type raises ConfigError."""
    known = {f.name for f in fields(schema)}
    extra = [k for k in node if k not in known]
    if extra and not allow_extra:
        raise ConfigError(f"{prefix}.{extra[0]}: unknown key; known keys: {', '.join(sorted(known))}")
    typed = OmegaConf.structured(schema)
    for key in known & set(node.keys()):
        try:
            typed[key] = node[key]
        except OmegaConfBaseException:
            if OmegaConf.is_missing(node, key):
                raise ConfigError(f"{prefix}.{key}: has no value (???); set it, e.g. {prefix}.{key}=...") from None
            want = next(f.type for f in fields(schema) if f.name == key)
            want = str(want).replace("typing.", "").replace("Optional[int]", "int or null")
            raise ConfigError(f"{prefix}.{key}={node[key]!r}: expected {want}") from None
    merged = OmegaConf.to_container(typed)
    merged.update({k: node[k] for k in extra})
    return OmegaConf.create(merged)


def _check(node: DictConfig, prefix: str, rules: dict) -> None:
    for key, (test, wanted) in rules.items():
        value = node[key]
        if not test(value):
            raise ConfigError(f"{prefix}.{key}={value!r}: must be {wanted}")


def validate(cfg: DictConfig) -> DictConfig:
    """Return a resolved copy of `cfg` with typed trainer/dataset sections, or raise ConfigError."""
    try:
        plain = OmegaConf.to_container(cfg, resolve=True)
    except OmegaConfBaseException as error:
        raise ConfigError(f"config cannot be resolved: {error}".splitlines()[0]) from None
    for group in ("dataset", "augmentation", "model", "init", "optimizer", "schedule", "trainer"):
        if not isinstance(plain.get(group), dict):
            raise ConfigError(f"{group}: missing config group; choose one, e.g. {group}=<option>")
    if not isinstance(plain.get("seed"), int) or isinstance(plain.get("seed"), bool):
        raise ConfigError(f"seed={plain.get('seed')!r}: must be a whole number")
    checked = OmegaConf.create(plain)
    checked.trainer = _typed(TrainerSchema, checked.trainer, "trainer", allow_extra=False)
    checked.dataset = _typed(DatasetSchema, checked.dataset, "dataset", allow_extra=True)
    _check(checked.trainer, "trainer", TRAINER_RULES)
    wanted_mode = "min" if checked.trainer.monitor.endswith("loss") else "max"
    if checked.trainer.mode != wanted_mode:
        raise ConfigError(
            f"trainer.mode={checked.trainer.mode} with trainer.monitor={checked.trainer.monitor} would keep the "
            f"worst epoch as best.pt; use trainer.mode={wanted_mode}"
        )
    _check(checked.dataset, "dataset", DATASET_RULES)
    folds, fold = checked.dataset.folds, checked.dataset.fold
    if (folds is None and fold != 0) or (folds is not None and fold >= folds):
        raise ConfigError(f"dataset.fold={fold}: must be in 0..k-1 with dataset.folds=k (now dataset.folds={folds})")
    ops = checked.augmentation.get("ops")
    if ops is not None and not isinstance(ops, DictConfig):
        raise ConfigError("augmentation.ops: must be a mapping of op name -> op config (a named dict)")
    return checked


def switch(value: str, auto: bool) -> bool:
    """Resolve an auto|true|false setting."""
    value = str(value).lower()
    return auto if value == "auto" else value == "true"


def check_target(target: str, key: str) -> None:
    """A _target_ that does not exist: one line naming it, with the closest names in its module."""
    import difflib
    import importlib

    module_name, _, name = target.rpartition(".")
    try:
        module = importlib.import_module(module_name)
    except ImportError:
        raise ConfigError(f"{key}._target_={target}: no module {module_name!r}") from None
    if not hasattr(module, name):
        public = [n for n in dir(module) if not n.startswith("_")]
        close = difflib.get_close_matches(name, public, n=3, cutoff=0.5)
        hint = f"; did you mean {', '.join(f'{module_name}.{c}' for c in close)}?" if close else ""
        raise ConfigError(f"{key}._target_={target}: {module_name} has no {name!r}{hint}")


def instantiate(node: Any, key: str, **kwargs: Any) -> Any:
    """hydra.utils.instantiate, with a failure turned into one line that names the config key."""
    from hydra.errors import InstantiationException
    from hydra.utils import instantiate as hydra_instantiate

    target = node.get("_target_") if isinstance(node, (dict, DictConfig)) else None
    if isinstance(target, str) and "." in target:
        check_target(target, key)
    try:
        return hydra_instantiate(node, _convert_="all", **kwargs)
    except InstantiationException as error:
        cause = error.__cause__ or error
        if isinstance(cause, ConfigError):  # the component's own check already names the key
            raise cause from None
        first = str(cause).strip().splitlines()[0] if str(cause).strip() else type(cause).__name__
        target = node.get("_target_", "?") if isinstance(node, (dict, DictConfig)) else "?"
        raise ConfigError(f"{key}: cannot build {target}: {first}") from None
