"""`trainlab report <folder>... [--html] [--top N] [--out DIR]`: the answer of a sweep.

Unlike the other commands it takes paths, not Hydra overrides: `main(args)` is its command line, and
`report_sweep(folder)` is what the runner calls at the end of a multirun. It reads run folders back
(summary.json, .hydra/overrides.yaml, TensorBoard events) and never imports torch.

Given a sweep folder (or an outputs folder, or one run folder) it prints the runs best first, groups the
runs that differ only by seed or dataset.fold (mean ± std, n), and writes into that folder (or --out):
summary.csv, summary.json (kind "trainlab.report"), report_curves.png, report_<key>.png per swept
number, and with --html report.html. Several paths without --out: outputs/report/<date>/<time>/.
When the folder written into is itself a run (its summary.json is the run's), the two tables are
report_summary.csv / report_summary.json instead.

`CONFIG` and `run(cfg, run_dir)` keep the shape of the other commands, for the Hydra runner:
report.paths=[...] report.html=true, written into the runner's run folder.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
from datetime import datetime
from pathlib import Path
from typing import Any, Optional

CONFIG = "report"
TOP = 5  # runs on the curves plot


def out_folder(paths: list[Path], out: Optional[Path], cwd: Path) -> Path:
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        return out
    if len(paths) == 1:
        path = paths[0]
        return path.parent if path.is_file() else path
    from trainlab.commands import claim_run_dir

    return claim_run_dir(cwd / "outputs" / "report", datetime.now())


def table_names(folder: Path) -> tuple[str, str]:
    """summary.csv / summary.json, unless a summary.json that is not a report's is there (a run folder)."""
    from trainlab.reports.runs import REPORT_KIND, read_json

    existing = folder / "summary.json"
    if existing.exists():
        data = read_json(existing)
        if not (isinstance(data, dict) and data.get("kind") == REPORT_KIND):
            return "report_summary.csv", "report_summary.json"
    return "summary.csv", "summary.json"


def plain(value: Any) -> Any:
    """JSON without NaN or inf (null instead): any reader parses it."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    return value


def write_json(path: Path, data: Any) -> Path:
    temporary = path.with_name(path.name + ".tmp")
    temporary.write_text(json.dumps(plain(data), indent=2, allow_nan=False, default=str) + "\n")
    os.replace(temporary, path)
    return path


def collect(paths: list[Path]):
    """Every run under the paths, each once (NoRunsFound for a path without any)."""
    from trainlab.reports.runs import find_runs

    runs, seen = [], set()
    for path in paths:
        for run in find_runs(path, label=path.name if len(paths) > 1 else ""):
            where = run.folder.resolve()
            if where not in seen:
                seen.add(where)
                runs.append(run)
    return runs


def build_report(paths: list[Path], out: Optional[Path] = None, html: bool = False, top: int = TOP,
                 console=None, cwd: Optional[Path] = None) -> dict:
    """Find, order, group, draw and write; print the tables and the paths written. Return the report as
    written to summary.json, with "files": {name: path} of everything written."""
    from trainlab.reports import grouping, plots, table
    from trainlab.reports.runs import REPORT_KIND

    paths = [Path(p) for p in paths]
    runs = table.sort_runs(collect(paths))
    folder = out_folder(paths, Path(out) if out is not None else None, cwd or Path.cwd())
    keys = table.swept_keys(runs)
    common = table.common_overrides(runs)
    groups = grouping.group_runs(runs, keys)
    metric = table.main_metric(runs)
    mode = table.main_mode(runs, metric)
    totals = table.totals(runs)
    records = [table.record(run, keys) for run in runs]
    csv_name, json_name = table_names(folder)
    files: dict[str, Path] = {"csv": table.write_csv(folder / csv_name, records, keys)}

    pictures: list[tuple[Path, str]] = []
    leaders = [run for run in runs if run.ok][: max(top, 0)]
    if leaders:
        curves = plots.plot_curves(leaders, keys, folder / "report_curves.png", metric)
        if curves is not None:
            files["curves"] = curves
            pictures.append((curves, f"validation curves of the top {len(leaders)} runs"))
    for key in plots.numeric_keys(runs, keys):
        drawn = plots.plot_param(runs, key, folder / plots.file_name(key), metric, mode)
        if drawn is not None:
            files[f"param:{key}"] = drawn
            pictures.append((drawn, f"best {metric} against {key}"))

    report = {
        "kind": REPORT_KIND, "version": 1, "written": datetime.now().isoformat(timespec="seconds"),
        "paths": [str(p) for p in paths], "metric": metric, "mode": mode, "swept": keys, "common": common,
        "totals": totals, "runs": records, "groups": [group.as_dict() for group in groups],
        "plots": [path.name for path, _ in pictures], "html": "report.html" if html else None,
    }
    files["json"] = write_json(folder / json_name, report)
    if html:
        from trainlab.reports.html import page

        text = page(runs, keys, common, groups, totals, pictures, [str(p) for p in paths], metric)
        files["html"] = folder / "report.html"
        files["html"].write_text(text, encoding="utf-8")

    show(console, runs, keys, common, groups, totals, metric, files)
    report["files"] = {name: str(path) for name, path in files.items()}
    return report


def show(console, runs, keys, common, groups, totals, metric, files) -> None:
    from rich.console import Console

    from trainlab.reports import grouping, table

    if console is None:
        console = Console()
        if not console.is_terminal and "COLUMNS" not in os.environ:  # a log or a pipe: room for the columns
            console = Console(width=160)
    done = f"{totals['completed']}/{totals['runs']} completed"
    console.print(table.rich_table(runs, keys, common, f"trainlab report: {len(runs)} runs ({done}), best first"))
    if groups:
        console.print(grouping.rich_groups(groups, keys, f"groups over {', '.join(grouping.repeated_keys(keys))}"))
    line = f"run time {table.fmt_seconds(totals['runs_total_s'])} (sum of the runs)"
    if totals["wall_s"] is not None:
        line += f", wall clock {table.fmt_seconds(totals['wall_s'])}"
    if totals["devices"]:
        line += f", on {', '.join(totals['devices'])}"
    console.print(line, highlight=False)
    for path in files.values():
        console.print(f"wrote {path}", highlight=False, soft_wrap=True)


def report_sweep(folder: Path, console=None) -> Path:
    """The default report of one sweep folder (tables, summary.csv/summary.json, pictures; no HTML):
    printed on `console` (a rich Console; None: stdout). Return the path of the summary.json written.
    Raises trainlab.reports.runs.NoRunsFound when the folder holds no run."""
    report = build_report([Path(folder)], console=console)
    return Path(report["files"]["json"])


def parser() -> argparse.ArgumentParser:
    parse = argparse.ArgumentParser(
        prog="trainlab report",
        description="The answer of a sweep: its runs best first (by the monitored metric), runs that differ "
                    "only by seed or dataset.fold grouped (mean ± std), summary.csv / summary.json, the val "
                    "curves of the top runs and the metric against each swept number as PNGs.",
        epilog="examples:\n  trainlab report outputs/multirun/2026-12-01/20-33-57\n"
               "  trainlab report outputs --html\n  trainlab report sweepA sweepB --out comparison --top 3",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parse.add_argument("paths", nargs="+", type=Path, metavar="PATH",
                       help="a sweep folder, an outputs folder or a run folder (every run under it is read)")
    parse.add_argument("--html", action="store_true",
                       help="also write report.html: one self-contained page (opens offline)")
    parse.add_argument("--top", type=int, default=TOP, metavar="N",
                       help=f"the N best runs on the curves plot (default {TOP}; 0: no curves)")
    parse.add_argument("--out", type=Path, default=None, metavar="DIR",
                       help="write here instead of the folder given (default for several paths: "
                            "outputs/report/<date>/<time>)")
    return parse


def main(args: list[str]) -> int:
    """`trainlab report ARGS`: 0 when written, 2 with one line on stderr when a path holds no run."""
    from trainlab.reports.runs import NoRunsFound

    options = parser().parse_args(args)
    if options.top < 0:
        print(f"trainlab: error: --top {options.top}: must be 0 or more", file=sys.stderr)
        return 2
    try:
        build_report(options.paths, out=options.out, html=options.html, top=options.top)
    except NoRunsFound as error:
        print(f"trainlab: error: {error}", file=sys.stderr)
        return 2
    except OSError as error:
        print(f"trainlab: error: {error.filename or ''}: cannot write the report ({error.strerror or error})",
              file=sys.stderr)
        return 2
    return 0


# --- the shape of the other commands (the Hydra runner): report.paths=[...] into the runner's run folder


def check(cfg, context) -> None:
    from trainlab.errors import ConfigError

    settings = cfg.get("report") or {}
    paths = settings.get("paths")
    if not paths or isinstance(paths, str) or not all(isinstance(p, str) for p in paths):
        raise ConfigError(f"report.paths={paths!r}: must be a list of folders, e.g. report.paths=[outputs/multirun]")
    top = settings.get("top", TOP)
    if isinstance(top, bool) or not isinstance(top, int) or top < 0:
        raise ConfigError(f"report.top={top!r}: must be a whole number >= 0")


def run(cfg, run_dir: Path) -> dict:
    settings = cfg.get("report") or {}
    return build_report([Path(p) for p in settings.get("paths")], out=run_dir, html=bool(settings.get("html")),
                        top=int(settings.get("top", TOP)))


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
