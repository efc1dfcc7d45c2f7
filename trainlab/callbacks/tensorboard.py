"""<run>/tensorboard/: train/* and lr at log intervals, epoch metrics, test metrics and the HParams tab."""

from __future__ import annotations

from typing import Optional

from trainlab.callbacks.base import Callback, EpochEnd
from trainlab.checks import is_int, require

# The custom-scalars tab: train and val curves of one metric on one chart, so the gap shows at a glance.
TRAIN_VAL_LAYOUT = {"train vs val": {
    "loss": ["Multiline", ["train/loss", "val/loss", "val_ema/loss"]],
    "accuracy": ["Multiline", ["train/acc", "val/acc", "val_ema/acc"]],
}}


def config_text(config: dict) -> str:
    """The resolved config as YAML in a Markdown code block (TensorBoard's text tab renders Markdown)."""
    from omegaconf import OmegaConf

    yaml = OmegaConf.to_yaml(OmegaConf.create(config))
    return "\n".join("    " + line for line in yaml.splitlines())


class TensorBoard(Callback):
    """One SummaryWriter for the run (x axis: optimizer step), opened at fit start."""

    order = 90  # last: other callbacks write through it, and it closes the event file at the very end
    resume_free = ("*",)

    def __init__(self, hparams: bool = True, flush_secs: int = 120):
        self.hparams = require("hparams", hparams, lambda v: isinstance(v, bool), "true or false")
        self.flush_secs = require("flush_secs", flush_secs, lambda v: is_int(v) and v >= 1, "a whole number >= 1")
        self._writer = None
        self.closed = False
        self.purge_step = None  # a resumed run: events at or after its step, from before, are superseded

    @property
    def writer(self):
        """The run's SummaryWriter, opened on first use (None without a run folder, or once closed)."""
        if self._writer is None and not self.closed and getattr(self, "run", None) is not None \
                and self.run.run_dir is not None:
            from torch.utils.tensorboard import SummaryWriter  # heavy import: only when a run logs

            self._writer = SummaryWriter(log_dir=str(self.run.run_dir / "tensorboard"), flush_secs=self.flush_secs,
                                         purge_step=self.purge_step)
        return self._writer

    @writer.setter
    def writer(self, writer) -> None:  # e.g. a test's fake writer
        self._writer = writer

    def on_fit_start(self, trainer, start_epoch: int) -> None:
        resumed = trainer.step > 0
        if resumed and self._writer is None:  # points an interrupted run logged after its last.pt go
            self.purge_step = trainer.step + 1
        if self.run.config and not resumed and self.writer is not None:  # a resumed run has them already
            self.writer.add_custom_scalars(TRAIN_VAL_LAYOUT)
            self.writer.add_text("config", config_text(self.run.config), 0)

    def scalars(self, values: dict[str, float], step: int) -> None:
        if self.writer is not None:
            for tag, value in values.items():
                self.writer.add_scalar(tag, value, step)

    def on_log(self, trainer, scalars: dict[str, float]) -> None:
        self.scalars(scalars, trainer.step)

    def on_epoch_end(self, trainer, end: EpochEnd) -> None:
        metrics = {k: v for k, v in end.metrics.items() if k != "train/loss"}  # train/loss: per log interval
        self.scalars({**metrics, "epoch": end.epoch}, trainer.step)

    def on_checkpoint(self, trainer) -> None:
        if self._writer is not None:
            self._writer.flush()

    def on_fit_end(self, trainer, result, error: Optional[BaseException]) -> None:
        if self._writer is not None:
            self._writer.flush()
            if error is not None:
                self.close()

    def on_test_end(self, trainer, summary: dict) -> None:
        for split in ("test", "test_tta", "target_test", "target_test_tta"):
            self.scalars({f"{split}/{name}": value for name, value in (summary.get(split) or {}).items()},
                         trainer.step)
        if self.hparams and self.writer is not None:
            write_session(self.run.run_dir / "tensorboard" / HPARAMS_RUN,
                          *hparams(self.run.config, summary, swept_keys(self.run.run_dir)), summary["steps"])
        self.close()

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None
        self.closed = True


HPARAMS_RUN = "hparams"  # <run>/tensorboard/hparams/: the run's HParams session and its result scalars


def write_session(folder, values: dict, metrics: dict, step: int) -> None:
    """The run's HParams session (start and end) and its results as scalars in `folder`, and no experiment
    record. Why not SummaryWriter.add_hparams: it also writes an experiment record into every run, and
    TensorBoard uses the first such record it finds for the whole log folder, whose hparams come from that
    one run, so every column reads "does not differ" across a sweep. Without one, TensorBoard builds the
    experiment from all the sessions (the values that differ are marked so), and its metrics from the
    scalars of the sessions' folders: here only the results."""
    from torch.utils.tensorboard import SummaryWriter
    from torch.utils.tensorboard.summary import hparams as hparams_summaries

    _, session_start, session_end = hparams_summaries(values, metrics)
    with SummaryWriter(log_dir=str(folder)) as writer:
        events = writer.file_writer  # (SummaryWriter has no public call for a prepared Summary proto)
        events.add_summary(session_start, step)
        events.add_summary(session_end, step)
        for tag, value in metrics.items():
            writer.add_scalar(tag, value, step)


def swept_keys(run_dir) -> list[str]:
    """The keys this run's command line (or its sweep job) set: Hydra's .hydra/overrides.yaml of the run."""
    from pathlib import Path

    path = Path(run_dir) / ".hydra" / "overrides.yaml"
    if not path.is_file():
        return []
    from omegaconf import OmegaConf

    keys = []
    for item in OmegaConf.to_container(OmegaConf.load(path)) or []:
        key = str(item).split("=", 1)[0].lstrip("+~")
        if "=" in str(item) and "." in key and not key.startswith(("hydra.", "hydra/")):
            keys.append(key)
    return keys


def hparam_value(value):
    """A config value as TensorBoard's HParams take it (numbers, strings, booleans)."""
    if isinstance(value, bool) or isinstance(value, (int, float, str)):
        return value
    return str(value)


def hparams(config: dict, summary: dict, keys: list[str] = ()) -> tuple[dict, dict]:
    """The run's choices, key values and the keys its command line set (`keys`), and its results."""
    from omegaconf import OmegaConf

    values = {group: str(option) for group, option in summary.get("choices", {}).items()}
    values.update({"optimizer.lr": float(config["optimizer"].get("lr", 0.0)),
                   "trainer.batch_size": config["trainer"]["batch_size"],
                   "trainer.epochs": config["trainer"]["epochs"], "seed": config["seed"]})
    tree = OmegaConf.create(config)
    for key in keys:
        value = OmegaConf.select(tree, key, default=None)
        if value is not None and not OmegaConf.is_config(value):
            values[key] = hparam_value(value)
    best = summary["best"]
    metrics = {f"hparam/best_{best['metric'].replace('/', '_')}": best["value"]}
    if summary.get("test") is not None:
        metrics.update({"hparam/test_acc": summary["test"]["acc"], "hparam/test_loss": summary["test"]["loss"]})
    if summary.get("target_test") is not None:  # domain adaptation: the score on the target domain
        metrics["hparam/target_test_acc"] = summary["target_test"]["acc"]
    return values, metrics
