"""Finding run folders and reading them back: summary.json, .hydra/overrides.yaml, train.log.

A run folder is a folder with a run's summary.json (one with a "status"), or with the .hydra/ folder of
a `trainlab train` job and no summary.json: a run that never got to write one (it crashed, was killed,
or is still running). The
search stops at a run folder (its checkpoints/ and tensorboard/ are not searched) and skips the
summary.json a report leaves in a sweep folder (it has "kind": "trainlab.report").
"""

from __future__ import annotations

import json
import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

REPORT_KIND = "trainlab.report"  # the "kind" of the summary.json a report writes (not a run's)
OK = "completed"


class NoRunsFound(Exception):
    """A path under which there is no run folder; str() is the one line a person sees."""

    def __init__(self, path: Path, why: str):
        super().__init__(f"{path}: no trainlab runs found ({why})")
        self.path = path


@dataclass
class Run:
    folder: Path
    name: str  # how the tables name it: its path relative to the folder given
    status: str
    summary: dict = field(default_factory=dict)
    overrides: dict = field(default_factory=dict)  # key -> value as typed (strings), in order
    metric: Optional[str] = None
    mode: str = "max"
    error: Optional[str] = None
    started: Optional[float] = None  # file times (s since the epoch), for the sweep's wall clock
    finished: Optional[float] = None

    @property
    def ok(self) -> bool:
        return self.status == OK

    @property
    def best(self) -> Optional[float]:
        return finite((self.summary.get("best") or {}).get("value"))

    @property
    def best_epoch(self) -> Optional[int]:
        return (self.summary.get("best") or {}).get("epoch")

    def test(self, name: str) -> Optional[float]:
        return finite((self.summary.get("test") or {}).get(name))

    def timing(self, name: str) -> Optional[float]:
        return finite((self.summary.get("time") or {}).get(name))

    def get(self, key: str) -> Any:
        return self.summary.get(key)


def finite(value: Any) -> Optional[float]:
    """A number, or None for a missing, non-numeric or non-finite one (NaN, inf)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return None
    return float(value)


def natural_key(text: str) -> list:
    """'2' before '10': job folders sort by number."""
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", text)]


def read_json(path: Path) -> Optional[Any]:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def run_summary(folder: Path) -> Optional[dict]:
    """The folder's summary.json when it is a run's (not a report's), else None."""
    data = read_json(folder / "summary.json")
    if isinstance(data, dict) and "status" in data and data.get("kind") != REPORT_KIND:
        return data
    return None


def is_run(folder: Path) -> bool:
    """A train run: its summary.json, or .hydra/ of a `trainlab train` job that wrote none (not the folder
    of another command: augment, schedule, check, ... leave .hydra/ and no summary.json)."""
    if run_summary(folder) is not None:
        return True
    if not (folder / ".hydra").is_dir() or (folder / "summary.json").exists():
        return False
    hydra = read_yaml(folder / ".hydra" / "hydra.yaml")
    job = (hydra.get("hydra") or {}).get("job") if isinstance(hydra, dict) else None
    if not isinstance(job, dict):
        return True  # no readable hydra.yaml: take it for a run that never finished
    return "train" in (job.get("name"), job.get("config_name"))


def parse_overrides(items: Any) -> dict:
    """['optimizer=adam', '+x=1', '~callbacks.ema'] -> {'optimizer': 'adam', 'x': '1', '~callbacks.ema': ''};
    Hydra's own keys (hydra.*) are left out."""
    parsed = {}
    for item in items if isinstance(items, list) else []:
        key, sep, value = str(item).partition("=")
        key = key.lstrip("+") if sep else key
        if key.lstrip("~").startswith(("hydra.", "hydra/")):
            continue
        parsed[key] = value
    return parsed


def read_yaml(path: Path) -> Any:
    import yaml  # PyYAML: omegaconf's own dependency

    try:
        return yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError):
        return None


def last_error(log: Path) -> Optional[str]:
    """The last line of train.log that reports an error, if any."""
    try:
        lines = log.read_text(errors="replace").splitlines()[-200:]
    except OSError:
        return None
    for line in reversed(lines):
        if re.search(r"error|exception|traceback|killed", line, flags=re.I):
            return re.sub(r"^\[[^\]]*\]\[[^\]]*\]\[[A-Z]+\] - ", "", line.strip())  # Hydra's log prefix
    return None


def mtime(path: Path) -> Optional[float]:
    try:
        return path.stat().st_mtime
    except OSError:
        return None


STAMP = re.compile(r"^\[(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d),(\d+)\]", flags=re.M)


def log_times(log: Path) -> tuple[Optional[float], Optional[float]]:
    """The first and last time stamps of train.log (Hydra's '[2026-12-01 21:38:15,948]...'): when the run
    started and last spoke; they survive a copy of the folder, unlike file times."""
    from datetime import datetime

    try:
        with log.open("rb") as handle:
            head = handle.read(4096).decode(errors="replace")
            handle.seek(max(0, log.stat().st_size - 8192))
            tail = handle.read().decode(errors="replace")
    except OSError:
        return None, None

    def stamp(match) -> float:
        return datetime.strptime(match.group(1), "%Y-%m-%d %H:%M:%S").timestamp() + int(match.group(2)) / 1000

    first, last = STAMP.search(head), list(STAMP.finditer(tail))
    return (stamp(first) if first else None), (stamp(last[-1]) if last else None)


def read_run(folder: Path, name: str) -> Run:
    summary = run_summary(folder)
    overrides = parse_overrides(read_yaml(folder / ".hydra" / "overrides.yaml"))
    started, finished = log_times(folder / "train.log")
    started = started or mtime(folder / ".hydra" / "config.yaml") or mtime(folder)
    if summary is not None:
        best = summary.get("best") or {}
        metric = best.get("metric")
        mode = best.get("mode") or ("min" if str(metric).endswith("loss") else "max")
        error = summary.get("error")
        return Run(folder, name, str(summary["status"]), summary, overrides, metric, mode,
                   str(error) if error else None, started, finished or mtime(folder / "summary.json"))
    if (folder / "summary.json").exists():  # a run's summary.json that cannot be read
        return Run(folder, name, "unknown", {}, overrides, error="summary.json cannot be read", started=started)
    trainer = ((read_yaml(folder / ".hydra" / "config.yaml") or {}).get("trainer") or {})
    metric = trainer.get("monitor") if isinstance(trainer.get("monitor"), str) else None
    mode = trainer.get("mode") if trainer.get("mode") in ("max", "min") else "max"
    error = last_error(folder / "train.log")
    status = "failed" if error else "unknown"
    return Run(folder, name, status, {}, overrides, metric, mode,
               error or "no summary.json: the run never finished (crashed, killed, or still running)", started)


def find_runs(path: Path, label: str = "") -> list[Run]:
    """Every run folder at or under `path` (a run, a sweep or an outputs folder), in natural path order;
    NoRunsFound when there is none."""
    path = Path(path)
    if path.is_file() and path.name == "summary.json":
        path = path.parent
    if not path.exists():
        raise NoRunsFound(path, "no such file or folder")
    if not path.is_dir():
        raise NoRunsFound(path, "not a folder; give a run, sweep or outputs folder")
    if is_run(path):
        return [read_run(path, label or path.name)]
    found = []
    for dirpath, dirnames, _ in os.walk(path):
        here = Path(dirpath)
        if here != path and is_run(here):
            found.append(here)
            dirnames[:] = []  # never into a run's checkpoints/ or tensorboard/
            continue
        dirnames[:] = [d for d in dirnames if not d.startswith(".")]
    if not found:
        raise NoRunsFound(path, "no folder with a summary.json or a .hydra/ folder under it")
    found.sort(key=lambda p: natural_key(p.relative_to(path).as_posix()))
    prefix = f"{label}/" if label else ""
    return [read_run(folder, prefix + folder.relative_to(path).as_posix()) for folder in found]
