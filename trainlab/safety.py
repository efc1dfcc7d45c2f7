"""A config read back from a file is data, not code: what trainlab builds from it is restricted.

trainlab builds components with `hydra.utils.instantiate`, which calls whatever `_target_` names. A
checkpoint carries its run's config, and a checkpoint may come from someone else: `_target_:
subprocess.run` in it would run a program the moment the config is built (even importing the module a
target names runs code). So before anything is built, imported or resolved from a config that came out
of a file (a checkpoint for `trainlab eval`, an ensemble member, `trainer.resume`, `model.pretrained`),
`check_config` walks the whole of it (dicts and lists) and refuses, with one line naming the key and the
target:

  - a `_target_` outside the `trainlab.`, `torch.` and `torchvision.` packages;
  - inside them, names that read or write files, download, compile or run code rather than compute
    (DENIED: torch.hub, torch.load, torchvision.io, trainlab.commands, ...) and private names (`_x`);
  - an interpolation (`${...}`): trainlab saves configs resolved, and a resolver such as oc.create can
    make new `_target_`s that were not in the file's text.

The user's own classes stay usable: a `_target_` the user's composed config names (from the command line
or their ./configs), or lists under `trust=[...]` (eval, ensemble), is trusted wherever it appears.
Only the standard library and trainlab.errors are imported here.
"""

from __future__ import annotations

from typing import Any, Iterable, Iterator, Optional

from trainlab.errors import ConfigError

ALLOWED = ("trainlab", "torch", "torchvision")
# Names under the allowed packages that touch files, the network or the interpreter rather than compute:
# refused from a file's config all the same (a name here covers everything below it).
DENIED = (
    "torch.hub", "torch.load", "torch.save", "torch.serialization", "torch.from_file", "torch.UntypedStorage",
    "torch.TypedStorage", "torch.storage", "torch.jit", "torch.export", "torch.onnx", "torch.package",
    "torch.utils.cpp_extension", "torch.utils.model_zoo", "torch.utils.tensorboard", "torch.utils.collect_env",
    "torch.utils.data.datapipes", "torch.profiler", "torch.autograd.profiler", "torch.multiprocessing",
    "torch.distributed", "torch.ops", "torch.library", "torch.compile",
    "torchvision.io", "torchvision.datasets", "torchvision.utils.save_image",
    "trainlab.cli", "trainlab.commands", "trainlab.checkpoint", "trainlab.safety", "trainlab.resume",
)
SHOWN = 120  # characters of a refused value shown in the message


def walk(tree: Any, prefix: str = "") -> Iterator[tuple[str, Any]]:
    """(dotted key, value) of every leaf and every `_target_` in a nested plain config (dicts and lists;
    list items are numbered: `model.blocks.0._target_`)."""
    if isinstance(tree, dict):
        for key, value in tree.items():
            yield from walk(value, f"{prefix}.{key}" if prefix else str(key))
    elif isinstance(tree, (list, tuple)):
        for index, value in enumerate(tree):
            yield from walk(value, f"{prefix}.{index}" if prefix else str(index))
    else:
        yield prefix, tree


def targets(tree: Any) -> Iterator[tuple[str, Any]]:
    """(dotted key of the `_target_`, its value) for every `_target_` anywhere in `tree`."""
    for key, value in walk(tree):
        if key == "_target_" or key.endswith("._target_"):
            yield key, value


def plain(config: Any) -> Any:
    """An OmegaConf node as plain containers, unresolved (resolving could run resolvers); anything else as is."""
    try:
        from omegaconf import OmegaConf
    except ImportError:  # pragma: no cover - omegaconf comes with hydra
        return config
    if OmegaConf.is_config(config):
        return OmegaConf.to_container(config, resolve=False)
    return config


def trusted_targets(cfg: Any) -> frozenset[str]:
    """The `_target_`s the user named: every one in their composed config (`cfg`), plus `trust=[...]`."""
    tree = plain(cfg)
    named = {value for _, value in targets(tree) if isinstance(value, str)}
    extra = tree.get("trust") if isinstance(tree, dict) else None
    if isinstance(extra, (list, tuple)):
        named |= {value for value in extra if isinstance(value, str)}
    elif isinstance(extra, str) and extra:
        named.add(extra)
    return frozenset(named)


def _under(name: str, prefix: str) -> bool:
    return name == prefix or name.startswith(prefix + ".")


def problem(target: Any) -> Optional[str]:
    """Why `target` may not be built from a file's config, or None when it may."""
    if not isinstance(target, str) or not target.strip():
        return "not a class name"
    parts = target.split(".")
    if parts[0] not in ALLOWED or len(parts) < 2 or any(not part for part in parts):
        return "not a trainlab, torch or torchvision class"
    if any(part.startswith("_") for part in parts[1:]):
        return "a private name inside " + parts[0]
    if any(_under(target, denied) for denied in DENIED):
        return "reads or writes files, downloads, or runs code (not a model, data or training component)"
    return None


def shown(value: Any) -> str:
    text = value if isinstance(value, str) else repr(value)
    return text if len(text) <= SHOWN else text[:SHOWN - 1] + "…"


def check_config(config: Any, source: str, trusted: Iterable[str] = ()) -> None:
    """Refuse (ConfigError, one line starting with `source`, e.g. "checkpoint=run/best.pt") a config read
    from a file that names a `_target_` trainlab will not build from a file, or holds an interpolation.
    `trusted`: targets the user named themselves (trusted_targets of their composed config)."""
    trusted = frozenset(trusted)
    tree = plain(config)
    for key, value in walk(tree):
        if isinstance(value, str) and "${" in value:
            raise ConfigError(f"{source}: {key}={shown(value)}: an interpolation in a saved config (trainlab saves "
                              "configs resolved); refusing to resolve it from a file that may come from someone "
                              "else")
    for key, target in targets(tree):
        if isinstance(target, str) and target in trusted:
            continue
        why = problem(target)
        if why is not None:
            raise ConfigError(f"{source}: {key}={shown(target)}: {why}; refusing to build from a file's config "
                              "(a checkpoint may come from someone else). If you trust it, name that _target_ "
                              "yourself (on the command line, in your ./configs, or trust=[...] for eval and "
                              "ensemble)")
