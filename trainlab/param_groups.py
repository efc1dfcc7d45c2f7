"""The optimizer's parameter groups, and the checks of the optimizer keys, run before torch's own.

Three trainlab keys of the `optimizer` group shape the groups; build_optimizer takes them out of the
config before the torch.optim class is built with the rest:

  - backbone_lr_scale (default 1.0): with a scale other than 1 the model's `head` module learns at
    optimizer.lr and every other parameter ("backbone") at optimizer.lr * scale.
  - lr_multipliers (default {}): parameter-name prefix -> multiplier of the lr, e.g.
    {head: 10, features.0: 0.1}. A prefix matches a parameter named exactly like it or starting with
    it followed by a dot (`features.1` matches `features.1.weight`, not `features.10.weight`); the
    first matching prefix (in the mapping's order) wins. A prefix matching no parameter of the model
    is an error. Multipliers compose with backbone_lr_scale: a backbone parameter under a prefix
    learns at lr * multiplier * scale. Nested mappings are read as dotted prefixes, so the command
    line's `++optimizer.lr_multipliers.features.0=0.1` ({features: {0: 0.1}}) means `features.0`.
  - no_decay_bias_norm (default true): parameters with ndim <= 1 -- biases and the weights/biases of
    normalization layers (BatchNorm, LayerNorm, GroupNorm), also e.g. PReLU slopes -- get
    weight_decay 0 (the usual rule, as in timm); conv/linear weights keep optimizer.weight_decay.
    With a weight decay of 0 there is nothing to exempt and no extra group is made.

Every group carries a "name" (the trainer logs lr/<name>): "main" (scale 1: what no prefix matched),
"head" / "backbone" (scale != 1), or the prefix; a group of exempted parameters appends "/no_decay"
to it, except the main group's, which is "no_decay". Groups hold at least one parameter. Frozen
parameters (requires_grad False) are never in a group.

param_groups[0] is the group learning at optimizer.lr with weight decay whenever there is one: the
head's ("head") when backbone_lr_scale != 1, else "main" -- so param_groups[0]["lr"] is optimizer.lr
(and the schedule's `lr`). The order is: groups at optimizer.lr before the others, decayed before
exempted, the one holding head parameters first, then model order.
"""

from __future__ import annotations

import math
from typing import Any, Mapping, Optional

import torch

from trainlab.errors import ConfigError

HEAD = "head"
TRAINLAB_KEYS = ("backbone_lr_scale", "lr_multipliers", "no_decay_bias_norm")

# Checks of the torch optimizers' own keys: key -> (test, what a valid value looks like). Each sees a
# number (bools are rejected before); only keys present in the config are checked.
_UNIT = (lambda v: 0.0 <= v < 1.0, "a number in [0, 1)")
NUMBER_RULES = {
    "lr": (lambda v: v > 0, "a number > 0"),
    "momentum": _UNIT,
    "weight_decay": (lambda v: v >= 0, "a number >= 0"),
    "eps": (lambda v: v > 0, "a number > 0"),
    "rho": _UNIT,     # Adadelta: decay rate of the squared-gradient average
    "alpha": _UNIT,   # RMSprop: decay rate of the squared-gradient average
}


def _is_number(value: Any) -> bool:
    return not isinstance(value, bool) and isinstance(value, (int, float)) and math.isfinite(value)


def check_optimizer_settings(settings: Mapping[str, Any]) -> None:
    """One ConfigError naming the key for an impossible value of a torch optimizer key."""
    for key, (test, wanted) in NUMBER_RULES.items():
        if key in settings and settings[key] is not None:
            value = settings[key]
            if not _is_number(value) or not test(value):
                raise ConfigError(f"optimizer.{key}={value!r}: must be {wanted}")
    if "betas" in settings:
        betas = settings["betas"]
        if (not isinstance(betas, (list, tuple)) or len(betas) != 2
                or not all(_is_number(b) and 0.0 <= b < 1.0 for b in betas)):
            raise ConfigError(f"optimizer.betas={betas!r}: must be two numbers in [0, 1) (e.g. [0.9, 0.999])")
    if settings.get("nesterov"):
        if not settings.get("momentum"):
            raise ConfigError(f"optimizer.nesterov={settings['nesterov']!r}: needs optimizer.momentum > 0 "
                              f"(it is {settings.get('momentum', 0)!r})")
        if settings.get("dampening"):
            raise ConfigError(f"optimizer.nesterov={settings['nesterov']!r}: needs optimizer.dampening=0 "
                              f"(it is {settings['dampening']!r})")


def backbone_lr_scale(value: Any) -> float:
    """optimizer.backbone_lr_scale (a trainlab key, not the torch class's): a number >= 0; null = 1."""
    if value is None:
        return 1.0
    if not _is_number(value) or value < 0:
        raise ConfigError(f"optimizer.backbone_lr_scale={value!r}: must be a number >= 0 "
                          "(the backbone learns at optimizer.lr times it; the head at optimizer.lr)")
    return float(value)


def no_decay_bias_norm(value: Any) -> bool:
    """optimizer.no_decay_bias_norm: true or false; null = true."""
    if value is None:
        return True
    if not isinstance(value, bool):
        raise ConfigError(f"optimizer.no_decay_bias_norm={value!r}: must be true or false")
    return value


def _flatten(mapping: Mapping, prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in mapping.items():
        name = f"{prefix}.{key}" if prefix else str(key)
        if isinstance(value, Mapping):
            flat.update(_flatten(value, name))
        else:
            flat[name] = value
    return flat


def lr_multipliers(value: Any) -> dict[str, float]:
    """optimizer.lr_multipliers: a mapping prefix -> number >= 0 (nested mappings: dotted prefixes)."""
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise ConfigError(f"optimizer.lr_multipliers={value!r}: must be a mapping of parameter-name prefix -> "
                          "lr multiplier, e.g. {head: 10, features.0: 0.1}")
    flat = _flatten(value)
    for prefix, multiplier in flat.items():
        if not prefix.strip():
            raise ConfigError("optimizer.lr_multipliers: an empty prefix matches everything; use optimizer.lr")
        if not _is_number(multiplier) or multiplier < 0:
            raise ConfigError(f"optimizer.lr_multipliers.{prefix}={multiplier!r}: must be a number >= 0")
    return {prefix: float(multiplier) for prefix, multiplier in flat.items()}


def _matches(name: str, prefix: str) -> bool:
    return name == prefix or name.startswith(prefix + ".")


def param_groups(model: torch.nn.Module, scale: float = 1.0, multipliers: Optional[Mapping[str, float]] = None,
                 no_decay: bool = False, head_name: str = HEAD) -> list[dict[str, Any]]:
    """The trainable parameters in named groups (see the module's docstring), each with "lr_scale" (the
    factor build_optimizer applies to optimizer.lr) and, for exempted parameters, "weight_decay": 0.

    no_decay here means "split off the ndim <= 1 parameters" (build_optimizer passes False when the
    optimizer's weight decay is 0).
    """
    multipliers = dict(multipliers or {})
    named = list(model.named_parameters())
    names = [name for name, _ in named]
    for prefix in multipliers:
        if not any(_matches(name, prefix) for name in names):
            children = ", ".join(name for name, _ in model.named_children()) or "(none)"
            raise ConfigError(f"optimizer.lr_multipliers.{prefix}: matches no parameter of the model; "
                              f"its top-level children are: {children}")
    trainable = [(name, p) for name, p in named if p.requires_grad]
    if not trainable:
        raise ConfigError("optimizer: the model has no trainable parameters (all have requires_grad=False; "
                          "does model.freeze freeze everything?)")
    in_head: set[int] = set()
    if scale != 1.0:
        head = getattr(model, head_name, None)
        if not isinstance(head, torch.nn.Module):
            raise ConfigError(f"optimizer.backbone_lr_scale={scale:g}: this model has no `{head_name}` module to "
                              "tell the classifier from the backbone; leave the scale at 1.0")
        in_head = {id(p) for p in head.parameters()}

    groups: dict[tuple[str, bool], dict[str, Any]] = {}
    for index, (name, param) in enumerate(trainable):
        prefix = next((prefix for prefix in multipliers if _matches(name, prefix)), None)
        head_param = id(param) in in_head or (not in_head and _matches(name, head_name))
        region = "main" if scale == 1.0 else ("head" if id(param) in in_head else "backbone")
        factor = (multipliers[prefix] if prefix is not None else 1.0) * (scale if region == "backbone" else 1.0)
        label = prefix if prefix is not None else region
        exempt = no_decay and param.ndim <= 1
        group = groups.get((label, exempt))
        if group is None:
            name_ = ("no_decay" if label == "main" else f"{label}/no_decay") if exempt else label
            group = groups[(label, exempt)] = {"name": name_, "params": [], "lr_scale": factor,
                                               "_order": (factor != 1.0, exempt, True, index)}
            if exempt:
                group["weight_decay"] = 0.0
        group["params"].append(param)
        if head_param:  # a group holding head parameters goes first among its equals
            order = group["_order"]
            group["_order"] = (order[0], order[1], False, order[3])
    ordered = sorted(groups.values(), key=lambda g: g["_order"])
    for group in ordered:
        del group["_order"]
    return ordered
