"""The console: a rich progress bar per epoch, one line per epoch, a closing table."""

from __future__ import annotations

import contextlib
import logging
from typing import Iterator, Optional

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

# Under Hydra the root logger writes to <run>/train.log only: the console is rich's.
log = logging.getLogger("trainlab")


def format_metric(name: str, value: Optional[float]) -> str:
    if value is None:
        return "-"
    return f"{100 * value:.2f}%" if name.endswith("acc") else f"{value:.4f}"


class EpochBar:
    """The handle the trainer moves: advance() every step (no host sync), loss() at log intervals."""

    def __init__(self, progress: Optional[Progress], task: Optional[int]):
        self._progress = progress
        self._task = task

    def advance(self) -> None:
        if self._progress is not None:
            self._progress.advance(self._task)

    def loss(self, value: float) -> None:
        if self._progress is not None:
            self._progress.update(self._task, loss=f"{value:.4f}")


class ConsoleReporter:
    def __init__(self, progress: bool = True, console: Optional[Console] = None):
        self.console = console or Console()
        # live bars only on a terminal: in logs and pipes they would be noise
        self.show_progress = progress and self.console.is_terminal
        self._progress: Optional[Progress] = None

    @contextlib.contextmanager
    def fitting(self) -> Iterator[None]:
        """The span of training, during which one transient progress bar per epoch is shown."""
        if not self.show_progress:
            yield
            return
        self._progress = Progress(
            TextColumn("[bold]epoch {task.fields[epoch]}"), BarColumn(), MofNCompleteColumn(),
            TextColumn("loss {task.fields[loss]}"), TimeElapsedColumn(), TimeRemainingColumn(),
            console=self.console, transient=True,
        )
        with self._progress:
            yield
        self._progress = None

    @contextlib.contextmanager
    def epoch(self, epoch: int, epochs: int, steps: int) -> Iterator[EpochBar]:
        if self._progress is None:
            yield EpochBar(None, None)
            return
        task = self._progress.add_task("train", total=steps, epoch=f"{epoch}/{epochs}", loss="-")
        try:
            yield EpochBar(self._progress, task)
        finally:
            self._progress.remove_task(task)

    def epoch_line(self, epoch: int, epochs: int, metrics: dict[str, float], lr: float, seconds: float,
                   is_best: bool) -> None:
        width = len(str(epochs))
        parts = [f"epoch {epoch:>{width}}/{epochs}"]
        for split in ("train", "val"):
            parts.append(f"{split} loss {format_metric('loss', metrics[f'{split}/loss'])} "
                         f"acc {format_metric('acc', metrics[f'{split}/acc'])}")
        parts += [f"lr {lr:.3g}", f"{seconds:.1f}s"]
        line = "  ".join(parts)
        log.info(line + ("  * best" if is_best else ""))
        self.console.print(line + ("  [green]* best[/green]" if is_best else ""), highlight=False, soft_wrap=True)

    def model_table(self, rows, total: int, trainable: int) -> None:
        table = Table(title="model", show_header=True, header_style="bold", show_lines=False)
        for column, justify in (("layer", "left"), ("type", "left"), ("output", "right"), ("params", "right")):
            table.add_column(column, justify=justify)
        for row in rows:
            depth = row.name.count(".")
            table.add_row("  " * depth + row.name.rsplit(".", 1)[-1], row.kind, row.output_shape, f"{row.params:,}")
        table.caption = f"{total:,} parameters ({trainable:,} trainable)"
        self.console.print(table)
        log.info("model: %s parameters (%s trainable)", f"{total:,}", f"{trainable:,}")

    def info(self, message: str) -> None:
        log.info(message)
        self.console.print(message, highlight=False, soft_wrap=True)

    def closing_table(self, summary: dict) -> None:
        best = summary["best"]
        table = Table(title="trainlab: results", show_header=True, header_style="bold")
        table.add_column("")
        table.add_column("value", justify="right")
        table.add_row(f"best {best['metric']}", f"{format_metric(best['metric'], best['value'])} (epoch {best['epoch']})")
        for name in ("acc", "loss"):
            table.add_row(f"test {name}", format_metric(name, (summary["test"] or {}).get(name)))
        if "test_tta" in summary:
            table.add_row("test acc with TTA", format_metric("acc", summary["test_tta"]["acc"]))
        if "target_test" in summary:  # domain adaptation: the target domain's test split
            adaptation = summary.get("adaptation") or {}
            table.add_row(f"target test acc ({adaptation.get('domain', 'target')})",
                          format_metric("acc", summary["target_test"]["acc"]))
        table.add_row("epochs run", f"{summary['epochs_run']}/{summary['epochs']}")
        table.add_row("train time", f"{summary['time']['train_s']:.1f} s")
        table.add_row("samples/s (train)", f"{summary['train_samples_per_s']:,.0f}")
        table.add_row("device", summary["device"])
        table.add_row("parameters", f"{summary['params']:,}")
        self.console.print(table)
        log.info("best %s %.6f (epoch %s); test %s", best["metric"], best["value"], best["epoch"], summary["test"])
        self.console.print(f"run folder: {summary['run_dir']}", highlight=False, soft_wrap=True)
