"""The typed schema of the trainer and dataset keys, and the checks run before anything is built.

Hydra composes the YAML; this module makes sure the result makes sense, so that a wrong type or an
impossible value fails at start with one line naming the key (not after an hour of training).
Only omegaconf is imported here: `trainlab train --cfg job` must not pay for torch.
"""

from __future__ import annotations

import functools
import math
import re
from dataclasses import dataclass, field, fields
from typing import Any, Callable, Optional

from omegaconf import DictConfig, ListConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from trainlab.checks import KeyProblem, bad
from trainlab.errors import MODEL_ADVICE, ConfigError, is_out_of_memory, memory_asked

DEVICES = ("auto", "cpu", "cuda", "mps")
MONITORED = ("val/acc", "val/loss")
EMA_MONITORED = ("val_ema/acc", "val_ema/loss")  # logged only with callbacks.ema.decay set
SWITCHES = ("auto", "true", "false")
AMP_DTYPES = ("bf16", "fp16")


def free(default: Any) -> Any:
    """A schema field whose value may differ between a run and its resumption: it changes where files are
    or how the run is shown, not what it computes (the resume check reads this mark)."""
    return field(default=default, metadata={"resume": "free"})


@dataclass
class TrainerSchema:
    epochs: int = 5
    batch_size: Any = 128  # a whole number >= 1, or "full" (full-batch gradient descent)
    eval_batch_size: Any = free("auto")  # auto (the fastest measured on the device) or a whole number >= 1
    device: str = free("auto")
    monitor: str = "val/acc"
    mode: str = "max"
    drop_last: bool = False
    label_smoothing: float = 0.0
    log_every: int = free(50)
    deterministic: bool = False
    amp: str = "auto"
    amp_dtype: str = "bf16"
    compile: str = "auto"
    channels_last: str = "auto"
    resume: Optional[str] = free(None)
    checkpoint_every_steps: Optional[int] = free(None)  # last.pt inside epochs too (where a resume continues)
    clip_grad_norm: Optional[float] = None
    clip_grad_value: Optional[float] = None
    accumulate: int = 1
    skip_nonfinite: bool = False
    l1: float = 0.0
    l2: float = 0.0
    threads: Any = free("auto")  # torch intra-op threads: auto (a sweep's share of the cores) or a whole number >= 1
    devices: int = 1  # processes of one run (data parallel: one per GPU on CUDA); the global batch stays batch_size
    sync_bn: bool = False  # batch-norm statistics over all the ranks' samples (SyncBatchNorm; CUDA only)


# Keys that moved: a config (or an old command line) that still sets one gets told where it went.
MOVED = {
    "trainer.ema": "callbacks.ema (e.g. callbacks.ema.decay=0.999)",
    "trainer.early_stopping": "callbacks.early_stopping (e.g. callbacks.early_stopping.patience=3)",
    "trainer.progress": "callbacks.console.progress",
    "trainer.model_summary": "callbacks.console.model_summary",
}


@dataclass
class DatasetSchema:
    name: str = "fashion_mnist"
    root: str = free("data")
    train_size: Optional[int] = None
    val_size: Any = 5000  # a count, or a fraction in (0, 1) of the training split
    download: bool = free(True)
    folds: Optional[int] = None  # k-fold cross-validation: k >= 2, with `fold` the validation fold
    fold: int = 0
    system_root: Optional[str] = free(None)  # a second place to look for the files (Debian's package)
    cache_dir: Optional[str] = free(None)    # image folders: where the decoded cache goes
    num_workers: int = free(2)               # image folders: decoding processes


@dataclass
class TransferSchema:
    """The transfer-learning keys every model option has (see trainlab/transfer.py)."""
    pretrained: Optional[str] = free(None)  # the run being resumed takes its weights from last.pt
    freeze: str = "none"
    freeze_bn: bool = True


def schema_free_keys() -> set[str]:
    """Dotted keys marked free() in the schemas above."""
    marked = set()
    for prefix, schema in (("trainer", TrainerSchema), ("dataset", DatasetSchema), ("model", TransferSchema)):
        marked |= {f"{prefix}.{f.name}" for f in fields(schema) if f.metadata.get("resume") == "free"}
    return marked


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
TRAINER_RULES: dict[str, tuple[Callable[[Any], bool], str]] = {
    "epochs": (_positive_int, "a whole number >= 1"),
    "batch_size": (_batch_size, "a whole number >= 1 or full (the whole training split in one batch)"),
    "eval_batch_size": (lambda v: v == "auto" or (isinstance(v, int) and not isinstance(v, bool) and v >= 1),
                        "auto or a whole number >= 1"),
    "device": (lambda v: v in DEVICES or v.startswith("cuda:"), "one of " + "|".join(DEVICES)),
    "monitor": (lambda v: v in MONITORED + EMA_MONITORED, "one of " + "|".join(MONITORED + EMA_MONITORED)),
    "mode": (lambda v: v in ("max", "min"), "max or min"),
    "label_smoothing": (lambda v: 0.0 <= v < 1.0, "a number in [0, 1)"),
    "log_every": (_positive_int, "a whole number >= 1"),
    "amp": (lambda v: v.lower() in SWITCHES, "auto, true or false"),
    "amp_dtype": (lambda v: v in AMP_DTYPES, "bf16 or fp16"),
    "channels_last": (lambda v: v.lower() in SWITCHES, "auto, true or false"),
    "compile": (lambda v: v.lower() in SWITCHES, "auto, true or false"),
    "clip_grad_norm": (_off_or_positive, "null (off) or a number > 0"),
    "clip_grad_value": (_off_or_positive, "null (off) or a number > 0"),
    "checkpoint_every_steps": (lambda v: v is None or _positive_int(v),
                               "null (at epoch ends only) or a whole number >= 1 (optimizer steps)"),
    "accumulate": (_positive_int, "a whole number >= 1 (micro-batches per optimizer step)"),
    "l1": (_non_negative, "a number >= 0"),
    "l2": (_non_negative, "a number >= 0"),
    "threads": (lambda v: v == "auto" or (isinstance(v, int) and not isinstance(v, bool) and v >= 1),
                "auto or a whole number >= 1 (torch threads for the run)"),
    "devices": (_positive_int, "a whole number >= 1 (processes of the run: one per GPU on CUDA)"),
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
    for key in extra:
        if f"{prefix}.{key}" in MOVED:
            raise ConfigError(f"{prefix}.{key}: moved to {MOVED[f'{prefix}.{key}']}")
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
            want = (str(want).replace("typing.", "").replace("Optional[int]", "int or null")
                    .replace("Optional[float]", "float or null").replace("Optional[str]", "str or null"))
            raise ConfigError(f"{prefix}.{key}={node[key]!r}: expected {want}") from None
    merged = OmegaConf.to_container(typed)
    merged.update({k: node[k] for k in extra})
    return OmegaConf.create(merged)


def _check(node: DictConfig, prefix: str, rules: dict) -> None:
    for key, (test, wanted) in rules.items():
        value = OmegaConf.select(node, key)
        if not test(value):
            raise bad(f"{prefix}.{key}", value, f"must be {wanted}")


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
    check_data_parallel(checked.trainer, checked.get("callbacks"))
    checked.callbacks = check_callbacks(checked.get("callbacks"))
    check_monitor(checked.trainer.monitor, checked.callbacks)
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
    if checked.get("domain") is not None:
        data = checked.domain.get("data") if isinstance(checked.domain, DictConfig) else None
        if not isinstance(data, DictConfig):
            raise ConfigError("domain.data: missing; a domain names its dataset section, e.g. domain=fashion_mnist_m")
        checked.domain.data = _typed(DatasetSchema, data, "domain.data", allow_extra=True)
        _check(checked.domain.data, "domain.data", {"train_size": DATASET_RULES["train_size"]})
    checked.adaptation = check_adaptation(checked.get("adaptation"), checked.get("domain") is not None)
    return checked


ADAPTATION_METHODS = ("none", "dann")
DANN_RULES: dict[str, tuple[Callable[[Any], bool], str]] = {
    "hidden": (lambda v: isinstance(v, (list, ListConfig)) and all(
        isinstance(w, int) and not isinstance(w, bool) and w >= 1 for w in v), "a list of whole numbers >= 1 (may be empty)"),
    "dropout": (lambda v: isinstance(v, (int, float)) and 0.0 <= v < 1.0, "a number in [0, 1)"),
    "weight": (lambda v: isinstance(v, (int, float)) and math.isfinite(v) and v > 0, "a number > 0"),
    "lambda_schedule": (lambda v: v in ("ganin", "constant"), "ganin or constant"),
    "gamma": (lambda v: isinstance(v, (int, float)) and math.isfinite(v) and v >= 0, "a number >= 0"),
    "lambda_max": (lambda v: isinstance(v, (int, float)) and math.isfinite(v) and v >= 0, "a number >= 0"),
}


def check_adaptation(adaptation: Any, has_domain: bool) -> DictConfig:
    """The `adaptation` group: none, or dann with its keys (dann needs a target domain)."""
    if adaptation is None:
        return OmegaConf.create({"method": "none"})
    method = adaptation.get("method") if isinstance(adaptation, DictConfig) else None
    if method not in ADAPTATION_METHODS:
        raise bad("adaptation.method", method, "unknown method",
                  f"use adaptation={' or adaptation='.join(ADAPTATION_METHODS)}")
    known = {"method"} | (set(DANN_RULES) if method == "dann" else set())
    extra = sorted(set(adaptation) - known)
    if extra:
        raise ConfigError(f"adaptation.{extra[0]}: unknown key for adaptation={method}; known keys: "
                          f"{', '.join(sorted(known))}")
    if method == "dann":
        missing = sorted(set(DANN_RULES) - set(adaptation))
        if missing:
            raise ConfigError(f"adaptation.{missing[0]}: missing; adaptation=dann sets it "
                              "(configs/adaptation/dann.yaml)")
        plain = OmegaConf.create(OmegaConf.to_container(adaptation))
        _check(plain, "adaptation", DANN_RULES)
        if not has_domain:
            raise ConfigError("adaptation=dann: needs a target domain to adapt to; add e.g. domain=fashion_mnist_m "
                              "(options in configs/domain/)")
    return adaptation


def check_data_parallel(trainer: DictConfig, callbacks: Any) -> None:
    """What trainer.devices > 1 asks of the other keys (each rank gets batch_size / devices of every batch)."""
    devices = trainer.devices
    if devices == 1:
        return
    batch = trainer.batch_size
    if batch != "full" and batch % devices:
        fits = [b for b in (batch - batch % devices, batch - batch % devices + devices) if b > 0]
        raise ConfigError(f"trainer.batch_size={batch}: does not divide among trainer.devices={devices} (each "
                          f"process takes batch_size / devices of every batch); use e.g. trainer.batch_size="
                          f"{' or '.join(map(str, fits))}")
    if trainer.skip_nonfinite:
        raise ConfigError(f"trainer.skip_nonfinite=true with trainer.devices={devices}: a batch skipped on one "
                          "process and stepped on the others would stall them; use trainer.skip_nonfinite=false")
    images = (callbacks or {}).get("images") if isinstance(callbacks, DictConfig) else None
    if images is not None and images.get("confusion") == "epoch":
        raise ConfigError(f"callbacks.images.confusion=epoch with trainer.devices={devices}: rank 0 alone would "
                          "count its part of the split each epoch; use callbacks.images.confusion=end")


def check_callbacks(callbacks: Any) -> DictConfig:
    """The `callbacks` group: a named dict of component configs, each with a _target_; a null entry is off."""
    if callbacks is None:
        return OmegaConf.create({})
    if not isinstance(callbacks, DictConfig):
        raise ConfigError(f"callbacks={callbacks!r}: must be a mapping of callback name -> config (a named dict); "
                          "choose an option, e.g. callbacks=default")
    for name, node in callbacks.items():
        if node is not None and (not isinstance(node, DictConfig) or "_target_" not in node):
            raise ConfigError(f"callbacks.{name}: no _target_; each callback names its class, e.g. "
                              "_target_: trainlab.callbacks.ema.EMA (or ~callbacks.{name} to drop it)")
    return OmegaConf.create({k: v for k, v in callbacks.items() if v is not None})


def ema_settings(callbacks: DictConfig) -> dict:
    """callbacks.ema's decay / evaluate / select_best (EMA off when the callback is absent or decay is null)."""
    ema = callbacks.get("ema") or {}
    return {"decay": ema.get("decay"), "evaluate": ema.get("evaluate", True), "select_best": ema.get("select_best", False)}


def check_monitor(monitor: str, callbacks: DictConfig) -> None:
    """The monitored metric must be one the run logs (val_ema/* only with the EMA on and scored)."""
    ema = ema_settings(callbacks)
    logged = list(MONITORED) + (list(EMA_MONITORED) if ema["decay"] is not None and ema["evaluate"] else [])
    if monitor not in logged:
        why = "the EMA is off (callbacks.ema.decay=null)" if ema["decay"] is None else "callbacks.ema.evaluate=false"
        raise ConfigError(f"trainer.monitor={monitor}: never logged because {why}; "
                          f"metrics this run logs: {', '.join(logged)}")


def effective_monitor(trainer: DictConfig, callbacks: DictConfig) -> str:
    """The metric that picks best.pt (and drives early stopping and metric-driven schedules):
    trainer.monitor, or its val_ema/ twin when callbacks.ema.select_best is on."""
    ema, monitor = ema_settings(callbacks), trainer.monitor
    if ema["decay"] is not None and ema["select_best"] and monitor.startswith("val/"):
        monitor = "val_ema/" + monitor[len("val/"):]
    return monitor


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
        if isinstance(cause, KeyProblem):  # the component's check of one of its keys: put it in place
            raise cause.at(key) from None
        unknown = re.search(r"unexpected keyword argument '(\w+)'", str(cause))
        if isinstance(cause, TypeError) and unknown:
            raise ConfigError(f"{key}.{unknown.group(1)}: unknown key{known_keys(node, kwargs)}") from None
        first = str(cause).strip().splitlines()[0] if str(cause).strip() else type(cause).__name__
        target = node.get("_target_", "?") if isinstance(node, (dict, DictConfig)) else "?"
        if is_out_of_memory(cause):
            raise ConfigError(f"{key}: {target} does not fit in memory ({memory_asked(cause)}); {MODEL_ADVICE}") from None
        raise ConfigError(f"{key}: cannot build {target}: {first}") from None


def known_keys(node: Any, supplied: Any = ()) -> str:
    """'; known keys: a, b' for the class a _target_ names (from its signature, less the arguments the
    builder supplies itself), or '' when unknown."""
    import importlib
    import inspect

    try:
        module, _, name = str(node.get("_target_")).rpartition(".")
        target = getattr(importlib.import_module(module), name)
        names = [p for p in inspect.signature(target).parameters
                 if p not in ("self", "args", "kwargs") and p not in supplied]
    except (ImportError, AttributeError, TypeError, ValueError):
        return ""
    return f"; known keys: {', '.join(names)}" if names else ""


def load_option(group: str, name: str) -> DictConfig:
    """configs/<group>/<name>.yaml as Hydra composes it (with its defaults list: shared blocks included),
    a fresh copy each call. For tests, benchmarks and tools that need one option without a whole run."""
    return OmegaConf.create(_composed_option(group, name))


@functools.lru_cache(maxsize=None)
def _composed_option(group: str, name: str) -> dict:
    from hydra import compose, initialize_config_dir

    from trainlab.commands import config_dir

    with initialize_config_dir(version_base="1.3", config_dir=str(config_dir())):
        composed = compose(config_name=f"{group}/{name}")
    return OmegaConf.to_container(OmegaConf.select(composed, group.replace("/", ".")), resolve=False)
