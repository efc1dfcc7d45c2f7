"""The typed schema of the trainer and dataset keys, and the checks run before anything is built.

Hydra composes the YAML; this module makes sure the result makes sense, so that a wrong type or an
impossible value fails at start with one line naming the key (not after an hour of training).
Only omegaconf is imported here: `trainlab train --cfg job` must not pay for torch.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, fields, is_dataclass
from typing import Any, Callable, Optional, get_type_hints

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from trainlab.errors import ConfigError

DEVICES = ("auto", "cpu", "cuda", "mps")
MONITORED = ("val/acc", "val/loss")
EMA_MONITORED = ("val_ema/acc", "val_ema/loss")  # logged only with trainer.ema.decay set
SWITCHES = ("auto", "true", "false")
AMP_DTYPES = ("bf16", "fp16")


@dataclass
class EmaSchema:
    """trainer.ema: an exponential moving average of the weights (Polyak averaging); decay null = off."""
    decay: Optional[float] = None
    every: int = 1             # optimizer steps between EMA updates
    evaluate: bool = True      # score the EMA model on the validation split too (val_ema/*)
    select_best: bool = False  # best.pt by the EMA model's metric, holding the EMA weights


@dataclass
class EarlyStoppingSchema:
    """trainer.early_stopping: stop when trainer.monitor has not improved by more than min_delta for patience epochs."""
    patience: Optional[int] = None
    min_delta: float = 0.0


@dataclass
class TrainerSchema:
    epochs: int = 5
    batch_size: Any = 128  # a whole number >= 1, or "full" (full-batch gradient descent)
    eval_batch_size: int = 256
    device: str = "auto"
    monitor: str = "val/acc"
    mode: str = "max"
    drop_last: bool = False
    label_smoothing: float = 0.0
    log_every: int = 50
    deterministic: bool = False
    amp: str = "auto"
    amp_dtype: str = "bf16"
    compile: bool = False
    channels_last: str = "auto"
    progress: bool = True
    model_summary: bool = True
    resume: Optional[str] = None
    clip_grad_norm: Optional[float] = None
    clip_grad_value: Optional[float] = None
    accumulate: int = 1
    l1: float = 0.0
    l2: float = 0.0
    ema: EmaSchema = field(default_factory=EmaSchema)
    early_stopping: EarlyStoppingSchema = field(default_factory=EarlyStoppingSchema)


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


def _batch_size(value: Any) -> bool:
    if isinstance(value, str):
        return value == "full"
    return isinstance(value, int) and not isinstance(value, bool) and value >= 1


def _off_or_positive(value: Any) -> bool:
    return value is None or (math.isfinite(value) and value > 0)


def _non_negative(value: Any) -> bool:
    return math.isfinite(value) and value >= 0


# key -> (test, what a valid value looks like); each test sees an already type-checked value.
# Dotted keys name nested sections (trainer.ema.decay).
TRAINER_RULES: dict[str, tuple[Callable[[Any], bool], str]] = {
    "epochs": (_positive_int, "a whole number >= 1"),
    "batch_size": (_batch_size, "a whole number >= 1 or full (the whole training split in one batch)"),
    "eval_batch_size": (_positive_int, "a whole number >= 1"),
    "device": (lambda v: v in DEVICES or v.startswith("cuda:"), "one of " + "|".join(DEVICES)),
    "monitor": (lambda v: v in MONITORED + EMA_MONITORED, "one of " + "|".join(MONITORED + EMA_MONITORED)),
    "mode": (lambda v: v in ("max", "min"), "max or min"),
    "label_smoothing": (lambda v: 0.0 <= v < 1.0, "a number in [0, 1)"),
    "log_every": (_positive_int, "a whole number >= 1"),
    "amp": (lambda v: v.lower() in SWITCHES, "auto, true or false"),
    "amp_dtype": (lambda v: v in AMP_DTYPES, "bf16 or fp16"),
    "channels_last": (lambda v: v.lower() in SWITCHES, "auto, true or false"),
    "clip_grad_norm": (_off_or_positive, "null (off) or a number > 0"),
    "clip_grad_value": (_off_or_positive, "null (off) or a number > 0"),
    "accumulate": (_positive_int, "a whole number >= 1 (micro-batches per optimizer step)"),
    "l1": (_non_negative, "a number >= 0"),
    "l2": (_non_negative, "a number >= 0"),
    "ema.decay": (lambda v: v is None or 0.0 < v < 1.0, "null (off) or a number in (0, 1)"),
    "ema.every": (_positive_int, "a whole number >= 1 (optimizer steps between EMA updates)"),
    "early_stopping.patience": (lambda v: v is None or v >= 1, "null (off) or a whole number >= 1 (epochs)"),
    "early_stopping.min_delta": (_non_negative, "a number >= 0"),
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
    sections: dict[str, Any] = {}
    for key in known & set(node.keys()):
        nested = get_type_hints(schema).get(key)  # (annotations are strings here: resolve them)
        if is_dataclass(nested):  # a section such as trainer.ema: typed key by key, unknown keys named
            if not isinstance(node[key], DictConfig):
                raise ConfigError(f"{prefix}.{key}={node[key]!r}: must be a mapping of "
                                  f"{', '.join(f.name for f in fields(nested))}")
            sections[key] = OmegaConf.to_container(_typed(nested, node[key], f"{prefix}.{key}", allow_extra=False))
            continue
        try:
            typed[key] = node[key]
        except OmegaConfBaseException:
            if OmegaConf.is_missing(node, key):
                raise ConfigError(f"{prefix}.{key}: has no value (???); set it, e.g. {prefix}.{key}=...") from None
            want = next(f.type for f in fields(schema) if f.name == key)
            want = (str(want).replace("typing.", "").replace("Optional[int]", "int or null")
                    .replace("Optional[float]", "float or null"))
            raise ConfigError(f"{prefix}.{key}={node[key]!r}: expected {want}") from None
    merged = OmegaConf.to_container(typed)
    merged.update(sections)
    merged.update({k: node[k] for k in extra})
    return OmegaConf.create(merged)


def _check(node: DictConfig, prefix: str, rules: dict) -> None:
    for key, (test, wanted) in rules.items():
        value = OmegaConf.select(node, key)
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
    if isinstance(checked.trainer.batch_size, str) and checked.trainer.batch_size.strip().isdigit():
        checked.trainer.batch_size = int(checked.trainer.batch_size)  # "64" from a YAML string, as the int schema did
    _check(checked.trainer, "trainer", TRAINER_RULES)
    check_trainer(checked.trainer)
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


def check_trainer(trainer: DictConfig) -> None:
    """Checks across trainer keys: the monitored metric must be one the run logs."""
    ema = trainer.ema
    if ema.decay is None:
        for key in ("select_best",):
            if ema[key]:
                raise ConfigError(f"trainer.ema.{key}=true needs the EMA on: set trainer.ema.decay (e.g. 0.999)")
    elif not ema.evaluate and ema.select_best:
        raise ConfigError("trainer.ema.select_best=true needs trainer.ema.evaluate=true (best.pt is chosen on "
                          "the EMA model's validation metrics)")
    logged = list(MONITORED) + (list(EMA_MONITORED) if ema.decay is not None and ema.evaluate else [])
    if trainer.monitor not in logged:
        why = "the EMA is off (trainer.ema.decay=null)" if ema.decay is None else "trainer.ema.evaluate=false"
        raise ConfigError(f"trainer.monitor={trainer.monitor}: never logged because {why}; "
                          f"metrics this run logs: {', '.join(logged)}")


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
