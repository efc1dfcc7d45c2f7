"""Transfer learning: start a model from saved weights, and freeze the part of it that should not train.

Three steps, in this order inside a run (after the model is built and initialised, before the
optimizer is built, so the optimizer never sees a frozen tensor):

    build_cfg, settings = split_model_config(cfg.model)   # pops model.pretrained / freeze / freeze_bn
    model = build_model(build_cfg, ...); apply_init(model, cfg.init)
    report = load_pretrained(model, settings["pretrained"])   # when it is set
    frozen = freeze(model, settings["freeze"], freeze_bn=settings["freeze_bn"])
    (setup_transfer(model, settings) does the last two and returns what to report.)

`load_pretrained` reads a trainlab checkpoint (best.pt / last.pt) or any PyTorch/torchvision weights
file (a state dict saved with torch.save, perhaps with DataParallel's "module." prefix or wrapped in
{"state_dict": ...}) with torch.load(weights_only=True): no code in the file runs. Tensors are
loaded by name and shape. The classifier (`model.head`) is the one place where a difference is
expected (another number of classes): its tensors are then left as the model's own initialisation
(the `init` group's, since loading runs after it) and reported as new. Any other difference means the
file was saved from another architecture, and is an error naming the keys.

Key names are matched after trying a few prefix mappings and keeping the one that matches most keys:
  - "module." (torch.nn.DataParallel / DistributedDataParallel) is stripped from the file's keys;
  - a prefix common to every key of the file (e.g. "model.", "net.") may be stripped;
  - the name of one of the model's top-level children may be prepended: a model that wraps a
    torchvision network as `self.net` (keys "net.conv1.weight", ...) loads a torchvision weights
    file (keys "conv1.weight", ...). The file's own classifier (e.g. torchvision's "fc.weight" /
    "fc.bias", 1000 ImageNet classes) then has no place in the model when the wrapper put its
    classifier at `head` instead: exactly one such left-over linear layer, whose input width is the
    head's, is recognised as the file's classifier and skipped (reported as "skipped").

`freeze` sets requires_grad=False on a leading part of the model ("backbone": everything but the
head; or a child's name: that child and everything before it, in model order) and, with
freeze_bn=True, swaps the BatchNorm layers in that part for frozen ones, so that their running
statistics stay as loaded even though the trainer runs the model in training mode:
  - BatchNorm2d -> FrozenBatchNorm2d: torchvision.ops.misc.FrozenBatchNorm2d, subclassed only to keep
    the num_batches_tracked buffer;
  - BatchNorm1d / BatchNorm3d (e.g. the MLP's norm=batch) -> `FrozenBatchNorm` below: the same for
    any input rank (BatchNorm in eval mode, whatever the module's mode).
Both keep BatchNorm's state-dict names and shapes exactly (weight, bias, running_mean, running_var,
num_batches_tracked; weight and bias become buffers), so best.pt of a frozen run loads strictly into
the unfrozen model build_model makes from its config, and back. Freezing does not change what the
model computes in eval mode. A BatchNorm built with track_running_stats=False has no statistics to
fix and is left as it is (its affine parameters frozen). Without freeze_bn, the frozen part's
BatchNorm layers keep updating their running statistics in training mode.
"""

from __future__ import annotations

import functools
from dataclasses import fields
from pathlib import Path
from typing import Any, Optional

import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm
from torchvision.ops.misc import FrozenBatchNorm2d as TorchvisionFrozenBatchNorm2d

from trainlab.checkpoint import unreadable
from trainlab.config import TransferSchema
from trainlab.errors import ConfigError

# model.* keys that describe how to start and what to train, not how to build the model: they are
# taken out of the model config before build_model instantiates the class with the rest.
# The transfer keys every model option has, with their defaults (declared once, in the schema).
TRANSFER_DEFAULTS: dict[str, Any] = {f.name: f.default for f in fields(TransferSchema)}
WRAPPER_KEYS = ("state_dict", "model", "model_state_dict")  # dicts that hold a state dict under a key
SHOWN = 4  # mismatching keys named in an error message


# ---------------------------------------------------------------- config


def split_model_config(model_cfg) -> tuple[Any, dict[str, Any]]:
    """(the model config without the transfer keys, {pretrained, freeze, freeze_bn}), checked."""
    from omegaconf import OmegaConf

    plain = OmegaConf.to_container(model_cfg, resolve=True) if OmegaConf.is_config(model_cfg) else dict(model_cfg)
    settings = {key: plain.pop(key, default) for key, default in TRANSFER_DEFAULTS.items()}
    pretrained, spec, freeze_bn = settings["pretrained"], settings["freeze"], settings["freeze_bn"]
    if pretrained is not None and (not isinstance(pretrained, str) or not pretrained.strip()):
        raise ConfigError(f"model.pretrained={pretrained!r}: must be a path to a weights file (or null)")
    if spec is None:
        settings["freeze"] = "none"
    elif not isinstance(spec, str) or not spec.strip():
        raise ConfigError(f"model.freeze={spec!r}: must be none, backbone, or the name of a child of the model")
    if not isinstance(freeze_bn, bool):
        raise ConfigError(f"model.freeze_bn={freeze_bn!r}: must be true or false")
    if pretrained is not None:
        check_pretrained_config(pretrained, model_cfg)
    return OmegaConf.create(plain), settings


def check_pretrained_config(value: str, model_cfg) -> None:
    """model.pretrained naming a trainlab checkpoint whose config names a `_target_` trainlab would not build
    from a file (trainlab.safety): refused, naming the key. Nothing here builds from that config (only the
    tensors are loaded), but such a file is not one trainlab wrote. Trusted: the targets of the config
    `model_cfg` belongs to (what the user composed). A file torch cannot read is refused here too, before
    the run folder is made; a missing one is left to resolve_pretrained_path to report."""
    from omegaconf import OmegaConf

    from trainlab import safety

    path = Path(value).expanduser()
    if path.is_dir():
        path = path / "checkpoints" / "best.pt"
    if not path.is_file():
        return
    stat = path.stat()
    config, problem = _saved_config(str(path.resolve()), stat.st_mtime_ns, stat.st_size)
    if problem is not None:
        raise ConfigError(f"model.pretrained={value}: cannot read it as a weights file ({problem})")
    if config is None:
        return
    root = model_cfg._get_root() if OmegaConf.is_config(model_cfg) else model_cfg  # the whole composed config
    safety.check_config(config, f"model.pretrained={value}", safety.trusted_targets(root))


@functools.lru_cache(maxsize=8)
def _saved_config(path: str, mtime_ns: int, size: int) -> tuple[Optional[Any], Optional[str]]:
    """(the `config` a trainlab checkpoint holds or None, why torch cannot read the file or None), read
    once per file version; tensors memory-mapped, not read."""
    payload, problem = None, None
    for mmap in (True, False):
        try:
            payload, problem = torch.load(path, map_location="cpu", weights_only=True, mmap=mmap), None
            break
        except Exception as error:  # not a zip checkpoint (mmap needs one), not a torch file, or pickled objects
            problem = unreadable(error, Path(path))
    if isinstance(payload, dict) and "format" in payload and "config" in payload:
        return payload["config"], None
    return None, problem


# ---------------------------------------------------------------- loading


def _shape(tensor: torch.Tensor) -> str:
    return "[" + ",".join(str(n) for n in tensor.shape) + "]"


def _read_state_dict(path: Path, shown: str) -> tuple[dict[str, torch.Tensor], Optional[str], Optional[list]]:
    """The state dict held by the file, and the model class and class names it was saved with, when a
    trainlab checkpoint says."""
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # not a torch file, truncated, or holding pickled objects
        raise ConfigError(f"model.pretrained={shown}: cannot read it as a weights file "
                          f"({unreadable(error, path)})") from None
    saved_from, saved_classes = None, None
    if isinstance(payload, dict) and "format" in payload and isinstance(payload.get("model"), dict):
        saved_classes = payload.get("classes")
        config = payload.get("config")  # a trainlab checkpoint
        if isinstance(config, dict) and isinstance(config.get("model"), dict):
            saved_from = config["model"].get("_target_")
        payload = payload["model"]
    elif isinstance(payload, dict) and not any(isinstance(v, torch.Tensor) for v in payload.values()):
        inner = next((payload[k] for k in WRAPPER_KEYS if isinstance(payload.get(k), dict)), None)
        if inner is not None:
            payload = inner
    if not isinstance(payload, dict) or not payload:
        raise ConfigError(f"model.pretrained={shown}: holds no state dict (a dict of name -> tensor)")
    tensors = {str(k): v for k, v in payload.items() if isinstance(v, torch.Tensor)}
    if not tensors:
        raise ConfigError(f"model.pretrained={shown}: holds no tensors (keys: {', '.join(list(payload)[:SHOWN])})")
    return tensors, saved_from, saved_classes


def _prefix_candidates(source: dict, model: nn.Module) -> list[tuple[str, str]]:
    """(prefix to strip from the file's keys, prefix to add) pairs to try; the identity first."""
    strips = [""]
    keys = list(source)
    if all(k.startswith("module.") for k in keys):
        strips.append("module.")
    for base in list(strips):
        rest = [k[len(base):] for k in keys]
        first = rest[0].split(".", 1)[0] + "."
        if "." in rest[0] and all(k.startswith(first) for k in rest):
            strips.append(base + first)
    adds = [""] + [name + "." for name, _ in model.named_children()]
    return [(strip, add) for strip in strips for add in adds]


def _map_keys(source: dict, model_keys: set, model: nn.Module) -> tuple[dict, str, str]:
    best, best_score, best_pair = source, -1, ("", "")
    for strip, add in _prefix_candidates(source, model):
        mapped = {add + k[len(strip):]: v for k, v in source.items()}
        score = len(mapped.keys() & model_keys)
        if score > best_score:
            best, best_score, best_pair = mapped, score, (strip, add)
    return best, *best_pair


def _is_under(key: str, module_name: str) -> bool:
    return bool(module_name) and key.startswith(module_name + ".")


def _file_classifier(unexpected: list[str], source: dict, head: Optional[nn.Module]) -> list[str]:
    """The file's own classifier among the keys the model has no place for: exactly one linear layer
    (weight [classes, features], optional bias) whose input width is the head's; else []."""
    if not isinstance(head, nn.Linear) or not unexpected:
        return []
    modules = {k.rsplit(".", 1)[0] for k in unexpected if "." in k}
    if len(modules) != 1:
        return []
    (prefix,) = modules
    leaves = {k[len(prefix) + 1:] for k in unexpected}
    weight = source.get(prefix + ".weight")
    if leaves not in ({"weight"}, {"weight", "bias"}) or weight is None or weight.dim() != 2:
        return []
    if weight.shape[1] != head.in_features:
        return []
    return sorted(unexpected)


def resolve_pretrained_path(value: str) -> Path:
    """model.pretrained names a weights file, or a trainlab run folder (its checkpoints/best.pt is used)."""
    path = Path(value).expanduser()
    if path.is_dir() and (path / "checkpoints" / "best.pt").is_file():
        path = path / "checkpoints" / "best.pt"
    if not path.is_file():
        raise ConfigError(f"model.pretrained={value}: no such file (give a best.pt/last.pt, a run folder, "
                          "or a PyTorch weights file)")
    return path


def load_pretrained(model: nn.Module, path, *, head_name: str = "head",
                    classes: Optional[list[str]] = None) -> dict[str, Any]:
    """Copy the tensors of the weights file `path` into `model` by name and shape; see the module notes.

    Returns {"loaded": [names], "new": [names left as initialised: the head when its shape differs],
    "skipped": [the file's names not used: its own classifier, if any], "source": str(path),
    "prefix": {"strip": ..., "add": ...} (the key mapping used; empty strings when none)}.
    Raises ConfigError naming the keys when the file does not fit the model. Given `classes` (this run's
    class names), a trainlab checkpoint saved for other classes keeps the model's own head even when its
    shape fits: a classifier for different classes is no head start.
    """
    shown = str(path)
    path = resolve_pretrained_path(shown)
    source, saved_from, saved_classes = _read_state_dict(path, shown)
    other_classes = classes is not None and saved_classes is not None and list(saved_classes) != list(classes)
    target = model.state_dict()
    mapped, strip, add = _map_keys(source, set(target), model)
    head = getattr(model, head_name, None) if head_name else None
    head = head if isinstance(head, nn.Module) else None

    loaded, new, mismatched, missing = [], [], [], []
    for key, tensor in target.items():
        other = mapped.get(key)
        in_head = head is not None and _is_under(key, head_name)
        if other is not None and other.shape == tensor.shape and not (in_head and other_classes):
            loaded.append(key)
        elif in_head:
            new.append(key)  # another number of classes (or no classifier in the file): keep the model's own
        elif other is None and key.endswith(".num_batches_tracked"):
            continue  # a frozen BatchNorm's file has no counter; the model keeps its own
        elif other is None:
            missing.append(f"{key} {_shape(tensor)} is not in the file")
        else:
            mismatched.append(f"{key} {_shape(other)} in the file vs {_shape(tensor)} in the model")
    unexpected = [k for k in mapped if k not in target and not k.endswith(".num_batches_tracked")]
    skipped = _file_classifier(unexpected, mapped, head) if new else []
    extra = [f"{k} {_shape(mapped[k])} is not in the model" for k in unexpected if k not in skipped]
    problems = mismatched + missing + extra
    if problems:
        # name a few of each kind, so the message shows both sides of the difference
        picked = mismatched[:SHOWN]
        room = SHOWN - len(picked)
        picked += missing[:(room + 1) // 2 if extra else room]
        picked += extra[:SHOWN - len(picked)]
        origin = f" (saved from {saved_from})" if saved_from else ""
        more = f", and {len(problems) - len(picked)} more" if len(problems) > len(picked) else ""
        count = f"{len(problems)} key{'s' if len(problems) > 1 else ''} do{'' if len(problems) > 1 else 'es'} not fit"
        raise ConfigError(
            f"model.pretrained={shown}: {count}: {', '.join(picked)}{more}; "
            f"the file{origin} does not fit this model ({len(loaded)} of {len(target)} tensors match by name "
            "and shape): use the same model config it was trained with"
        )
    if not loaded:
        raise ConfigError(f"model.pretrained={shown}: no tensor of the file matches this model by name and shape")
    with torch.no_grad():
        result = model.load_state_dict({k: mapped[k] for k in loaded}, strict=False)
    assert not result.unexpected_keys, result.unexpected_keys
    return {"loaded": loaded, "new": new, "skipped": [strip + k[len(add):] for k in skipped], "source": str(path),
            "prefix": {"strip": strip, "add": add}}


# ---------------------------------------------------------------- freezing


class _KeepsBatchCount(nn.Module):
    """Keeps BatchNorm's num_batches_tracked buffer (unused, never updated), so that a frozen model's state
    dict has exactly the names of the unfrozen one: best.pt of a frozen run loads strictly into the model
    build_model makes from its config, and back. A file without the counter keeps the module's own."""

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        state_dict.setdefault(prefix + "num_batches_tracked", self.num_batches_tracked)
        nn.Module._load_from_state_dict(self, state_dict, prefix, *args, **kwargs)  # (torchvision's drops it)


class FrozenBatchNorm2d(_KeepsBatchCount, TorchvisionFrozenBatchNorm2d):
    """torchvision.ops.misc.FrozenBatchNorm2d (statistics and affine parameters fixed, in training mode
    too), plus BatchNorm's num_batches_tracked buffer so the state-dict names stay those of BatchNorm2d."""

    def __init__(self, num_features: int, eps: float = 1e-5):
        super().__init__(num_features, eps=eps)
        self.register_buffer("num_batches_tracked", torch.tensor(0, dtype=torch.long))


class FrozenBatchNorm(_KeepsBatchCount):
    """BatchNorm of any input rank ([N, C], [N, C, L], [N, C, D, H, W]) with fixed statistics and affine
    parameters, as FrozenBatchNorm2d is for [N, C, H, W]: it always normalises with the stored running
    statistics, in training mode too. State-dict names match nn.BatchNorm*d's."""

    def __init__(self, num_features: int, eps: float = 1e-5):
        super().__init__()
        self.eps = eps
        self.register_buffer("weight", torch.ones(num_features))
        self.register_buffer("bias", torch.zeros(num_features))
        self.register_buffer("running_mean", torch.zeros(num_features))
        self.register_buffer("running_var", torch.ones(num_features))
        self.register_buffer("num_batches_tracked", torch.tensor(0, dtype=torch.long))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return nn.functional.batch_norm(x, self.running_mean, self.running_var, self.weight, self.bias,
                                        training=False, momentum=0.0, eps=self.eps)

    def extra_repr(self) -> str:
        return f"{self.weight.shape[0]}, eps={self.eps}"


@torch.no_grad()
def frozen_batch_norm(bn: _BatchNorm) -> nn.Module:
    """A frozen copy of `bn` (FrozenBatchNorm2d for BatchNorm2d, else FrozenBatchNorm), same values and device."""
    kind = FrozenBatchNorm2d if isinstance(bn, nn.BatchNorm2d) else FrozenBatchNorm
    frozen = kind(bn.num_features, eps=bn.eps).to(device=bn.running_mean.device, dtype=bn.running_mean.dtype)
    if bn.affine:
        frozen.weight.copy_(bn.weight)
        frozen.bias.copy_(bn.bias)
    frozen.running_mean.copy_(bn.running_mean)
    frozen.running_var.copy_(bn.running_var)
    if bn.num_batches_tracked is not None:
        frozen.num_batches_tracked.copy_(bn.num_batches_tracked)
    return frozen


def _children_text(module: nn.Module) -> str:
    return ", ".join(name for name, _ in module.named_children()) or "(none)"


def _child_index(names: list[str], part: str) -> Optional[int]:
    if part in names:
        return names.index(part)
    if part.lstrip("-").isdigit() and all(n.isdigit() for n in names):  # nn.Sequential: features.-5
        index = int(part)
        if -len(names) <= index < 0:
            return len(names) + index
    return None


def frozen_part(model: nn.Module, spec: str, head_name: str = "head") -> list[str]:
    """The qualified names of the modules `spec` freezes (whole subtrees), in model order; "" = the model's
    own parameters (not in any child), frozen with "backbone" only."""
    if spec == "backbone":
        if head_name not in dict(model.named_children()):
            raise ConfigError(f"model.freeze=backbone: this model has no `{head_name}` child to keep training "
                              f"(its children: {_children_text(model)}); name the last child to freeze instead")
        return [""] + [name for name, _ in model.named_children() if name != head_name]
    roots: list[str] = []
    module, path = model, ""
    for part in spec.split("."):
        names = [name for name, _ in module.named_children()]
        index = _child_index(names, part)
        if index is None:
            where = f"{path} has no child {part!r}; its children" if path else f"no child named {part!r}; the " \
                    "model's children, in order"
            raise ConfigError(f"model.freeze={spec}: {where}: {_children_text(module)} "
                              "(or none | backbone)")
        prefix = path + "." if path else ""
        roots += [prefix + name for name in names[:index]]
        path = prefix + names[index]
        module = getattr(module, names[index])
    return roots + [path]


def freeze(model: nn.Module, spec: Optional[str], *, freeze_bn: bool = True, head_name: str = "head") -> list[str]:
    """Freeze part of `model` (in place) and return the names of the parameters frozen, in model order.

    spec: "none" (nothing), "backbone" (everything but `model.<head_name>`), or the name of a top-level
    child (that child and every child before it, in model order). A dotted name reaches inside a child
    in the same way: "features.6" freezes every child before `features` and features[0..6]; in an
    nn.Sequential a negative index counts from the end ("features.-5": all but its last four modules).
    Frozen parameters get requires_grad=False. With freeze_bn, BatchNorm layers in the frozen part are
    swapped for frozen ones (module notes), so their statistics stay put in training mode; without it
    they keep updating their running statistics during training (only their weight and bias are fixed).
    """
    spec = "none" if spec is None else str(spec).strip()
    if spec == "none":
        return []
    roots = frozen_part(model, spec, head_name)
    own = "" in roots  # the model's own parameters (outside every child): frozen with the backbone
    roots = [root for root in roots if root]

    def inside(name: str) -> bool:  # a module or parameter in a frozen subtree
        return any(name == root or name.startswith(root + ".") for root in roots)

    frozen = [name for name, p in model.named_parameters()
              if p.requires_grad and (inside(name) or (own and "." not in name))]
    if len(frozen) == sum(1 for p in model.parameters() if p.requires_grad) and frozen:
        raise ConfigError(f"model.freeze={spec}: freezes every parameter, so nothing would train; "
                          f"freeze less (e.g. model.freeze=backbone keeps the `{head_name}` training)")
    chosen = set(frozen)
    for name, param in model.named_parameters():
        if name in chosen:
            param.requires_grad_(False)
    if freeze_bn:
        swaps = [(name, module) for name, module in model.named_modules()
                 if isinstance(module, _BatchNorm) and module.track_running_stats and inside(name)]
        for name, bn in swaps:
            parent_name, _, leaf = name.rpartition(".")
            setattr(model.get_submodule(parent_name) if parent_name else model, leaf, frozen_batch_norm(bn))
    return frozen


def trainable_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


# ---------------------------------------------------------------- both, for run.py


def setup_transfer(model: nn.Module, settings: dict[str, Any], *, load_weights: bool = True,
                   head_name: str = "head", classes: Optional[list[str]] = None) -> dict[str, Any]:
    """load_pretrained (when settings["pretrained"] is set) then freeze, as split_model_config's settings say.

    load_weights=False skips reading the file but freezes all the same: for a resumed run, whose
    last.pt holds the weights (and was saved from the frozen model, so it needs the same structure).
    Returns what a run reports and keeps in summary.json["transfer"]: {"pretrained", "loaded" (count),
    "new" (names), "skipped" (names), "freeze", "frozen" (count of parameter tensors),
    "trainable_params"}.
    """
    summary: dict[str, Any] = {"pretrained": settings.get("pretrained"), "loaded": 0, "new": [], "skipped": [],
                               "freeze": settings.get("freeze") or "none"}
    if settings.get("pretrained") and load_weights:
        report = load_pretrained(model, settings["pretrained"], head_name=head_name, classes=classes)
        summary.update(pretrained=report["source"], loaded=len(report["loaded"]), new=report["new"],
                       skipped=report["skipped"])
    frozen = freeze(model, summary["freeze"], freeze_bn=settings.get("freeze_bn", True), head_name=head_name)
    summary.update(frozen=len(frozen), trainable_params=trainable_parameters(model))
    return summary
