"""Runs that differ only by `seed` or `dataset.fold` are one group: repeated seeds, or k-fold
cross-validation as a sweep over dataset.fold. A group's figures are the mean, the sample standard
deviation (n-1; none for n=1) and n of its completed runs' best val metric and test acc.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field
from typing import Optional

from trainlab.reports.runs import Run
from trainlab.reports.table import fmt_metric, main_metric, main_mode

REPEAT_KEYS = ("seed", "dataset.fold")


@dataclass
class Stat:
    values: list[float]

    @property
    def n(self) -> int:
        return len(self.values)

    @property
    def mean(self) -> Optional[float]:
        return statistics.mean(self.values) if self.values else None

    @property
    def std(self) -> Optional[float]:
        return statistics.stdev(self.values) if len(self.values) > 1 else None

    def as_dict(self) -> dict:
        return {"mean": self.mean, "std": self.std, "n": self.n, "values": self.values}


@dataclass
class Group:
    overrides: dict  # what the group's runs share (their overrides less seed and dataset.fold)
    runs: list[Run] = field(default_factory=list)
    varies: list[str] = field(default_factory=list)  # which of seed / dataset.fold differ within the group

    @property
    def completed(self) -> list[Run]:
        return [run for run in self.runs if run.ok]

    @property
    def metric(self) -> Optional[str]:
        return main_metric(self.runs)

    @property
    def mode(self) -> str:
        return main_mode(self.runs, self.metric)

    @property
    def best(self) -> Stat:
        return Stat([run.best for run in self.completed if run.best is not None and run.metric == self.metric])

    @property
    def test_acc(self) -> Stat:
        return Stat([run.test("acc") for run in self.completed if run.test("acc") is not None])

    def as_dict(self) -> dict:
        return {"overrides": self.overrides, "varies": self.varies, "n": len(self.completed),
                "runs": [run.name for run in self.runs],
                "not_completed": [run.name for run in self.runs if not run.ok],
                "best": {"metric": self.metric, "mode": self.mode, **self.best.as_dict()},
                "test_acc": self.test_acc.as_dict()}


def repeated_keys(keys: list[str]) -> list[str]:
    return [key for key in REPEAT_KEYS if key in keys]


def group_runs(runs: list[Run], keys: list[str]) -> list[Group]:
    """The groups when seed or dataset.fold was swept and some runs share everything else (else []),
    best mean first (by the monitored metric's mode); groups without a completed run last."""
    repeats = repeated_keys(keys)
    if not repeats:
        return []
    by_key: dict[tuple, Group] = {}
    for run in runs:
        shared = {k: v for k, v in run.overrides.items() if k in keys and k not in REPEAT_KEYS}
        group = by_key.setdefault(tuple(sorted(shared.items())), Group(shared))
        group.runs.append(run)
    groups = list(by_key.values())
    if all(len(group.runs) < 2 for group in groups):
        return []
    for group in groups:
        group.varies = [key for key in repeats if len({run.overrides.get(key) for run in group.runs}) > 1]

    def order(group: Group) -> tuple:
        mean = group.best.mean
        return (mean is None, 0.0 if mean is None else (-mean if group.mode == "max" else mean))

    return sorted(groups, key=order)


def fmt_stat(metric: Optional[str], stat: Stat) -> tuple[str, str]:
    """('89.60%', '0.35') - the mean and the std ('-' for n=1) in the metric's units."""
    std = "-" if stat.std is None else fmt_metric(metric, stat.std, pct_sign=False)
    return fmt_metric(metric, stat.mean), std


def group_rows(groups: list[Group], keys: list[str]) -> tuple[list, list]:
    """(header, rows) of the groups table as text, shared by the console and the HTML page."""
    shown = [key for key in keys if key not in REPEAT_KEYS]
    metric = groups[0].metric if groups else None
    header = ["#", *shown, "over", f"best {metric} mean" if metric else "best mean", "± std", "test acc mean",
              "± std", "n"]
    rows = []
    for rank, group in enumerate(groups, 1):
        best_mean, best_std = fmt_stat(group.metric, group.best)
        test_mean, test_std = fmt_stat("acc", group.test_acc)
        missing = len(group.runs) - len(group.completed)
        n = f"{len(group.completed)}" + (f" (+{missing} not completed)" if missing else "")
        rows.append([str(rank), *[group.overrides.get(key, "") for key in shown], ", ".join(group.varies) or "-",
                     best_mean, best_std, test_mean, test_std, n])
    return header, rows


def rich_groups(groups: list[Group], keys: list[str], title: str):
    from rich.table import Table

    header, rows = group_rows(groups, keys)
    table = Table(title=title, header_style="bold")
    for name in header:
        table.add_column(name, justify="right" if name in ("#", "n", "± std") or "mean" in name else "left")
    for row in rows:
        table.add_row(*row)
    table.caption = "mean ± sample std (n-1) of the completed runs; '-': a single run"
    return table
