"""`trainlab ensemble`: average the predicted probabilities of several checkpoints on the test split.

    trainlab ensemble members=[<checkpoint>,<run folder>,<sweep folder>,...] [top_k=5]

`members` lists checkpoint files (best.pt, last.pt, snapshot_<k>.pt), run folders and sweep folders:
  - a run folder gives its snapshots (checkpoints/snapshot_<k>.pt, kept by the `snapshots` callback: a
    snapshot ensemble) when it has any, else its best.pt;
  - a sweep folder (outputs/multirun/<date>/<time>) gives the best.pt of its `top_k` runs by their best
    validation metric (summary.json's best.value, in its mode; runs without one are left out).
Each member is rebuilt from its own checkpoint exactly as `trainlab eval` rebuilds one (its config's model,
its weights, its own preprocessing statistics: members with different preprocessing each get theirs), after
trainlab.safety has checked its config. Members must share their classes and the dataset's test split (the
dataset keys that decide the test images); otherwise the command refuses, naming the member. The command
line may give dataset keys (e.g. dataset.root, applied to every member), trainer.device / eval_batch_size /
amp / amp_dtype / channels_last, members, top_k and trust; the rest comes from the checkpoints.

The ensemble's prediction is the mean of the members' softmax probabilities (float64); its loss is the
negative log of the mean probability of the true class (so, by Jensen's inequality, never above the members'
mean loss). Each member's own figures come from trainlab.evaluate.evaluate, as training's test figures do.
Writes outputs/ensemble/<date>/<time>/ensemble.json and prints the members and the ensemble side by side.
"""

from __future__ import annotations

import json
import re
import time
from pathlib import Path
from typing import Any, Optional

from trainlab.commands import eval as evaluation

CONFIG = "ensemble"
OWN_KEYS = ("members", "top_k", "trust")
GROUPS = ("dataset",)
# dataset keys that do not change which images make the test split
NOT_TEST_KEYS = {"train_size", "val_size", "folds", "fold", "download", "system_root", "cache_dir", "num_workers",
                 "max_memory_mb", "root"}


def snapshot_number(path: Path) -> int:
    found = re.fullmatch(r"snapshot_(\d+)\.pt", path.name)
    return int(found.group(1)) if found else 0


def best_of(run: Path) -> Optional[dict]:
    """summary.json's best ({metric, mode, value, epoch}) of a run folder, or None."""
    try:
        best = json.loads((run / "summary.json").read_text()).get("best") or {}
    except (OSError, ValueError):
        return None
    return best if isinstance(best.get("value"), (int, float)) else None


def expand(members: Any, top_k: int) -> list[dict]:
    """`members` as checkpoint files: [{"path", "from" (what was listed), "val" (best val metric or None)}]."""
    from trainlab.checks import bad
    from trainlab.commands import holds_run, holds_sweep
    from trainlab.errors import ConfigError

    listed = [members] if isinstance(members, str) else list(members or [])
    if not listed or not all(isinstance(m, str) and m.strip() for m in listed):
        raise bad("members", members, "must list checkpoints, run folders or a sweep folder",
                  "e.g. members=[outputs/train/<date>/<time>,outputs/train/<date>/<time-2>] or "
                  "members=[outputs/multirun/<date>/<time>]")
    found: list[dict] = []
    for value in listed:
        path = Path(value).expanduser()
        if path.is_file():
            found.append({"path": path, "from": value, "val": None})
        elif path.is_dir() and (path / "checkpoints").is_dir():  # a run (a sweep folder has a summary.json too)
            snapshots = sorted((path / "checkpoints").glob("snapshot_*.pt"), key=snapshot_number)
            if snapshots:
                found += [{"path": s, "from": value, "val": None} for s in snapshots]
            elif (path / "checkpoints" / "best.pt").is_file():
                found.append({"path": path / "checkpoints" / "best.pt", "from": value, "val": best_of(path)})
            else:
                raise ConfigError(f"members={value}: that run folder has no checkpoints/best.pt or snapshot_<k>.pt")
        elif path.is_dir() and holds_sweep(path):
            found += sweep_members(path, value, top_k)
        elif path.is_dir() and holds_run(path):
            raise ConfigError(f"members={value}: that run folder has no checkpoints/ (best.pt or snapshot_<k>.pt)")
        elif path.is_dir():
            raise ConfigError(f"members={value}: not a trainlab run or sweep folder (no checkpoints/, no runs in it)")
        else:
            raise ConfigError(f"members={value}: no such file or folder")
    seen: dict[Path, str] = {}
    for member in found:
        key = member["path"].resolve()
        if key in seen:
            raise ConfigError(f"members={member['from']}: {member['path']} is already a member (from {seen[key]}); "
                              "list each checkpoint once")
        seen[key] = member["from"]
    if len(found) < 2:
        raise ConfigError(f"members={listed}: {len(found)} checkpoint{'' if len(found) == 1 else 's'} "
                          f"({', '.join(str(m['path']) for m in found) or 'none'}); an ensemble needs at least 2")
    return found


def sweep_members(sweep: Path, value: str, top_k: int) -> list[dict]:
    """The best.pt of the sweep's top_k runs by their best validation metric."""
    from trainlab.errors import ConfigError

    runs = []
    for child in sorted(p for p in sweep.iterdir() if p.is_dir()):
        best = best_of(child)
        if best is not None and (child / "checkpoints" / "best.pt").is_file():
            runs.append((child, best))
    if not runs:
        raise ConfigError(f"members={value}: no run of that sweep has checkpoints/best.pt and a best value in "
                          "summary.json")
    metrics = {(best.get("metric"), best.get("mode")) for _, best in runs}
    if len(metrics) > 1:
        shown = ", ".join(f"{m} ({mode})" for m, mode in sorted(metrics, key=str))
        raise ConfigError(f"members={value}: its runs were picked on different metrics ({shown}); list the "
                          "checkpoints to ensemble instead")
    (_, mode), = metrics
    runs.sort(key=lambda item: (-item[1]["value"] if mode == "max" else item[1]["value"], natural(item[0].name)))
    return [{"path": run / "checkpoints" / "best.pt", "from": value, "val": best} for run, best in runs[:top_k]]


def natural(name: str) -> tuple:
    return tuple(int(part) if part.isdigit() else part for part in re.split(r"(\d+)", name))


def test_split(effective) -> dict:
    """The dataset keys that decide the test images (root too for an image folder)."""
    from omegaconf import OmegaConf

    section = OmegaConf.to_container(effective.dataset, resolve=True)
    skip = NOT_TEST_KEYS - ({"root"} if section.get("name") == "imagefolder" else set())
    return {key: value for key, value in section.items() if key not in skip}


def check(cfg, context) -> None:
    from omegaconf import OmegaConf, open_dict

    from trainlab.build import check as dry_build
    from trainlab.checks import bad, is_int
    from trainlab.errors import ConfigError

    top_k = cfg.get("top_k", 5)
    if not (is_int(top_k) and top_k >= 1):
        raise bad("top_k", top_k, "must be a whole number >= 1 (the sweep's best runs to ensemble)")
    given = evaluation.command_line(cfg, context)
    evaluation.refuse_others(given, "ensemble", GROUPS, OWN_KEYS)
    members = expand(cfg.get("members"), top_k)
    resolved = []
    first = None
    for member in members:
        source = f"members={member['path']}"
        effective, payload = evaluation.checked_member(cfg, member["path"], source, given, OWN_KEYS,
                                                      copy_own=False)
        dry_build(effective)
        this = {"classes": list(payload.get("classes") or []), "test": test_split(effective), "path": member["path"]}
        if first is None:
            first = this
        elif this["classes"] != first["classes"]:
            raise ConfigError(f"{source}: its classes {evaluation.shorten(this['classes'])} are not those of "
                              f"{first['path']} {evaluation.shorten(first['classes'])}; an ensemble's members "
                              "must share their classes")
        elif this["test"] != first["test"]:
            key = next(k for k in sorted(this["test"].keys() | first["test"].keys())
                       if this["test"].get(k) != first["test"].get(k))
            raise ConfigError(f"{source}: its test split has dataset.{key}={this['test'].get(key)!r} but "
                              f"{first['path']} has {first['test'].get(key)!r}; an ensemble's members must be "
                              "scored on the same test images")
        resolved.append({"path": str(member["path"]), "from": member["from"], "val": member["val"],
                         "config": OmegaConf.to_container(effective, resolve=True)})
    with open_dict(cfg):  # what run() scores: the members' files and effective configs, checked
        cfg.resolved_members = resolved


def epoch_val(payload: dict) -> Optional[dict]:
    """A checkpoint's own validation accuracy (its epoch's metrics), when it has one."""
    metrics = payload.get("metrics") or {}
    prefix = "val_ema/" if payload.get("weights") == "ema" else "val/"
    if f"{prefix}acc" not in metrics:
        return None
    return {"metric": f"{prefix}acc", "value": metrics[f"{prefix}acc"], "epoch": payload.get("epoch")}


def label(path: Path) -> str:
    """A member's short name: <run folder>/<file stem>, e.g. 3/best or 14-02-11/snapshot_2."""
    return f"{path.parent.parent.name}/{path.stem}" if path.parent.name == "checkpoints" else path.name


def shown_val(val: Optional[dict]) -> str:
    if not val:
        return "-"
    value = evaluation.percent(val["value"]) if val["metric"].endswith("acc") else f"{val['value']:.4f}"
    return f"{val['metric']} {value}"


def print_report(report: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console(width=110)
    top5 = report["ensemble"]["top5"] is not None
    table = Table(title=f"trainlab ensemble: {len(report['members'])} members, test split "
                        f"({report['test_size']:,} images, {report['dataset']})")
    for column, justify in (("member", "left"), ("model", "left"), ("val", "right"),
                            ("test loss", "right"), ("test acc", "right")):
        table.add_column(column, justify=justify)
    if top5:
        table.add_column("top-5", justify="right")
    for member in report["members"]:
        row = [member["label"], member["model"], shown_val(member["val"]), f"{member['test']['loss']:.4f}",
               evaluation.percent(member["test"]["acc"])]
        table.add_row(*row, *([evaluation.percent(member["test"]["top5"])] if top5 else []))
    ensemble = report["ensemble"]
    table.add_row("ensemble (mean probabilities)", "", "", f"{ensemble['loss']:.4f}",
                  evaluation.percent(ensemble["acc"]), *([evaluation.percent(ensemble["top5"])] if top5 else []),
                  style="bold")
    console.print(table)
    console.print(f"best member {evaluation.percent(report['best_member_acc'])}, ensemble "
                  f"{evaluation.percent(ensemble['acc'])} ({100 * (ensemble['acc'] - report['best_member_acc']):+.2f} "
                  f"points); {report['time']['eval_s']:.2f} s on {report['device']}", highlight=False)


def run(cfg, run_dir: Path) -> dict:
    import torch
    import torch.nn.functional as F
    from omegaconf import OmegaConf

    from trainlab.errors import ConfigError

    run_dir = Path(run_dir)
    started = time.perf_counter()
    shared = None
    members, total, labels = [], None, None
    for member in cfg.resolved_members:
        path = Path(member.path)
        source = f"members={path}"
        config = OmegaConf.create(OmegaConf.to_container(member.config, resolve=True))
        payload = evaluation.load(path, source)
        rebuilt = evaluation.rebuild(config, payload, source, shared=shared)
        shared = shared or rebuilt
        for notice in rebuilt.notices:
            print(notice)
        if rebuilt.loader("test").num_samples == 0:
            raise ConfigError(f"{source}: dataset.name={config.dataset.name} has no test split here; an ensemble "
                              "is scored on the test split")
        scored = evaluation.score(rebuilt, "test")
        probs = scored["scores"].double().softmax(dim=1)
        if labels is not None and not torch.equal(labels, scored["labels"]):
            raise ConfigError(f"{source}: its test labels differ from the first member's; members must be scored "
                              "on the same test images")
        labels = scored["labels"]
        total = probs if total is None else total + probs
        target = OmegaConf.select(config, "model._target_")
        members.append({"checkpoint": str(path), "from": member["from"], "label": label(path),
                        "model": str(target).rsplit(".", 1)[-1], "epoch": payload.get("epoch"),
                        "val": OmegaConf.to_container(member.val) if member.val is not None else epoch_val(payload),
                        "test": {"loss": scored["loss"], "acc": scored["acc"],
                                 "top5": evaluation.top_k(scored["scores"], labels, 5)}})
        del rebuilt  # one member's model at a time
    mean = total / len(members)
    log_mean = mean.clamp_min(1e-300).log()
    ensemble = {"loss": F.nll_loss(log_mean, labels).item(),
                "acc": (mean.argmax(dim=1) == labels).double().mean().item(), "top5": evaluation.top_k(mean, labels, 5)}
    report = {
        "combine": "mean of the members' predicted probabilities (softmax)", "members": members,
        "ensemble": ensemble, "best_member_acc": max(m["test"]["acc"] for m in members),
        "dataset": cfg.resolved_members[0].config.dataset.name,
        "test_size": int(labels.numel()), "classes": list(shared.data.classes), "device": str(shared.device),
        "time": {"eval_s": time.perf_counter() - started},
    }
    (run_dir / "ensemble.json").write_text(json.dumps(report, indent=2) + "\n")
    print_report(report)
    print(f"wrote {run_dir / 'ensemble.json'}")
    return report
