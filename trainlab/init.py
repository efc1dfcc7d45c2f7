"""Weight initializers from the `init` group.

An `init` config has these keys (each configs/init/*.yaml sets them all but `lsuv`):

  weight:              a partial torch.nn.init function (`_target_`, `_partial_: true`, its arguments), or
                       null to keep PyTorch's own initialization. `gain: auto` (xavier, orthogonal) and
                       `nonlinearity: auto` (kaiming) follow the model's activation through
                       layers.GAIN_NONLINEARITY; leaky_relu/prelu take their slope from activation_params
                       (negative_slope, default 0.01; prelu's init, default 0.25) as kaiming's `a` / the gain's
                       parameter (`a: auto` asks for that slope with an explicit nonlinearity).
  bias:                a constant for every bias, or null to leave biases as they are.
  zero_init_head:      zero the weight of `model.head` (the final classifier): the net starts predicting
                       the bias alone.
  zero_init_residual:  zero the weight (and bias) of every module's `last_norm`: each residual block starts
                       as its shortcut (Goyal et al. 2017). Models without one are left as they are.
  lsuv:                {tol, max_iters} (optional): after `weight`, Mishkin & Matas (2015) layer-sequential
                       unit-variance scaling on a batch of training data.

Layers initialized: nn.Linear and nn.Conv1d/2d/3d, subclasses included (INITIALIZED). Norm layers keep
their identity start (weight 1, bias 0), except the `last_norm` weights zero_init_residual zeroes.
Random weights are drawn on the CPU and copied into the layer, so a seed gives the same weights on
any device and in any memory format.
"""

from __future__ import annotations

import math
from typing import Any, Callable, Optional

import torch
from omegaconf import DictConfig, OmegaConf
from torch import nn

from trainlab.config import instantiate
from trainlab.errors import ConfigError
from trainlab.models.layers import GAIN_NONLINEARITY

# Layers whose weights an initializer sets; norm layers keep their identity start (weight 1, bias 0).
INITIALIZED = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)

KEYS = ("weight", "bias", "zero_init_head", "zero_init_residual", "lsuv")
LSUV_KEYS = {"tol": 0.1, "max_iters": 10}  # Mishkin & Matas (2015): Tol_var = 0.1, T_max = 10
MODES = ("fan_in", "fan_out")
# the names torch.nn.init.calculate_gain knows
NONLINEARITIES = ("linear", "conv1d", "conv2d", "conv3d", "conv_transpose1d", "conv_transpose2d",
                  "conv_transpose3d", "sigmoid", "tanh", "relu", "leaky_relu", "selu")
BOUNDED = ("uniform_", "trunc_normal_")  # functions whose `a`, `b` are the interval (not a slope)
NEEDS_BATCH = "init=lsuv needs a batch of training data"


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _plain(node: Any) -> Any:
    return OmegaConf.to_container(node, resolve=True) if isinstance(node, DictConfig) else node


# --------------------------------------------------------------------------------------------- gains


def activation_slope(activation: str, activation_params: Optional[dict] = None) -> float:
    """The negative slope of a leaky_relu/prelu activation (0.01 / 0.25 unless activation_params set it)."""
    params = dict(_plain(activation_params) or {})
    slope = params.get("init", 0.25) if activation == "prelu" else params.get("negative_slope", 0.01)
    if not _is_number(slope):
        key = "init" if activation == "prelu" else "negative_slope"
        raise ConfigError(f"model.activation_params.{key}={slope!r}: must be a number")
    return float(slope)


def gain_nonlinearity(activation: str, key: str) -> str:
    """The calculate_gain name for model.activation, for an `auto` at init.<key>."""
    if activation not in GAIN_NONLINEARITY:
        raise ConfigError(
            f"{key}=auto: no gain is known for model.activation={activation!r}; set {key} to a value"
        )
    return GAIN_NONLINEARITY[activation]


def auto_gain(activation: str, activation_params: Optional[dict] = None, key: str = "init.weight.gain") -> float:
    """calculate_gain for the model's activation: relu sqrt(2), tanh 5/3, selu 3/4, leaky_relu sqrt(2/(1+a^2))..."""
    name = gain_nonlinearity(activation, key)
    param = activation_slope(activation, activation_params) if name == "leaky_relu" else None
    return nn.init.calculate_gain(name, param)


def resolve_weight(node: Any, activation: str = "relu", activation_params: Optional[dict] = None) -> Optional[dict]:
    """init.weight as a plain dict with every `auto` resolved and each known argument checked (or None)."""
    node = _plain(node)
    if node is None:
        return None
    if not isinstance(node, dict) or "_target_" not in node:
        raise ConfigError(f"init.weight={node!r}: must be null or a torch.nn.init function "
                          "(_target_: torch.nn.init.<name>_, _partial_: true, its arguments)")
    spec = dict(node)
    if spec.get("_partial_") is not True:
        raise ConfigError(f"init.weight._partial_={spec.get('_partial_')!r}: must be true (the tensor comes later)")
    name = str(spec["_target_"]).rsplit(".", 1)[-1]
    bounded = name in BOUNDED

    if spec.get("nonlinearity") == "auto":
        spec["nonlinearity"] = gain_nonlinearity(activation, "init.weight.nonlinearity")
        if spec["nonlinearity"] == "leaky_relu" and spec.get("a", "auto") == "auto":
            spec["a"] = activation_slope(activation, activation_params)
    if not bounded and spec.get("a") == "auto":
        spec["a"] = activation_slope(activation, activation_params) if spec.get("nonlinearity") == "leaky_relu" else 0.0
    if spec.get("gain") == "auto":
        spec["gain"] = auto_gain(activation, activation_params)

    def bad(key: str, wanted: str) -> ConfigError:
        return ConfigError(f"init.weight.{key}={spec[key]!r}: must be {wanted}")

    for key, value in spec.items():
        if key in ("_target_", "_partial_"):
            continue
        if key == "std" and not (_is_number(value) and value >= 0):
            raise bad(key, "a number >= 0")
        if key == "gain" and not (_is_number(value) and value > 0):
            raise bad(key, "a number > 0, or auto (from model.activation)")
        if key == "mode" and value not in MODES:
            raise bad(key, " or ".join(MODES))
        if key == "nonlinearity" and value not in NONLINEARITIES:
            raise bad(key, "auto (from model.activation) or one of " + "|".join(NONLINEARITIES))
        if key in ("mean", "val", "a", "b") and not _is_number(value):
            raise bad(key, "a number" + ("" if bounded or key != "a" else ", or auto (the activation's slope)"))
        if key == "sparsity" and not (_is_number(value) and 0 <= value < 1):
            raise bad(key, "a number in [0, 1)")
    if bounded and "a" in spec and "b" in spec and spec["a"] > spec["b"]:
        raise ConfigError(f"init.weight.b={spec['b']!r}: must be >= init.weight.a={spec['a']!r}")
    return spec


# ------------------------------------------------------------------------------------ the init itself


@torch.no_grad()
def initialize(model: nn.Module, weight: Optional[Callable] = None, bias: Optional[float] = None) -> int:
    """Apply `weight(tensor)` to each linear/conv weight and fill biases with `bias`; return layers touched.

    The weight is drawn into a fresh contiguous CPU tensor and copied in: the same numbers for a seed
    on any device, and functions that reshape (orthogonal_) work on channels_last weights too.
    """
    touched = 0
    for module in model.modules():
        if not isinstance(module, INITIALIZED):
            continue
        if weight is not None:
            target = module.weight
            dtype = target.dtype if target.dtype in (torch.float32, torch.float64) else torch.float32
            fresh = torch.empty(target.shape, dtype=dtype)
            weight(fresh)
            target.copy_(fresh)
        if bias is not None and module.bias is not None:
            nn.init.constant_(module.bias, bias)
        touched += 1
    return touched


def model_head(model: nn.Module) -> nn.Module:
    """`model.head`, the final classifier every model has (ConfigError for zero_init_head if missing)."""
    head = getattr(model, "head", None)
    if not isinstance(head, nn.Module) or not isinstance(getattr(head, "weight", None), torch.Tensor):
        raise ConfigError(f"init.zero_init_head=true: {type(model).__name__} has no `head` layer with a weight "
                          "(its final classifier) to zero")
    return head


def last_norms(model: nn.Module) -> list[nn.Module]:
    """Every module's `last_norm` that has a weight (residual blocks; a norm, or a conv where no norm follows)."""
    found: list[nn.Module] = []
    for module in model.modules():
        try:
            norm = getattr(module, "last_norm", None)
        except NotImplementedError:  # an abstract base block
            continue
        if (isinstance(norm, nn.Module) and isinstance(getattr(norm, "weight", None), torch.Tensor)
                and all(norm is not seen for seen in found)):
            found.append(norm)
    return found


@torch.no_grad()
def zero_residual(model: nn.Module) -> list[nn.Module]:
    """Zero the weight (and bias, if any) of every module's `last_norm`: each residual block then starts
    as its shortcut. Returns the layers zeroed (none for a model without residual blocks)."""
    norms = last_norms(model)
    for norm in norms:
        nn.init.zeros_(norm.weight)
        if isinstance(getattr(norm, "bias", None), torch.Tensor):
            nn.init.zeros_(norm.bias)
    return norms


class _Reached(Exception):
    """Raised by a hook to stop the forward pass once the layer being measured has run."""


@torch.no_grad()
def lsuv(model: nn.Module, batch: torch.Tensor, tol: float = 0.1, max_iters: int = 10,
         skip: tuple[nn.Module, ...] = ()) -> dict[str, Any]:
    """Layer-sequential unit variance (Mishkin & Matas 2015), after the weights are initialized.

    For each linear/conv layer in the order the forward pass reaches it: run `batch`, and while the
    variance of the layer's output (over all its elements) is not within `tol` of 1 and fewer than
    `max_iters` rescalings were made, divide the layer's weight by sqrt(variance). The model runs in
    eval mode (dropout off, norm layers on their running statistics, which are not updated) and each
    module's own mode is restored afterwards. Returns iterations and final variance per layer.
    """
    param = next(model.parameters(), None)
    if param is not None and batch.device != param.device:
        batch = batch.to(param.device)
    names = {module: name for name, module in model.named_modules() if isinstance(module, INITIALIZED)}
    modes = {module: module.training for module in model.modules()}
    order: list[nn.Module] = []

    def record(module, inputs, output):
        if module not in order:
            order.append(module)

    def measure(target: nn.Module) -> Optional[float]:
        seen: list[torch.Tensor] = []

        def hook(module, inputs, output):
            seen.append(output)
            raise _Reached

        handle = target.register_forward_hook(hook)
        try:
            model(batch)
        except _Reached:
            pass
        finally:
            handle.remove()
        return seen[0].detach().float().var().item() if seen else None

    model.eval()
    try:
        handles = [module.register_forward_hook(record) for module in names]
        try:
            model(batch)
        finally:
            for handle in handles:
                handle.remove()
        iterations: dict[str, int] = {}
        variance: dict[str, float] = {}
        for module in order:
            if module in skip:
                continue
            name = names[module] or type(module).__name__
            var, steps = measure(module), 0
            while var is not None and not abs(var - 1.0) < tol and steps < max_iters:  # NaN: not within tol
                if not (math.isfinite(var) and var > 0):
                    raise ConfigError(f"init.lsuv: layer {name} gives output variance {var} on the batch; "
                                      "cannot scale it to 1 (a constant input or all-zero weights?)")
                module.weight.mul_(1.0 / math.sqrt(var))
                steps += 1
                var = measure(module)
            iterations[name], variance[name] = steps, var
    finally:
        for module, training in modes.items():
            module.training = training
    return {"lsuv_iterations": iterations, "lsuv_variance": variance,
            "lsuv_unconverged": [n for n, v in variance.items() if not abs(v - 1.0) < tol],
            "lsuv_unreached": [names[m] for m in names if m not in order]}


# ----------------------------------------------------------------------------------- from the config


def check_init(init_cfg, activation: str = "relu", activation_params: Optional[dict] = None) -> dict:
    """Validate the `init` config (no model needed); return it as a plain dict with `auto`s resolved.

    Raises ConfigError naming init.<key> for an unknown key or an impossible value.
    """
    cfg = _plain(init_cfg)
    if not isinstance(cfg, dict):
        raise ConfigError(f"init={cfg!r}: must be a mapping with keys {', '.join(KEYS)}")
    unknown = [k for k in cfg if k not in KEYS]
    if unknown:
        raise ConfigError(f"init.{unknown[0]}: unknown key; known keys: {', '.join(KEYS)}")
    checked: dict[str, Any] = {"weight": resolve_weight(cfg.get("weight"), activation, activation_params)}
    bias = cfg.get("bias")
    if bias is not None and not _is_number(bias):
        raise ConfigError(f"init.bias={bias!r}: must be a number or null (leave biases as they are)")
    checked["bias"] = None if bias is None else float(bias)
    for key in ("zero_init_head", "zero_init_residual"):
        value = cfg.get(key, False)
        if not isinstance(value, bool):
            raise ConfigError(f"init.{key}={value!r}: must be true or false")
        checked[key] = value
    options = cfg.get("lsuv")
    if options is not None:
        if not isinstance(options, dict):
            raise ConfigError(f"init.lsuv={options!r}: must be null or a mapping with keys tol, max_iters")
        unknown = [k for k in options if k not in LSUV_KEYS]
        if unknown:
            raise ConfigError(f"init.lsuv.{unknown[0]}: unknown key; known keys: {', '.join(LSUV_KEYS)}")
        options = {**LSUV_KEYS, **options}
        if not (_is_number(options["tol"]) and options["tol"] > 0):
            raise ConfigError(f"init.lsuv.tol={options['tol']!r}: must be a number > 0")
        max_iters = options["max_iters"]
        if not (isinstance(max_iters, int) and not isinstance(max_iters, bool) and max_iters >= 1):
            raise ConfigError(f"init.lsuv.max_iters={max_iters!r}: must be a whole number >= 1")
    checked["lsuv"] = options
    return checked


def needs_batch(init_cfg) -> bool:
    """Whether apply_init needs a batch of training data for this `init` config (LSUV does)."""
    cfg = _plain(init_cfg)
    return isinstance(cfg, dict) and cfg.get("lsuv") is not None


def apply_init(model: nn.Module, init_cfg, activation: str = "relu", activation_params: Optional[dict] = None,
               batch: Optional[torch.Tensor] = None) -> dict:
    """Initialize `model` as the `init` config says; return a small report.

    `activation`/`activation_params` are the model's (cfg.model.activation / activation_params): they
    resolve `gain: auto` and `nonlinearity: auto`. `batch` (a normalized training batch, best on the
    model's device: it is moved there) is needed by `lsuv` only. Order: weights, biases,
    zero_init_residual, LSUV (so it scales the network as it will start), zero_init_head.
    Report: layers (linear/conv layers initialized), weight (the resolved function and arguments, or
    None), bias, zeroed_head, zeroed_residual (last_norm count), and for LSUV lsuv_iterations and
    lsuv_variance per layer (plus lsuv_unconverged / lsuv_unreached layer names).
    """
    activation_params = _plain(activation_params) or None  # model.activation_params may be a DictConfig
    cfg = check_init(init_cfg, activation, activation_params)
    if cfg["lsuv"] is not None and batch is None:
        raise ConfigError(NEEDS_BATCH)
    head = model_head(model) if cfg["zero_init_head"] else None  # a missing head fails before anything changes
    spec = cfg["weight"]
    weight = instantiate(spec, "init.weight") if spec is not None else None
    if weight is not None and not callable(weight):
        raise ConfigError(f"init.weight: {spec['_target_']} did not give a function of the weight tensor")
    try:
        layers = initialize(model, weight, cfg["bias"])
    except (ValueError, TypeError, RuntimeError) as error:
        first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise ConfigError(f"init.weight: {spec['_target_'] if spec else ''}: {first}") from None
    report: dict[str, Any] = {
        "layers": layers,
        "weight": {k: v for k, v in spec.items() if k != "_partial_"} if spec else None,
        "bias": cfg["bias"],
        "zeroed_head": False,
    }
    zeroed = zero_residual(model) if cfg["zero_init_residual"] else []
    report["zeroed_residual"] = len(zeroed)
    if cfg["lsuv"] is not None:
        if isinstance(batch, (tuple, list)):  # an (images, labels) pair
            batch = batch[0]
        skip = (*zeroed, *([head] if head is not None else []))  # zero outputs on purpose: nothing to scale
        report.update(lsuv(model, batch, cfg["lsuv"]["tol"], cfg["lsuv"]["max_iters"], skip=skip))
    if head is not None:
        with torch.no_grad():
            nn.init.zeros_(head.weight)
        report["zeroed_head"] = True
    return report
