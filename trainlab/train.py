"""The Trainer: fit (epochs of steps, validation each epoch, best/last checkpoints) and evaluate.

It receives built objects (model, optimizer, schedule, loaders, writer, reporter, checkpointer) and
never reads raw config. In the per-step path there is no host synchronisation: losses and correct
counts accumulate in device tensors and are read (.item()) only at log intervals and epoch ends.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Optional

import torch
import torch.nn.functional as F
from torch import nn

from trainlab.checkpoint import Checkpointer, cpu_state
from trainlab.errors import TrainingDiverged
from trainlab.monitor.console import ConsoleReporter


@dataclass
class FitResult:
    epochs_run: int
    train_seconds: float = 0.0
    eval_seconds: float = 0.0
    samples_seen: int = 0
    history: list[dict[str, float]] = field(default_factory=list)


class Trainer:
    def __init__(
        self,
        model: nn.Module,
        optimizer: torch.optim.Optimizer,
        scheduler: torch.optim.lr_scheduler.LRScheduler,
        device: torch.device,
        *,
        label_smoothing: float = 0.0,
        amp: bool = False,
        log_every: int = 50,
        writer: Any = None,
        reporter: Optional[ConsoleReporter] = None,
        checkpointer: Optional[Checkpointer] = None,
        mix: Optional[Callable] = None,
    ):
        self.model = model
        self.optimizer = optimizer
        self.scheduler = scheduler
        self.device = device
        self.label_smoothing = label_smoothing
        # bf16 autocast needs no loss scaling (same exponent range as fp32)
        self.amp = amp
        self.log_every = log_every
        self.writer = writer
        self.reporter = reporter or ConsoleReporter(progress=False)
        self.checkpointer = checkpointer
        self.mix = mix  # batch-level mixing (mixup/cutmix): (images, labels, generator) -> (images, soft targets)
        self.step = 0

    def _autocast(self):
        return torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.amp)

    def _log(self, scalars: dict[str, float]) -> None:
        if self.writer is not None:
            for tag, value in scalars.items():
                self.writer.add_scalar(tag, value, self.step)

    @property
    def lr(self) -> float:
        return float(self.optimizer.param_groups[0]["lr"])

    def lrs(self) -> dict[str, float]:
        """`lr` (the first parameter group's) plus `lr/<name>` for further named groups (e.g. lr/backbone)."""
        groups = self.optimizer.param_groups
        return {"lr": float(groups[0]["lr"]),
                **{f"lr/{g['name']}": float(g["lr"]) for g in groups[1:] if "name" in g}}

    def train_epoch(self, loader, bar) -> dict[str, float]:
        """One pass over `loader`; returns the epoch's mean train/loss and train/acc."""
        self.model.train()
        loss_sum = torch.zeros((), device=self.device)
        correct = torch.zeros((), device=self.device, dtype=torch.long)
        window_loss = torch.zeros((), device=self.device)
        window_steps = 0
        seen = 0
        last = len(loader) - 1
        for index, (images, labels) in enumerate(loader):
            targets = labels
            if self.mix is not None:
                images, targets = self.mix(images, labels, loader.generator)
                labels = targets.argmax(dim=1)  # train/acc counts the dominant label of a mixed sample
            with self._autocast():
                logits = self.model(images)
                loss = F.cross_entropy(logits, targets, label_smoothing=self.label_smoothing)
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            lrs_used = self.lrs()  # the rates this step uses (the schedule moves them after the step)
            self.optimizer.step()
            self.scheduler.step()
            self.step += 1
            with torch.no_grad():
                batch = labels.shape[0]
                detached = loss.detach().float()
                loss_sum += detached * batch
                window_loss += detached
                correct += (logits.argmax(dim=1) == labels).sum()
            seen += batch
            window_steps += 1
            bar.advance()
            if self.step % self.log_every == 0 or index == last:
                mean_loss = (window_loss / window_steps).item()  # the only host sync of the step loop
                self._log({"train/loss": mean_loss, **lrs_used})
                bar.loss(mean_loss)
                window_loss.zero_()
                window_steps = 0
        return {"train/loss": (loss_sum / max(seen, 1)).item(), "train/acc": correct.item() / max(seen, 1),
                "samples": seen}

    @torch.inference_mode()
    def evaluate(self, loader) -> dict[str, float]:
        """Mean cross-entropy (no label smoothing) and accuracy of the model over `loader`."""
        self.model.eval()
        loss_sum = torch.zeros((), device=self.device)
        correct = torch.zeros((), device=self.device, dtype=torch.long)
        seen = 0
        for images, labels in loader:
            with self._autocast():
                if images.dim() == 5:  # TTA views [V, N, ...]: average the predicted probabilities
                    probs = torch.stack([self.model(view).float().softmax(dim=1) for view in images]).mean(dim=0)
                    logits = probs.clamp_min(1e-12).log()  # log-probabilities: cross-entropy is their NLL
                else:
                    logits = self.model(images)
            loss_sum += F.cross_entropy(logits.float(), labels, reduction="sum")
            correct += (logits.argmax(dim=1) == labels).sum()
            seen += labels.shape[0]
        return {"loss": (loss_sum / max(seen, 1)).item(), "acc": correct.item() / max(seen, 1)}

    def resume_state(self, train_loader) -> dict:
        """What last.pt needs beyond the weights to continue exactly where training stopped."""
        state = {
            "step": self.step,
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "rng": {"torch": torch.get_rng_state(), "loader": train_loader.generator.get_state()},
        }
        if torch.cuda.is_available():
            state["rng"]["cuda"] = torch.cuda.get_rng_state_all()
        return state

    def load_resume_state(self, payload: dict, train_loader) -> int:
        """Restore what resume_state() saved (plus the weights); return the epoch to continue from."""
        self.model.load_state_dict(payload["model"])
        self.optimizer.load_state_dict(payload["optimizer"])
        self.scheduler.load_state_dict(payload["scheduler"])
        self.step = payload["step"]
        rng = payload["rng"]
        torch.set_rng_state(rng["torch"].cpu())
        train_loader.generator.set_state(rng["loader"].cpu())
        if "cuda" in rng and torch.cuda.is_available():
            torch.cuda.set_rng_state_all([state.cpu() for state in rng["cuda"]])
        return payload["epoch"] + 1

    def fit(self, train_loader, val_loader, epochs: int, start_epoch: int = 1) -> FitResult:
        result = FitResult(epochs_run=start_epoch - 1)
        with self.reporter.fitting():
            for epoch in range(start_epoch, epochs + 1):
                started = time.perf_counter()
                with self.reporter.epoch(epoch, epochs, len(train_loader)) as bar:
                    train_metrics = self.train_epoch(train_loader, bar)
                if not math.isfinite(train_metrics["train/loss"]):
                    raise TrainingDiverged(
                        f"train/loss became {train_metrics['train/loss']} in epoch {epoch} (step {self.step}); "
                        "lower optimizer.lr, add schedule.warmup_epochs, or check the data"
                    )
                trained = time.perf_counter()
                val = self.evaluate(val_loader)
                result.eval_seconds += time.perf_counter() - trained
                result.train_seconds += trained - started
                result.samples_seen += train_metrics.pop("samples")
                metrics = {**train_metrics, "val/loss": val["loss"], "val/acc": val["acc"]}
                self._log({"train/acc": metrics["train/acc"], "val/loss": val["loss"], "val/acc": val["acc"],
                           "epoch": epoch})
                is_best = False
                if self.checkpointer is not None:
                    is_best = self.checkpointer.update(epoch, metrics, cpu_state(self.model.state_dict()),
                                                       self.resume_state(train_loader))
                result.history.append({"epoch": epoch, **metrics, "lr": self.lr})
                result.epochs_run = epoch
                self.reporter.epoch_line(epoch, epochs, metrics, self.lr, time.perf_counter() - started, is_best)
        if self.writer is not None:
            self.writer.flush()
        return result
