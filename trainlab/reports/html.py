"""report.html: one self-contained page (inline CSS, the PNGs as base64 data: URIs, no script, nothing
fetched), so it opens offline and can be mailed or attached to a project report as one file."""

from __future__ import annotations

import base64
import html
from datetime import datetime
from pathlib import Path
from typing import Optional

from trainlab.reports.grouping import Group, group_rows
from trainlab.reports.runs import Run, finite
from trainlab.reports.table import fmt_int, fmt_metric, fmt_seconds, status_text, table_rows

CSS = """
body { font: 14px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; color: #1d2330;
       margin: 2em auto; max-width: 1180px; padding: 0 1em; }
h1 { font-size: 1.6em; margin-bottom: .1em; } h2 { font-size: 1.2em; margin-top: 1.8em;
     border-bottom: 1px solid #d5d9e0; padding-bottom: .2em; }
.sub { color: #5b6475; margin-top: 0; }
table { border-collapse: collapse; margin: .6em 0; font-variant-numeric: tabular-nums; }
th, td { border: 1px solid #d5d9e0; padding: .25em .6em; text-align: left; vertical-align: top; }
th { background: #eef1f6; } td.num { text-align: right; } tr.bad td { color: #a1261b; background: #fdf1f0; }
tr.first td { background: #eef8ee; font-weight: 600; }
dl.figures { display: grid; grid-template-columns: max-content auto; gap: .15em 1.2em; }
dl.figures dt { color: #5b6475; } dl.figures dd { margin: 0; }
.plots { display: flex; flex-wrap: wrap; gap: 1em; align-items: flex-start; }
figure { margin: 0; flex: 1 1 440px; max-width: 800px; } figure img { width: 100%; border: 1px solid #d5d9e0; }
figcaption { color: #5b6475; font-size: .9em; } code { background: #f3f4f7; padding: 0 .25em; }
.small { font-size: .9em; color: #5b6475; }
"""

NUMERIC = {"#", "epoch", "test acc", "epochs", "time", "n", "± std", "params", "train", "eval", "total",
           "samples/s"}


def esc(value) -> str:
    return html.escape("" if value is None else str(value))


def table(header: list[str], rows: list[list[str]], classes: Optional[list[str]] = None) -> str:
    def cell(name: str, value: str, tag: str = "td") -> str:
        numeric = name in NUMERIC or name.startswith("best") or "mean" in name
        return f'<{tag}{" class=num" if numeric and tag == "td" else ""}>{esc(value)}</{tag}>'

    head = "".join(f"<th>{esc(name)}</th>" for name in header)
    body = []
    for index, row in enumerate(rows):
        kind = classes[index] if classes else ""
        body.append(f'<tr{f" class={kind}" if kind else ""}>' + "".join(cell(h, v) for h, v in zip(header, row))
                    + "</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def image(path: Path, caption: str) -> str:
    data = base64.b64encode(path.read_bytes()).decode("ascii")
    return (f'<figure><img alt="{esc(caption)}" src="data:image/png;base64,{data}">'
            f"<figcaption>{esc(caption)}</figcaption></figure>")


def figures(pairs: list[tuple[str, str]]) -> str:
    return '<dl class="figures">' + "".join(f"<dt>{esc(k)}</dt><dd>{esc(v)}</dd>" for k, v in pairs) + "</dl>"


def choices_table(runs: list[Run]) -> str:
    """Each run's group choices (summary.json "choices") and its overrides, as given on the command line."""
    groups: dict[str, None] = {}
    for run in runs:
        groups.update(dict.fromkeys(run.get("choices") or {}))
    header = ["run", *groups, "overrides"]
    rows = [[run.name, *[(run.get("choices") or {}).get(g) or "" for g in groups],
             " ".join(f"{k}={v}" if v else k for k, v in run.overrides.items()) or "-"] for run in runs]
    return table(header, rows)


def machine_table(runs: list[Run]) -> str:
    header = ["run", "device", "params", "train", "eval", "total", "samples/s", "status"]
    rows = []
    for run in runs:
        speed = finite(run.get("train_samples_per_s"))
        rows.append([run.name, run.get("device") or "-", fmt_int(run.get("params")),
                     fmt_seconds(run.timing("train_s")), fmt_seconds(run.timing("eval_s")),
                     fmt_seconds(run.timing("total_s")),
                     f"{speed:,.0f}" if speed is not None else "-", status_text(run, None)])
    return table(header, rows)


def page(runs: list[Run], keys: list[str], common: dict, groups: list[Group], totals: dict,
         pictures: list[tuple[Path, str]], sources: list[str], metric: Optional[str]) -> str:
    """The whole report as one HTML string."""
    best = runs[0] if runs and runs[0].ok else None
    header, rows = table_rows(runs, keys, error_width=None)
    classes = ["first" if run is best else ("" if run.ok else "bad") for run in runs]
    params = totals.get("params")
    summary = [
        ("runs", f"{totals['runs']} ({totals['completed']} completed"
                 + (f", {totals['not_completed']} not" if totals["not_completed"] else "") + ")"),
        ("monitored metric", metric or "-"),
        ("best run", f"{best.name}: {fmt_metric(best.metric, best.best)} (epoch {best.best_epoch})" if best else "-"),
        ("swept", ", ".join(keys) or "-"),
        ("common overrides", " ".join(f"{k}={v}" if v else k for k, v in common.items()) or "-"),
        ("device", ", ".join(totals["devices"]) or "-"),
        ("parameters", "-" if not params else fmt_int(params[0]) if params[0] == params[1]
         else f"{fmt_int(params[0])} … {fmt_int(params[1])}"),
        ("train / eval time (all runs)", f"{fmt_seconds(totals['train_s'])} / {fmt_seconds(totals['eval_s'])}"),
        ("run time (sum of the runs)", fmt_seconds(totals["runs_total_s"])),
        ("wall clock (first start to last finish)", fmt_seconds(totals["wall_s"])),
    ]
    parts = [
        "<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>trainlab report: {esc(', '.join(sources))}</title><style>{CSS}</style></head><body>",
        "<h1>trainlab report</h1>",
        f'<p class="sub">{esc(", ".join(sources))} · written {esc(datetime.now().strftime("%Y-%m-%d %H:%M"))}</p>',
        figures(summary),
        f"<h2>Runs ({len(runs)}), best first</h2>", table(header, rows, classes),
    ]
    if groups:
        group_header, group_body = group_rows(groups, keys)
        parts += ["<h2>Groups: the same run over seeds / folds</h2>", table(group_header, group_body),
                  '<p class="small">mean ± sample standard deviation (n-1) over the completed runs of each group; '
                  "'-' where a group has a single run.</p>"]
    if pictures:
        parts += ["<h2>Plots</h2>", '<div class="plots">' + "".join(image(path, caption) for path, caption in pictures)
                  + "</div>"]
    parts += ["<h2>Choices</h2>", choices_table(runs),
              "<h2>Machine and timing</h2>", machine_table(runs),
              '<p class="small">Written by <code>trainlab report</code>; the figures come from each run\'s '
              "summary.json, .hydra/overrides.yaml and TensorBoard events.</p>",
              "</body></html>"]
    return "\n".join(parts) + "\n"
