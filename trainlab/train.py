"""The Trainer: fit (epochs of steps, validation each epoch, best/last checkpoints) and evaluate.

It receives built objects (model, optimizer, schedule, loaders, writer, reporter, checkpointer, EMA,
penalty) and never reads raw config. In the per-step path there is no host synchronisation: losses,
correct counts and the gradient norm stay in device tensors and are read (.item()) only at log
intervals and epoch ends.

Training dynamics, per optimizer step (`self.step` counts optimizer steps):
- `accumulate` k: gradients of k micro-batches are summed, each loss scaled by 1/k (by 1/j for the
  last, partial group of j < k micro-batches of an epoch, so that step is a mean too), then one step.
- the weight penalty (regularization.WeightPenalty) is added once per optimizer step.
- fp16 autocast scales the loss with a GradScaler; grads are unscaled before clipping/norms.
- clip_grad_norm (total L2 norm), then clip_grad_value (per element); the pre-clip total norm is logged
  as train/grad_norm at log intervals.
- the schedule steps once per optimizer step, except a schedule with `needs_metric = True`
  (ReduceLROnPlateau-like), which steps once per epoch with the monitored validation metric.
- the EMA model is updated every `ema_every` optimizer steps.
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
    stopped_early: Optional[str] = None  # the reason, when early stopping ended the run


class EarlyStopping:
    """Stop when `monitor` has not improved by more than `min_delta` for `patience` epochs in a row."""

    def __init__(self, monitor: str, mode: str, patience: int, min_delta: float = 0.0):
        self.monitor, self.mode, self.patience, self.min_delta = monitor, mode, patience, min_delta
        self.best: Optional[float] = None
        self.best_epoch: Optional[int] = None
        self.bad_epochs = 0

    def update(self, epoch: int, metrics: dict[str, float]) -> Optional[str]:
        """Record this epoch's metrics; return the reason to stop, or None to go on."""
        value = metrics[self.monitor]
        if self.best is None or (value > self.best + self.min_delta if self.mode == "max"
                                 else value < self.best - self.min_delta):
            self.best, self.best_epoch, self.bad_epochs = value, epoch, 0
            return None
        self.bad_epochs += 1
        if self.bad_epochs < self.patience:
            return None
        return (f"{self.monitor} did not improve by more than {self.min_delta:g} for {self.patience} epochs "
                f"(best {self.best:.4g} at epoch {self.best_epoch})")

    def state_dict(self) -> dict:
        return {"best": self.best, "best_epoch": self.best_epoch, "bad_epochs": self.bad_epochs}

    def load_state_dict(self, state: dict) -> None:
        self.best, self.best_epoch, self.bad_epochs = state["best"], state["best_epoch"], state["bad_epochs"]


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
        amp_dtype: torch.dtype = torch.bfloat16,
        log_every: int = 50,
        writer: Any = None,
        reporter: Optional[ConsoleReporter] = None,
        checkpointer: Optional[Checkpointer] = None,
        mix: Optional[Callable] = None,
        forward: Optional[Callable] = None,
        accumulate: int = 1,
        clip_grad_norm: Optional[float] = None,
        clip_grad_value: Optional[float] = None,
        penalty: Optional[Callable[[], torch.Tensor]] = None,
        ema: Optional[nn.Module] = None,
        ema_every: int = 1,
        ema_evaluate: bool = True,
        monitor: Optional[str] = None,
        mode: Optional[str] = None,
        early_stopping: Optional[EarlyStopping] = None,
    ):
        self.model = model
        self.forward = forward or model  # e.g. torch.compile(model); state dicts always come from `model`
        self.optimizer = optimizer
        self.scheduler = scheduler
        self.device = device
        self.label_smoothing = label_smoothing
        self.amp = amp
        self.amp_dtype = amp_dtype
        # bf16 has fp32's exponent range and needs no loss scaling; fp16 does
        self.scaler = (torch.amp.GradScaler(device.type) if amp and amp_dtype == torch.float16 else None)
        self.log_every = log_every
        self.writer = writer
        self.reporter = reporter or ConsoleReporter(progress=False)
        self.checkpointer = checkpointer
        self.mix = mix  # batch-level mixing (mixup/cutmix): (images, labels, generator) -> (images, soft targets)
        if accumulate < 1:
            raise ValueError(f"accumulate={accumulate} must be >= 1")
        self.accumulate = accumulate
        self.clip_grad_norm = clip_grad_norm
        self.clip_grad_value = clip_grad_value
        self.penalty = penalty
        self.ema = ema
        self.ema_every = ema_every
        self.ema_evaluate = ema_evaluate
        self.monitor = monitor or (checkpointer.monitor if checkpointer is not None else "val/acc")
        self.mode = mode or (checkpointer.mode if checkpointer is not None else "max")
        self.early_stopping = early_stopping
        self.step = 0
        # (an evaluation-only Trainer may have no optimizer)
        self._params = [p for group in optimizer.param_groups for p in group["params"]] if optimizer else []

    @property
    def steps_on_metric(self) -> bool:
        """A ReduceLROnPlateau-like schedule (needs_metric = True) steps once per epoch on the monitor."""
        return bool(getattr(self.scheduler, "needs_metric", False))

    def _autocast(self):
        return torch.autocast(self.device.type, dtype=self.amp_dtype, enabled=self.amp)

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

    def _grads(self) -> list[torch.Tensor]:
        return [p.grad for p in self._params if p.grad is not None]

    def optimizer_step(self, want_norm: bool) -> Optional[torch.Tensor]:
        """Unscale (fp16), clip, step the optimizer (and the per-step schedule); return the pre-clip
        total gradient norm as a device tensor when clipping computed it or `want_norm` asks for it."""
        if self.scaler is not None and (want_norm or self.clip_grad_norm or self.clip_grad_value):
            self.scaler.unscale_(self.optimizer)
        norm = None
        if self.clip_grad_norm is not None:
            norm = torch.nn.utils.clip_grad_norm_(self._params, self.clip_grad_norm, foreach=True)
        elif want_norm:
            norm = torch.nn.utils.get_total_norm(self._grads(), foreach=True)
        if self.clip_grad_value is not None:
            torch.nn.utils.clip_grad_value_(self._params, self.clip_grad_value, foreach=True)
        if self.scaler is not None:
            self.scaler.step(self.optimizer)  # skipped (without a sync here) when the grads hold inf/nan
            self.scaler.update()
        else:
            self.optimizer.step()
        if not self.steps_on_metric:
            self.scheduler.step()
        self.step += 1
        if self.ema is not None and self.step % self.ema_every == 0:
            self.ema.update_parameters(self.model)
        return norm

    def train_epoch(self, loader, bar) -> dict[str, float]:
        """One pass over `loader`; returns the epoch's mean train/loss and train/acc."""
        self.model.train()
        loss_sum = torch.zeros((), device=self.device)
        correct = torch.zeros((), device=self.device, dtype=torch.long)
        window_loss = torch.zeros((), device=self.device)
        window_penalty = torch.zeros((), device=self.device)
        window_batches = window_steps = 0
        grad_norm = None
        seen = 0
        batches = len(loader)
        last = batches - 1
        k = self.accumulate
        for index, (images, labels) in enumerate(loader):
            position = index % k
            group = min(k, batches - (index - position))  # micro-batches in this optimizer step
            stepping = position == group - 1
            targets = labels
            if self.mix is not None:
                images, targets = self.mix(images, labels, loader.generator)
                labels = targets.argmax(dim=1)  # train/acc counts the dominant label of a mixed sample
            if position == 0:
                self.optimizer.zero_grad(set_to_none=True)
            with self._autocast():
                logits = self.forward(images)
                loss = F.cross_entropy(logits, targets, label_smoothing=self.label_smoothing)
            objective = loss / group if group > 1 else loss
            penalty = None
            if self.penalty is not None and stepping:  # once per optimizer step, on the weights
                penalty = self.penalty()
                objective = objective + penalty
            (self.scaler.scale(objective) if self.scaler is not None else objective).backward()
            with torch.no_grad():
                batch = labels.shape[0]
                detached = loss.detach().float()
                loss_sum += detached * batch
                window_loss += detached
                correct += (logits.argmax(dim=1) == labels).sum()
                if penalty is not None:
                    window_penalty += penalty.detach()
            seen += batch
            window_batches += 1
            bar.advance()
            if not stepping:
                continue
            logging = (self.step + 1) % self.log_every == 0 or index == last
            lrs_used = self.lrs() if logging else None  # the rates this step uses (the schedule moves them after)
            norm = self.optimizer_step(want_norm=logging)
            window_steps += 1
            if norm is not None:
                grad_norm = norm
            if logging:
                mean_loss = (window_loss / window_batches).item()  # the only host syncs of the step loop
                scalars = {"train/loss": mean_loss, **lrs_used}
                if grad_norm is not None:
                    scalars["train/grad_norm"] = grad_norm.item()
                if self.penalty is not None:
                    scalars["train/penalty"] = (window_penalty / window_steps).item()
                self._log(scalars)
                bar.loss(mean_loss)
                window_loss.zero_()
                window_penalty.zero_()
                window_batches = window_steps = 0
        return {"train/loss": (loss_sum / max(seen, 1)).item(), "train/acc": correct.item() / max(seen, 1),
                "samples": seen}

    @torch.inference_mode()
    def evaluate(self, loader, model: Optional[Callable] = None) -> dict[str, float]:
        """Mean cross-entropy (no label smoothing) and accuracy over `loader` of `model` (default: the model)."""
        model = model if model is not None else self.forward
        if isinstance(model, nn.Module):
            model.eval()
        self.model.eval()
        loss_sum = torch.zeros((), device=self.device)
        correct = torch.zeros((), device=self.device, dtype=torch.long)
        seen = 0
        for images, labels in loader:
            with self._autocast():
                if images.dim() == 5:  # TTA views [V, N, ...]: average the predicted probabilities
                    probs = torch.stack([model(view).float().softmax(dim=1) for view in images]).mean(dim=0)
                    logits = probs.clamp_min(1e-12).log()  # log-probabilities: cross-entropy is their NLL
                else:
                    logits = model(images)
            loss_sum += F.cross_entropy(logits.float(), labels, reduction="sum")
            correct += (logits.argmax(dim=1) == labels).sum()
            seen += labels.shape[0]
        return {"loss": (loss_sum / max(seen, 1)).item(), "acc": correct.item() / max(seen, 1)}

    def validate(self, val_loader) -> dict[str, float]:
        """val/* for the model, and val_ema/* for the EMA model when there is one to score."""
        val = self.evaluate(val_loader)
        metrics = {"val/loss": val["loss"], "val/acc": val["acc"]}
        if self.ema is not None and self.ema_evaluate:
            averaged = self.evaluate(val_loader, self.ema.module)
            metrics.update({"val_ema/loss": averaged["loss"], "val_ema/acc": averaged["acc"]})
        return metrics

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
        if self.scaler is not None:
            state["scaler"] = self.scaler.state_dict()
        if self.ema is not None:
            state["ema"] = cpu_state(self.ema.state_dict())  # module.* weights and buffers + n_averaged
        if self.early_stopping is not None:
            state["early_stopping"] = self.early_stopping.state_dict()
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
        if self.scaler is not None and "scaler" in payload:
            self.scaler.load_state_dict(payload["scaler"])
        if self.ema is not None and "ema" in payload:
            self.ema.load_state_dict(payload["ema"])
        if self.early_stopping is not None and "early_stopping" in payload:
            self.early_stopping.load_state_dict(payload["early_stopping"])
        return payload["epoch"] + 1

    @property
    def best_from_ema(self) -> bool:
        """best.pt is chosen on, and holds, the EMA model when the checkpointer monitors val_ema/*."""
        return (self.ema is not None and self.checkpointer is not None
                and self.checkpointer.monitor.startswith("val_ema/"))

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
                val = self.validate(val_loader)
                result.eval_seconds += time.perf_counter() - trained
                result.train_seconds += trained - started
                result.samples_seen += train_metrics.pop("samples")
                metrics = {**train_metrics, **val}
                self._log({"train/acc": metrics["train/acc"], **val, "epoch": epoch})
                if self.steps_on_metric:
                    self.scheduler.step(metrics[self.monitor])
                stop = self.early_stopping.update(epoch, metrics) if self.early_stopping is not None else None
                is_best = False
                if self.checkpointer is not None:
                    best_state = (lambda: cpu_state(self.ema.module.state_dict())) if self.best_from_ema else None
                    is_best = self.checkpointer.update(epoch, metrics, cpu_state(self.model.state_dict()),
                                                       self.resume_state(train_loader), best_state=best_state)
                result.history.append({"epoch": epoch, **metrics, "lr": self.lr})
                result.epochs_run = epoch
                self.reporter.epoch_line(epoch, epochs, metrics, self.lr, time.perf_counter() - started, is_best)
                if stop is not None:
                    result.stopped_early = stop
                    self.reporter.info(f"early stopping after epoch {epoch}: {stop}")
                    break
        if self.writer is not None:
            self.writer.flush()
        return result
