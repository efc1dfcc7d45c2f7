"""The runs as a table: which keys were swept, the order (best first), the rich table, summary.csv.

Order: completed runs by the monitored metric (best first: highest for mode max, lowest for min), then
every other status (failed, diverged, interrupted, unknown) the same way. When runs monitor different
metrics (a report over a whole outputs folder), the most common metric's runs come first.
"""

from __future__ import annotations

import csv
import math
from collections import Counter
from pathlib import Path
from typing import Any, Iterable, Optional

from trainlab.reports.runs import Run, finite, natural_key

ERROR_WIDTH = 60  # characters of an error the console table shows (csv, json and html keep all of it)


def main_metric(runs: list[Run]) -> Optional[str]:
    counts = Counter(run.metric for run in runs if run.metric)
    return counts.most_common(1)[0][0] if counts else None


def main_mode(runs: list[Run], metric: Optional[str]) -> str:
    modes = Counter(run.mode for run in runs if run.metric == metric)
    return modes.most_common(1)[0][0] if modes else ("min" if str(metric).endswith("loss") else "max")


def sort_key(run: Run, metric: Optional[str]) -> tuple:
    value = run.best
    score = math.inf if value is None else (-value if run.mode == "max" else value)
    return (not run.ok, run.metric != metric, run.metric or "", score, natural_key(run.name))


def sort_runs(runs: Iterable[Run]) -> list[Run]:
    runs = list(runs)
    metric = main_metric(runs)
    return sorted(runs, key=lambda run: sort_key(run, metric))


def swept_keys(runs: list[Run]) -> list[str]:
    """The override keys whose value differs between runs (a key some runs lack counts), in the order they
    first appear; for a single run, all its overrides."""
    order: dict[str, None] = {}
    for run in runs:
        order.update(dict.fromkeys(run.overrides))
    if len(runs) == 1:
        return list(order)
    return [key for key in order if len({run.overrides.get(key) for run in runs}) > 1]


def common_overrides(runs: list[Run]) -> dict:
    """The overrides every run has with the same value (for one run: none, they are all its columns)."""
    if len(runs) < 2:
        return {}
    first = runs[0].overrides
    return {key: value for key, value in first.items() if all(run.overrides.get(key) == value for run in runs)}


def label(run: Run, keys: list[str]) -> str:
    """How a plot's legend names a run: its swept overrides, else its folder."""
    parts = [f"{key}={run.overrides[key]}" if run.overrides[key] else key for key in keys if key in run.overrides]
    return " ".join(parts) or run.name


def is_accuracy(metric: Optional[str]) -> bool:
    return str(metric).rsplit("/", 1)[-1] in ("acc", "accuracy", "top1", "top5")


def fmt_metric(metric: Optional[str], value: Optional[float], pct_sign: bool = True) -> str:
    if value is None:
        return "-"
    if is_accuracy(metric):
        return f"{100 * value:.2f}" + ("%" if pct_sign else "")
    return f"{value:.4f}"


def fmt_seconds(seconds: Optional[float]) -> str:
    if seconds is None:
        return "-"
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, secs = divmod(int(round(seconds)), 60)
    if minutes < 60:
        return f"{minutes}m {secs:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h {minutes:02d}m"


def fmt_int(value: Any) -> str:
    return f"{value:,}" if isinstance(value, int) and not isinstance(value, bool) else "-"


def shorten(text: Optional[str], width: int = ERROR_WIDTH) -> str:
    text = " ".join(str(text or "").split())
    return text if len(text) <= width else text[: width - 1] + "…"


def status_text(run: Run, width: Optional[int] = ERROR_WIDTH) -> str:
    if run.ok or not run.error:
        return run.status
    return f"{run.status}: {shorten(run.error, width) if width else run.error}"


def epochs_text(run: Run) -> str:
    done, planned = run.get("epochs_run"), run.get("epochs")
    if done is None and planned is None:
        return "-"
    return f"{'-' if done is None else done}/{'-' if planned is None else planned}"


def metric_header(runs: list[Run]) -> Optional[str]:
    """The monitored metric when every run that has one monitors the same (else None: each cell names it)."""
    metrics = {run.metric for run in runs if run.metric}
    return metrics.pop() if len(metrics) == 1 else None


def table_rows(runs: list[Run], keys: list[str], error_width: Optional[int] = ERROR_WIDTH) -> tuple[list, list]:
    """(header, rows) of the runs table as text, shared by the console and the HTML page."""
    metric = metric_header(runs)
    header = ["#", "run", *keys, f"best {metric}" if metric else "best", "epoch", "test acc", "epochs", "time",
              "status"]
    rows = []
    for rank, run in enumerate(runs, 1):
        best = fmt_metric(run.metric, run.best)
        if metric is None and run.metric:
            best = f"{run.metric} {best}"
        rows.append([str(rank), run.name, *[run.overrides.get(key, "") or ("yes" if key in run.overrides else "")
                                            for key in keys],
                     best, str(run.best_epoch) if run.best_epoch is not None else "-",
                     fmt_metric("acc", run.test("acc")), epochs_text(run), fmt_seconds(run.timing("total_s")),
                     status_text(run, error_width)])
    return header, rows


def rich_table(runs: list[Run], keys: list[str], common: dict, title: str):
    from rich.table import Table

    header, rows = table_rows(runs, keys)
    table = Table(title=title, header_style="bold", show_lines=False)
    numeric = {"#", "epoch", "test acc", "epochs", "time"}
    for name in header:
        table.add_column(name, justify="right" if name in numeric or name.startswith("best") else "left",
                         overflow="fold")
    for run, row in zip(runs, rows):
        style = None if run.ok else ("red" if run.status in ("failed", "diverged") else "yellow")
        table.add_row(*row, style=style)
    if common:
        table.caption = "common: " + " ".join(f"{k}={v}" if v else k for k, v in common.items())
    return table


def record(run: Run, keys: list[str]) -> dict:
    """One run as summary.json's report lists it (and, flattened, as a row of summary.csv)."""
    summary = run.summary
    return {
        "run": run.name, "status": run.status, "overrides": dict(run.overrides),
        "swept": {key: run.overrides.get(key) for key in keys},
        "metric": run.metric, "mode": run.mode, "best": run.best, "best_epoch": run.best_epoch,
        "test_acc": run.test("acc"), "test_loss": run.test("loss"),
        "epochs_run": summary.get("epochs_run"), "epochs": summary.get("epochs"),
        "train_s": run.timing("train_s"), "eval_s": run.timing("eval_s"), "total_s": run.timing("total_s"),
        "train_samples_per_s": finite(summary.get("train_samples_per_s")), "device": summary.get("device"),
        "params": summary.get("params"), "choices": summary.get("choices") or {}, "error": run.error,
        "run_dir": str(run.folder.resolve()),
    }


CSV_FIELDS = ("run", "status", "metric", "mode", "best", "best_epoch", "test_acc", "test_loss", "epochs_run", "epochs",
              "train_s", "eval_s", "total_s", "train_samples_per_s", "device", "params")


def write_csv(path: Path, records: list[dict], keys: list[str]) -> Path:
    """summary.csv: one row per run, in the table's order; a column per swept key, then the figures."""
    columns = {key: (key if key not in CSV_FIELDS and key not in ("overrides", "error", "run_dir")
                     else f"override:{key}") for key in keys}
    fields = ["run", "status", *columns.values(), *CSV_FIELDS[2:], "overrides", "error", "run_dir"]
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=fields)
        writer.writeheader()
        for item in records:
            row = {name: item.get(name) for name in fields}
            row.update({columns[key]: item["swept"].get(key) for key in keys})
            row["overrides"] = " ".join(f"{k}={v}" if v else k for k, v in item["overrides"].items())
            writer.writerow({name: "" if value is None else value for name, value in row.items()})
    return path


def totals(runs: list[Run]) -> dict:
    """The sweep's machine and timing figures."""
    starts = [run.started for run in runs if run.started is not None]
    ends = [run.finished for run in runs if run.finished is not None]
    compute = [run.timing("total_s") for run in runs if run.timing("total_s") is not None]
    params = sorted({run.get("params") for run in runs if isinstance(run.get("params"), int)})
    return {
        "runs": len(runs), "completed": sum(run.ok for run in runs),
        "not_completed": sum(not run.ok for run in runs),
        "statuses": dict(Counter(run.status for run in runs)),
        "devices": sorted({str(run.get("device")) for run in runs if run.get("device")}),
        "params": [params[0], params[-1]] if params else None,
        "runs_total_s": sum(compute) if compute else None,
        "train_s": sum(run.timing("train_s") or 0.0 for run in runs),
        "eval_s": sum(run.timing("eval_s") or 0.0 for run in runs),
        # the first run's start to the last run's end (train.log's time stamps, else file times)
        "wall_s": (max(ends) - min(starts)) if starts and ends and max(ends) >= min(starts) else None,
    }
