"""`trainlab eval`: score a checkpoint on its run's validation or test split, rebuilt from the checkpoint.

    trainlab eval checkpoint=<best.pt | last.pt | snapshot_<k>.pt | a run folder> [split=test|val]
                  [dataset=<option> | dataset.<key>=...] [tta=<option> | tta.<key>=...] [trainer.device=...]

What is scored is rebuilt from the checkpoint alone, through trainlab.build's pieces: the model from the
`model` section of the config the checkpoint carries (with the dataset's image shape and classes), its
weights, and the preprocessing statistics it saved (from_state: never refitted). The data come from that
config's dataset section and seed, so split=val is the very validation split the run chose best.pt on,
and the figures equal what training logged for those weights: loss and top-1 come from
trainlab.evaluate.evaluate, the function the Trainer validates and tests with, on the same batches.

How the command line combines with the checkpoint: the checkpoint's config is the base, and on top go
  - a group chosen on the command line (dataset=mnist, tta=flip): its section replaces the checkpoint's;
  - a key given on the command line (dataset.root=/data, tta.crops=5): that key replaces the checkpoint's;
  - eval's own keys (checkpoint, split, trust) and trainer.device / eval_batch_size / amp / amp_dtype /
    channels_last.
Anything else (model, optimizer, seed, trainer.epochs, ...) is refused with one line: it comes from the
checkpoint. Which keys the command line gave: the runner's override list (Context.overrides); only in-process use
without one derives them: the keys whose composed value differs from what the same options compose to
without key overrides, and the groups whose section differs from eval's defaults (there, naming an option
that is also eval's default, e.g. tta=none, goes unnoticed).

Before anything of the checkpoint's config is imported, resolved or built, trainlab.safety checks it (a
checkpoint may come from someone else). check() then replaces the composed config, in place, with the
effective one (the checkpoint's config with the command line on top; no callbacks): the runner's dry build
checks exactly what run() will build, before the run folder is made.

Writes into outputs/eval/<date>/<time>/: eval.json (figures, per-class accuracy, confusion matrix, time,
device, the figures training logged for the same weights, the effective config) and confusion_<split>.png.
Ensembles (trainlab/commands/ensemble.py) reuse the pieces here: one rebuilt member per checkpoint.
"""

from __future__ import annotations

import copy
import json
import math
import time
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Optional

CONFIG = "eval"
SPLITS = ("test", "val", "target")  # target: the target domain's test split (a run with domain=...)
TRAINER_KEYS = ("device", "eval_batch_size", "amp", "amp_dtype", "channels_last", "threads")  # how, not what, is scored
OWN_KEYS = ("checkpoint", "split", "trust", "compare")
GROUPS = ("dataset", "tta")  # sections the command line may choose or change
DELETED = "<deleted>"  # a key the command line removed (~key)
TABLE_CLASSES = 20  # confusion matrices up to this many classes are printed as a table too


# ---------------------------------------------------------------- the checkpoint


def checkpoint_file(value: Any, key: str) -> Path:
    """`key`=value names a checkpoint file or a trainlab run folder (its checkpoints/best.pt)."""
    from trainlab.checks import bad
    from trainlab.errors import ConfigError

    if not isinstance(value, str) or not value.strip():
        raise bad(key, value, "must name a best.pt/last.pt/snapshot_<k>.pt or a trainlab run folder",
                  f"e.g. {key}=outputs/train/<date>/<time>")
    path = Path(value).expanduser()
    if path.is_dir():
        if not (path / "checkpoints" / "best.pt").is_file():
            raise ConfigError(f"{key}={value}: that folder has no checkpoints/best.pt; give a trainlab run folder "
                              "(outputs/train/<date>/<time>) or a checkpoint file")
        path = path / "checkpoints" / "best.pt"
    if not path.is_file():
        raise ConfigError(f"{key}={value}: no such file or folder; give a best.pt/last.pt or a trainlab run folder")
    return path


def load(path: Path, source: str, mmap: bool = False) -> dict:
    """A trainlab checkpoint, read with weights_only=True (no code in the file runs); `mmap`: tensors mapped,
    not read (enough to look at its config). Anything else is one line starting with `source`."""
    from trainlab.checkpoint import FORMAT, read_checkpoint
    from trainlab.errors import ConfigError

    payload = read_checkpoint(path, source, "best.pt/last.pt", mmap=mmap)
    if not isinstance(payload, dict) or payload.get("format") != FORMAT or not isinstance(payload.get("model"), dict):
        raise ConfigError(f"{source}: {path} is not a trainlab checkpoint (a weights file has no config to rebuild "
                          "the model from); give the best.pt/last.pt of a trainlab run")
    if not isinstance(payload.get("config"), dict) or not isinstance(payload["config"].get("model"), dict):
        raise ConfigError(f"{source}: {path} holds no run config to rebuild the model from")
    return payload


# ---------------------------------------------------------------- the command line on top of it


@dataclass
class Given:
    """What the command line gave: whole sections (a group option chosen) and single keys."""

    groups: dict[str, Any] = field(default_factory=dict)   # group -> its composed section (plain)
    keys: dict[str, Any] = field(default_factory=dict)     # dotted key -> value (DELETED: removed)
    choices: dict[str, Any] = field(default_factory=dict)  # group -> option name, for messages


def command_line(cfg, context) -> Given:
    """The sections and keys the command line gave (see the module note)."""
    from omegaconf import OmegaConf

    choices = dict(getattr(context, "choices", None) or {})
    ours = OmegaConf.to_container(cfg, resolve=True)
    overrides = getattr(context, "overrides", None)
    given = Given(choices=choices)
    if overrides is not None:  # the runner says what was typed
        for item in overrides:
            name, sep, _ = str(item).partition("=")
            key = name.lstrip("~+")
            if key == "hydra" or key.startswith(("hydra.", "hydra/")) or (not sep and not name.startswith("~")):
                continue
            if "." not in key and key in choices:
                given.groups[key] = copy.deepcopy(ours.get(key))
            else:
                given.keys[key] = DELETED if name.startswith("~") else OmegaConf.select(cfg, key, default=DELETED)
        return given
    if context is None or getattr(context, "compose", None) is None:
        return given
    from trainlab.config import validate
    from trainlab.resume import flatten

    defaults = context.defaults()  # the same options, no key overrides
    if defaults is None:
        return given
    bare = OmegaConf.to_container(validate(context.compose([])), resolve=True)  # eval's own defaults
    for name, section in ours.items():
        if isinstance(section, dict) and name in choices and bare.get(name) != defaults.get(name):
            given.groups[name] = copy.deepcopy(section)
    flat_ours, flat_defaults = flatten(ours), flatten(defaults)
    for key in sorted(flat_ours.keys() | flat_defaults.keys()):
        if key.split(".", 1)[0] in given.groups:
            continue
        mine = flat_ours.get(key, DELETED)
        if mine != flat_defaults.get(key, DELETED):
            given.keys[key] = mine
    return given


def refuse_others(given: Given, command: str, groups: tuple[str, ...], own: tuple[str, ...]) -> None:
    """One line for the first section or key the command line gave that `command` takes from the checkpoint."""
    from trainlab.checks import bad
    from trainlab.errors import ConfigError

    allowed = (", ".join([*(f"{g}=" for g in groups), *(f"{g}.<key>" for g in groups), *own])
               + f" and trainer.{{{','.join(TRAINER_KEYS)}}}")
    for group in given.groups:
        if group not in groups:
            raise ConfigError(f"{group}={given.choices.get(group, '...')}: {command} rebuilds this from the "
                              f"checkpoint's own config; leave it out (the command line may give {allowed})")
    for key, value in given.keys.items():
        top, _, rest = key.partition(".")
        if (not rest and key in own) or top in groups or (top == "trainer" and rest in TRAINER_KEYS):
            continue
        raise bad(key, None if value == DELETED else value,
                  f"{command} takes this from the checkpoint's own config", f"leave it out (the command line may "
                  f"give {allowed})")


def assign(tree: dict, key: str, value: Any) -> None:
    parts = key.split(".")
    for part in parts[:-1]:
        node = tree.get(part)
        if not isinstance(node, dict):
            node = tree[part] = {}
        tree = node
    if value == DELETED:
        tree.pop(parts[-1], None)
    else:
        tree[parts[-1]] = copy.deepcopy(value)


def effective_config(saved: dict, cfg, given: Given, own: tuple[str, ...], copy_own: bool = True):
    """The checkpoint's config with the command line on top (module note), validated. No callbacks (nothing
    trains), no trainer.resume, no model.pretrained (the weights are the checkpoint's); unknown trainer keys
    of an older trainlab are dropped (only how scoring runs is read from that section)."""
    from omegaconf import OmegaConf

    from trainlab.config import TrainerSchema, validate

    ours = OmegaConf.to_container(cfg, resolve=True)
    config = copy.deepcopy(saved)
    known = {f.name for f in fields(TrainerSchema)}
    config["trainer"] = {k: v for k, v in (config.get("trainer") or {}).items() if k in known}
    config["trainer"].update(resume=None, monitor="val/acc", mode="max")  # eval monitors nothing
    config["callbacks"] = {}
    config["model"] = dict(config["model"], pretrained=None)
    config.setdefault("tta", ours.get("tta"))
    for group, section in given.groups.items():
        config[group] = copy.deepcopy(section)
    for key, value in given.keys.items():
        if key.split(".", 1)[0] not in own:
            assign(config, key, value)
    for key in own if copy_own else ():
        config[key] = copy.deepcopy(ours.get(key))
    return validate(OmegaConf.create(config))


def same_images(effective, saved: dict, classes: Optional[list], source: str) -> None:
    """The data the command line asks for must have the checkpoint's image shape and number of classes."""
    from omegaconf import OmegaConf

    from trainlab.data.datasets import describe
    from trainlab.errors import ConfigError

    ours = describe(effective.dataset)
    theirs = describe(OmegaConf.create(saved["dataset"]))
    if tuple(ours.input_shape) != tuple(theirs.input_shape):
        raise ConfigError(f"dataset.name={effective.dataset.name}: its images are {list(ours.input_shape)} but "
                          f"{source} was trained on {list(theirs.input_shape)} ({saved['dataset'].get('name')}); "
                          "evaluate on data of the checkpoint's shape")
    if classes is not None and effective.dataset.name != "imagefolder" and ours.num_classes != len(classes):
        raise ConfigError(f"dataset.name={effective.dataset.name}: {ours.num_classes} classes but {source} was "
                          f"trained for {len(classes)}; evaluate on a dataset with the checkpoint's classes")


def checked_member(cfg, path: Path, source: str, given: Given, own: tuple[str, ...], copy_own: bool = True):
    """(effective config, payload) of one checkpoint: read (tensors mapped), its config checked by
    trainlab.safety (trusting the user's own targets), the command line put on top, shapes compared."""
    from trainlab import safety

    payload = load(path, source, mmap=True)
    safety.check_config(payload["config"], source, safety.trusted_targets(cfg))
    effective = effective_config(payload["config"], cfg, given, own, copy_own)
    same_images(effective, payload["config"], payload.get("classes"), source)
    return effective, payload


def check(cfg, context) -> None:
    from omegaconf import open_dict

    from trainlab.checks import bad

    split = cfg.get("split", "test")
    if split not in SPLITS:
        raise bad("split", split, "must be test, val or target (a domain-adaptation run's target test split)")
    trust = cfg.get("trust")
    if trust is not None and not (isinstance(trust, str) or all(isinstance(t, str) for t in trust)):
        raise bad("trust", trust, "must be a list of _target_ names, e.g. trust=[my_package.MyNet]")
    value = cfg.get("checkpoint")
    path = checkpoint_file(value, "checkpoint")
    given = command_line(cfg, context)
    refuse_others(given, "eval", GROUPS, OWN_KEYS)
    effective, _ = checked_member(cfg, path, f"checkpoint={value}", given, OWN_KEYS)
    if split == "target" and effective.get("domain") is None:
        raise bad("split", split, f"checkpoint={value} was trained without a target domain",
                  "use split=test or val (split=target scores runs trained with domain=...)")
    if cfg.get("compare") is not None:
        if split != "target":
            raise bad("compare", cfg.compare, "draws its features beside the checkpoint's on split=target only",
                      "add split=target")
        checked_member(cfg, checkpoint_file(cfg.compare, "compare"), f"compare={cfg.compare}", given, OWN_KEYS)
    with open_dict(cfg):  # the runner's dry build and run() see what eval will build (module note)
        for key in list(cfg.keys()):
            del cfg[key]
        for key, node in effective.items():
            cfg[key] = node


# ---------------------------------------------------------------- rebuilding and scoring


@dataclass
class Rebuilt:
    """One checkpoint, rebuilt: its model (eval mode) on `device`, the data, and its own preprocessing."""

    model: Any
    data: Any          # the DataBundle (loaders of the effective config's dataset and seed)
    device: Any
    amp_dtype: Any
    preprocess: Any    # the checkpoint's own statistics
    notices: list = field(default_factory=list)

    def loader(self, split: str):
        """The split's loader, normalized with this checkpoint's preprocessing."""
        if split == "target":
            loader = copy.copy(self.data.target.test)
        else:
            loader = copy.copy(self.data.val if split == "val" else self.data.test)
        loader.normalize = self.preprocess
        return loader


def rebuild(config, payload: dict, source: str, shared: Optional[Rebuilt] = None) -> Rebuilt:
    """Model, weights and preprocessing of `payload` as the effective `config` says, built with trainlab.build's
    pieces; `shared`: reuse its data and device (ensemble members scored on the same test split)."""
    from trainlab.build import loaders, to_device
    from trainlab.data.preprocess import from_state
    from trainlab.errors import ConfigError
    from trainlab.models import build_model
    from trainlab.runtime import resolve_amp, resolve_channels_last, resolve_device, seed_everything

    trainer = config.trainer
    notices: list[str] = []
    if shared is None:
        device = resolve_device(trainer.device)
        seed_everything(config.seed, trainer.deterministic)
        channels_last = resolve_channels_last(trainer.channels_last, device)
        amp_dtype, notices = resolve_amp(trainer.amp, trainer.amp_dtype, device)
        data = loaders(config, device, channels_last)
    else:
        device, amp_dtype, data = shared.device, shared.amp_dtype, shared.data
        channels_last = getattr(data.test, "channels_last", False)
    saved_classes = payload.get("classes")
    if saved_classes is not None and list(saved_classes) != list(data.classes):
        raise ConfigError(f"{source}: trained for classes {shorten(saved_classes)} but dataset.name="
                          f"{config.dataset.name} has {shorten(data.classes)}; score it on its own classes")
    if isinstance(payload.get("preprocess"), dict):
        preprocess = from_state(payload["preprocess"], device)
    else:
        preprocess = data.preprocess
        notices.append(f"{source}: holds no preprocessing statistics; using {preprocess.name} fitted on the "
                       "training split")
    model = to_device(build_model(config.model, data.input_shape, data.num_classes), device, channels_last)
    try:
        model.load_state_dict(payload["model"])
    except RuntimeError as error:
        first = next((line.strip() for line in str(error).splitlines()[1:] if line.strip()), str(error))
        raise ConfigError(f"{source}: its weights do not fit the model its config builds ({first[:200]})") from None
    model.eval()
    return Rebuilt(model, data, device, amp_dtype, preprocess, notices)


def shorten(classes) -> str:
    names = list(classes)
    return "[" + ", ".join(map(str, names[:4])) + (f", ... ({len(names)})" if len(names) > 4 else "") + "]"


def top_k(scores, labels, k: int) -> Optional[float]:
    """Top-k accuracy, or None when there are no more than k classes (it would be 1)."""
    if scores.shape[1] <= k:
        return None
    return (scores.topk(k, dim=1).indices == labels[:, None]).any(dim=1).double().mean().item()


def confusion(scores, labels, num_classes: int):
    """[true, predicted] counts."""
    import torch

    predicted = scores.argmax(dim=1)
    return torch.bincount(labels * num_classes + predicted, minlength=num_classes ** 2).view(num_classes, num_classes)


def per_class(counts, classes: list) -> dict:
    return {str(name): {"samples": int(counts[i].sum()), "correct": int(counts[i, i]),
                        "acc": (int(counts[i, i]) / int(counts[i].sum())) if int(counts[i].sum()) else None}
            for i, name in enumerate(classes)}


def dataset_unchanged(effective: dict, saved: dict) -> bool:
    """Whether the effective dataset section and seed are the checkpoint's (free keys aside): then its splits
    are the run's, and the run's logged figures are comparable."""
    from trainlab.config import DatasetSchema, schema_free_keys

    free = {key.split(".", 1)[1] for key in schema_free_keys() if key.startswith("dataset.")}
    defaults = {f.name: f.default for f in fields(DatasetSchema)}
    ours, theirs = effective["dataset"], saved.get("dataset") or {}
    for key in (ours.keys() | theirs.keys()) - free:
        if ours.get(key, defaults.get(key)) != theirs.get(key, defaults.get(key)):
            return False
    return effective.get("seed") == saved.get("seed")


def logged_figures(path: Path, payload: dict, split: str, effective: dict) -> dict:
    """What training logged for these weights on this split ({"plain": {loss, acc}, "tta": ...}, None where
    unknown): best.pt/last.pt/snapshot metrics of their epoch for val; the run's summary.json for test (when
    `path` is the best.pt it tested)."""
    saved = payload["config"]
    found: dict[str, Any] = {"plain": None, "tta": None}
    if not dataset_unchanged(effective, saved):
        return found
    if split == "val":
        metrics = payload.get("metrics") or {}
        prefix = "val_ema/" if payload.get("weights") == "ema" else "val/"
        if f"{prefix}acc" in metrics:
            found["plain"] = {"loss": metrics.get(f"{prefix}loss"), "acc": metrics[f"{prefix}acc"]}
        return found
    summary_path = path.parent.parent / "summary.json"
    if path.name != "best.pt" or not summary_path.is_file():
        return found
    try:
        summary = json.loads(summary_path.read_text())
    except (OSError, ValueError):
        return found
    if summary.get("tested_weights") == "best":
        name = "target_test" if split == "target" else "test"
        found["plain"] = summary.get(name)
        if effective.get("tta") == saved.get("tta"):
            found["tta"] = summary.get(f"{name}_tta")
    return found


def score(rebuilt: Rebuilt, split: str, views=None) -> dict:
    """Loss and top-1 by trainlab.evaluate.evaluate (the Trainer's figures), plus the predictions."""
    from trainlab.evaluate import evaluate

    loader = rebuilt.loader(split)
    if views is not None:
        loader = loader.with_views(views)
    started = time.perf_counter()
    figures = evaluate(rebuilt.model, loader, rebuilt.device, rebuilt.amp_dtype, keep_outputs=True)
    return {"loss": figures["loss"], "acc": figures["acc"], "scores": figures["logits"], "labels": figures["labels"],
            "seconds": time.perf_counter() - started, "samples": loader.num_samples}


def finite(value: Any) -> Any:
    return None if isinstance(value, float) and not math.isfinite(value) else value


def percent(value: Optional[float]) -> str:
    return "-" if value is None else f"{100 * value:.2f}%"


def print_report(report: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console(width=100)
    table = Table(title=f"trainlab eval: {report['split']} split")
    table.add_column("")
    table.add_column("value", justify="right")
    rows = [("checkpoint", f"{report['checkpoint']} (epoch {report['epoch']})"),
            ("data", f"{report['dataset']}, {report['samples']:,} images, {len(report['classes'])} classes"),
            ("loss", f"{report['loss']:.4f}"), ("top-1", percent(report["acc"]))]
    if report["top5"] is not None:
        rows.append(("top-5", percent(report["top5"])))
    if report["tta"] is not None:
        rows += [(f"top-1 with tta ({report['tta']['views']} views)", percent(report["tta"]["acc"])),
                 ("loss with tta", f"{report['tta']['loss']:.4f}")]
    logged = report["logged"]["plain"]
    if logged is not None:
        same = "same" if logged.get("acc") == report["acc"] else "differs"
        rows.append((f"training logged ({report['logged']['where']})", f"{percent(logged.get('acc'))} ({same})"))
    rows += [("eval time", f"{report['time']['eval_s']:.2f} s ({report['time']['samples_per_s']:,.0f} images/s)"),
             ("device", report["device"])]
    for name, shown in rows:
        table.add_row(name, shown)
    console.print(table)
    classes = report["classes"]
    by_class = Table(title="per class")
    for column, justify in (("class", "left"), ("images", "right"), ("correct", "right"), ("accuracy", "right")):
        by_class.add_column(column, justify=justify)
    for name, row in report["per_class"].items():
        by_class.add_row(name, f"{row['samples']:,}", f"{row['correct']:,}", percent(row["acc"]))
    console.print(by_class)
    if len(classes) <= TABLE_CLASSES:
        matrix = Table(title="confusion (rows: true, columns: predicted)")
        matrix.add_column("")
        for index in range(len(classes)):
            matrix.add_column(str(index), justify="right")
        for index, (name, row) in enumerate(zip(classes, report["confusion"])):
            matrix.add_row(f"{index} {name}"[:18], *(str(n) for n in row))
        console.print(matrix)


def write_figure(counts, classes: list, title: str, path: Path) -> Path:
    from trainlab.callbacks.images import confusion_figure, rendered, save_png

    save_png(rendered(confusion_figure(counts, [str(c) for c in classes], title)), path)
    return path


def run(cfg, run_dir: Path) -> dict:
    from omegaconf import OmegaConf

    from trainlab.errors import ConfigError
    from trainlab.tta import build_views

    run_dir = Path(run_dir)
    split = cfg.split
    path = checkpoint_file(cfg.checkpoint, "checkpoint")
    source = f"checkpoint={cfg.checkpoint}"
    payload = load(path, source)
    rebuilt = rebuild(cfg, payload, source)
    for notice in rebuilt.notices:
        print(notice)
    if rebuilt.loader(split).num_samples == 0:
        raise ConfigError(f"split={split}: dataset.name={cfg.dataset.name} has no {split} images here; "
                          "choose the other split")
    classes = list(rebuilt.data.classes)
    plain = score(rebuilt, split)
    counts = confusion(plain["scores"], plain["labels"], len(classes))
    views = build_views(**cfg.tta) if cfg.get("tta") else None
    tta = None
    if views is not None:
        scored = score(rebuilt, split, views)
        tta = {"loss": scored["loss"], "acc": scored["acc"], "top5": top_k(scored["scores"], scored["labels"], 5),
               "views": count_views(views, rebuilt.data.input_shape), "seconds": scored["seconds"]}
    effective = OmegaConf.to_container(cfg, resolve=True)
    logged = logged_figures(path, payload, split, effective)
    logged["where"] = ("best.pt's epoch metrics" if split == "val" else "summary.json")
    seconds = plain["seconds"] + (tta["seconds"] if tta else 0.0)
    report = {
        "checkpoint": str(path), "epoch": payload.get("epoch"), "weights": payload.get("weights", "model"),
        "split": split, "dataset": cfg.dataset.name, "samples": plain["samples"], "classes": classes,
        "loss": finite(plain["loss"]), "acc": plain["acc"], "top5": top_k(plain["scores"], plain["labels"], 5),
        "per_class": per_class(counts, classes), "confusion": counts.tolist(), "tta": tta, "logged": logged,
        "device": str(rebuilt.device),
        "time": {"eval_s": seconds, "samples_per_s": plain["samples"] * (2 if tta else 1) / max(seconds, 1e-9)},
        "config": effective,
    }
    (run_dir / "eval.json").write_text(json.dumps(report, indent=2) + "\n")
    png = write_figure(counts, classes, f"{split} confusion ({Path(cfg.checkpoint).name})",
                       run_dir / f"confusion_{split}.png")
    written = [run_dir / "eval.json", png]
    if split == "target":
        written.append(features_picture(cfg, rebuilt, run_dir))
    print_report(report)
    print(f"wrote {', '.join(map(str, written))}")
    return report


def features_picture(cfg, rebuilt: Rebuilt, run_dir: Path) -> Path:
    """features.png: the source and target test images' features in 2-D, the checkpoint's (and, with compare=,
    another run's beside it, e.g. the source-only baseline's), as the runs' own pictures draw them."""
    from omegaconf import OmegaConf

    from trainlab.adaptation.features import features_figure, head_inputs, panel
    from trainlab.callbacks.images import rendered, save_png

    def panel_of(model, title: str):
        source, target = (head_inputs(model, rebuilt.loader(split), rebuilt.device, rebuilt.amp_dtype, 500)
                          for split in ("test", "target"))
        return panel(title, source, target)

    def title_of(config, name) -> str:
        method = (config.get("adaptation") or {}).get("method", "none")
        return f"{'DANN' if method == 'dann' else 'source only'}: {Path(str(name)).name}"

    panels = [panel_of(rebuilt.model, title_of(OmegaConf.to_container(cfg), cfg.checkpoint))]
    if cfg.get("compare") is not None:
        given = Given(groups={}, keys={})
        source = f"compare={cfg.compare}"
        effective, payload = checked_member(cfg, checkpoint_file(cfg.compare, "compare"), source, given, OWN_KEYS)
        other = rebuild(effective, payload, source, shared=rebuilt)
        panels.insert(0, panel_of(other.model, title_of(payload["config"], cfg.compare)))
    path = run_dir / "features.png"
    save_png(rendered(features_figure(panels, cfg.dataset.name, rebuilt.data.target.name)), path)
    return path


def count_views(views, input_shape) -> int:
    """How many views TTA makes of each image."""
    import torch

    return len(views(torch.zeros((1, *input_shape), dtype=torch.uint8)))
