"""The Trainer: fit (epochs of optimizer steps, validation each epoch) and the events callbacks hear.

It receives built objects (model, optimizer, schedule, loaders, penalty, mixing, callbacks) and never
reads raw config. In the per-step path there is no host synchronisation: losses, correct counts and the
gradient norm stay in device tensors and are read, in one transfer, only at log intervals and epoch ends.
Checkpoints, TensorBoard, the console, EMA and early stopping are callbacks (trainlab/callbacks/).

Training dynamics, per optimizer step (`self.step` counts optimizer steps):
- `accumulate` k: gradients of k micro-batches are summed, each loss scaled by 1/k (by 1/j for the
  last, partial group of j < k micro-batches of an epoch, so that step is a mean too), then one step.
- the weight penalty (regularization.WeightPenalty) is added once per optimizer step.
- fp16 autocast scales the loss with a GradScaler; grads are unscaled before clipping/norms.
- clip_grad_norm (total L2 norm), then clip_grad_value (per element); the pre-clip total norm is logged
  as train/grad_norm at log intervals.
- the schedule steps once per optimizer step, except a schedule with `needs_metric = True`
  (ReduceLROnPlateau-like), which steps once per epoch with the monitored validation metric.
- a non-finite training loss stops the run (TrainingDiverged) at the log interval where it is first read.
"""

from __future__ import annotations

import contextlib
import math
import signal
import time
from dataclasses import dataclass, field
from typing import Callable, Optional

import torch
import torch.nn.functional as F
from torch import nn

from trainlab.callbacks.base import Callback, CallbackList, EpochEnd
from trainlab.distributed import SINGLE, World
from trainlab.errors import TrainingDiverged
from trainlab.evaluate import evaluate
from trainlab.runtime import autocast


class Interrupted(KeyboardInterrupt):
    """Training stopped by a signal (SIGINT, SIGTERM) at a step boundary; `signal` is its number."""

    def __init__(self, signum: int):
        super().__init__(signum)
        self.signal = signum


@dataclass
class FitResult:
    epochs_run: int
    train_seconds: float = 0.0
    eval_seconds: float = 0.0
    samples_seen: int = 0
    history: list[dict[str, float]] = field(default_factory=list)
    stopped_early: Optional[str] = None  # the reason, when a callback ended the run


@dataclass
class StepSettings:
    """How a batch becomes an optimizer step (trainer.* keys of the same names)."""

    label_smoothing: float = 0.0
    accumulate: int = 1
    clip_grad_norm: Optional[float] = None
    clip_grad_value: Optional[float] = None
    skip_nonfinite: bool = False  # skip a batch whose loss is NaN/Inf (a host sync per step) instead of stopping

    def __post_init__(self):
        if self.accumulate < 1:
            raise ValueError(f"accumulate={self.accumulate} must be >= 1")


SKIPPED_IN_A_ROW = 10  # with skip_nonfinite: this many non-finite batches in a row stop the run all the same


def divergence_advice(amp_dtype: Optional[torch.dtype]) -> str:
    advice = "lower optimizer.lr (or add schedule.warmup_epochs), check the init and the data"
    if amp_dtype == torch.float16:
        advice += "; fp16 may overflow: use trainer.amp_dtype=bf16 (or keep the GradScaler on)"
    return advice


def loader_rng(loader) -> dict:
    """A training loader's random streams: DeviceLoader/StreamLoader say which (the shared order's too, in a
    data-parallel run); any other loader the Trainer runs has one `generator`."""
    if hasattr(loader, "rng_state"):
        return loader.rng_state()
    return {"loader": loader.generator.get_state()}


def set_loader_rng(loader, state: dict) -> None:
    if hasattr(loader, "set_rng_state"):
        loader.set_rng_state(state)
    else:
        loader.generator.set_state(state["loader"].cpu())


class Trainer:
    def __init__(
        self,
        model: nn.Module,
        optimizer: Optional[torch.optim.Optimizer],
        scheduler,
        device: torch.device,
        *,
        steps: Optional[StepSettings] = None,
        amp_dtype: Optional[torch.dtype] = None,  # autocast dtype; None = fp32
        log_every: int = 50,
        monitor: str = "val/acc",  # what a metric-driven schedule (plateau) steps on
        forward: Optional[Callable] = None,
        mix: Optional[Callable] = None,
        penalty: Optional[Callable[[], torch.Tensor]] = None,
        callbacks: Optional[dict[str, Callback]] = None,
        checkpoint_every_steps: Optional[int] = None,
        world: World = SINGLE,
        train_forward: Optional[Callable] = None,
        adaptation=None,
    ):
        self.model = model
        self.forward = forward or model  # e.g. torch.compile(model); state dicts always come from `model`
        # what training steps call: DistributedDataParallel(model) in a data-parallel run (it all-reduces the
        # gradients in backward); evaluation and diagnostics call `forward`, which starts no collective
        self.train_forward = train_forward or self.forward
        self.world = world
        # domain adaptation (trainlab.adaptation.dann.DANN): a target batch joins each source batch, and the
        # domain classifier's loss joins the objective
        self.adaptation = adaptation
        self._rank_rng: Optional[list] = None  # every rank's random streams, gathered where last.pt may be written
        self.optimizer = optimizer
        self.scheduler = scheduler
        self.device = device
        self.settings = steps or StepSettings()
        self.amp_dtype = amp_dtype
        # bf16 has fp32's exponent range and needs no loss scaling; fp16 does
        self.scaler = torch.amp.GradScaler(device.type) if amp_dtype == torch.float16 else None
        self.log_every = log_every
        self.monitor = monitor
        self.mix = mix  # batch-level mixing (mixup/cutmix): (images, labels, generator) -> (images, soft targets)
        self.penalty = penalty
        self.callbacks = CallbackList(callbacks)
        self.checkpoint_every_steps = checkpoint_every_steps  # a save point inside epochs (None: epoch ends only)
        self.resume_progress: Optional[dict] = None  # where a resumed run starts inside its first epoch
        self.step = 0
        self.epoch = 0
        self.stop_signal: Optional[int] = None  # set by a signal handler: stop at the next step boundary
        self.skipped = 0  # batches skipped for a non-finite loss (skip_nonfinite)
        self.train_loader = None  # during fit
        self.val_loader = None
        self._params = [p for group in optimizer.param_groups for p in group["params"]] if optimizer else []

    # ------------------------------------------------------------ pieces

    @property
    def steps_on_metric(self) -> bool:
        """A ReduceLROnPlateau-like schedule (needs_metric = True) steps once per epoch on the monitor."""
        return bool(getattr(self.scheduler, "needs_metric", False))

    @property
    def lr(self) -> float:
        return float(self.optimizer.param_groups[0]["lr"])

    def lrs(self) -> dict[str, float]:
        """`lr` (the first parameter group's) plus `lr/<name>` for each further group that learns at a rate
        of its own (e.g. lr/backbone); groups at the same rate (e.g. differing only in weight decay)
        share one curve."""
        groups = self.optimizer.param_groups
        rates = {"lr": float(groups[0]["lr"])}
        scales = {groups[0].get("lr_scale", 1.0)}
        for group in groups[1:]:
            scale = group.get("lr_scale", 1.0)
            if "name" in group and scale not in scales:
                scales.add(scale)
                rates[f"lr/{group['name'].removesuffix('/no_decay')}"] = float(group["lr"])
        return rates

    def evaluate(self, loader, model: Optional[Callable] = None, confusion_classes: Optional[int] = None) -> dict:
        """evaluate() with this trainer's device and precision (model: default the trained one)."""
        return evaluate(model if model is not None else self.forward, loader, self.device, self.amp_dtype,
                        confusion_classes=confusion_classes, world=self.world)

    def diverged(self, value: float, images=None, targets=None, seen: str = "at the log point of") -> TrainingDiverged:
        """TrainingDiverged with the step, epoch, lr and (when the batch is at hand) the first non-finite layer."""
        layer = None
        if images is not None:
            from trainlab.diagnostics.nonfinite import first_nonfinite

            def loss_of():
                with autocast(self.device, self.amp_dtype):
                    return F.cross_entropy(self.forward(images), targets)

            layer = first_nonfinite(self.model, loss_of)
        details = {"step": self.step, "epoch": self.epoch, "lr": self.lr, "loss": value, "layer": layer}
        where = f"; first non-finite: {layer}" if layer else ""
        return TrainingDiverged(
            f"train/loss became {value} {seen} step {self.step} (epoch {self.epoch}, lr {self.lr:.3g}){where}; "
            f"{divergence_advice(self.amp_dtype)}", details)

    def _grads(self) -> list[torch.Tensor]:
        return [p.grad for p in self._params if p.grad is not None]

    def optimizer_step(self, want_norm: bool) -> Optional[torch.Tensor]:
        """Unscale (fp16), clip, step the optimizer (and the per-step schedule); return the pre-clip
        total gradient norm as a device tensor when clipping computed it or `want_norm` asks for it."""
        clip_norm, clip_value = self.settings.clip_grad_norm, self.settings.clip_grad_value
        if self.scaler is not None and (want_norm or clip_norm or clip_value):
            self.scaler.unscale_(self.optimizer)
        norm = None
        if clip_norm is not None:
            norm = torch.nn.utils.clip_grad_norm_(self._params, clip_norm, foreach=True)
        elif want_norm:
            norm = torch.nn.utils.get_total_norm(self._grads(), foreach=True)
        if clip_value is not None:
            torch.nn.utils.clip_grad_value_(self._params, clip_value, foreach=True)
        if self.scaler is not None:
            self.scaler.step(self.optimizer)  # skipped (without a sync here) when the grads hold inf/nan
            self.scaler.update()
        else:
            self.optimizer.step()
        if not self.steps_on_metric:
            self.scheduler.step()
        self.step += 1
        for callback in self.callbacks.stepping:
            callback.on_step(self)
        return norm

    # ------------------------------------------------------------ one epoch

    def train_epoch(self, loader, progress: Optional[dict] = None) -> dict[str, float]:
        """One pass over `loader`; returns the epoch's mean train/loss, train/acc, samples and the lr of its
        last optimizer step. `progress` (from a last.pt written inside this epoch): continue from its batch
        with its running sums, the loader already positioned there (loader.continue_epoch)."""
        self.model.train()
        zero = torch.zeros((), device=self.device)
        loss_sum, window_loss, window_penalty = zero.clone(), zero.clone(), zero.clone()
        correct = torch.zeros((), device=self.device, dtype=torch.long)
        window_batches = window_steps = 0
        grad_norm = None
        seen = 0
        last_lr = self.lr
        in_a_row = 0  # non-finite batches skipped in a row (skip_nonfinite)
        start = 0
        if progress is not None:
            sums = progress["sums"].to(self.device)
            loss_sum.fill_(sums[0]), window_loss.fill_(sums[1]), window_penalty.fill_(sums[2])
            correct.fill_(progress["correct"])
            grad_norm = progress["grad_norm"].to(self.device) if progress.get("grad_norm") is not None else None
            start, seen, last_lr, in_a_row = progress["batch"], progress["seen"], progress["lr"], progress["in_a_row"]
            window_batches, window_steps = progress["window_batches"], progress["window_steps"]
        batches = len(loader)
        last = batches - 1
        k = self.settings.accumulate
        smoothing = self.settings.label_smoothing
        every = self.checkpoint_every_steps
        world = self.world
        weigh = world.active and hasattr(loader, "global_batch")  # an uneven split of a last partial batch
        adapt = self.adaptation
        for index, (images, labels) in enumerate(loader, start=start):
            position = index % k
            group = min(k, batches - (index - position))  # micro-batches in this optimizer step
            stepping = position == group - 1
            targets = labels
            if self.mix is not None:
                images, targets = self.mix(images, labels, loader.generator)
                labels = targets.argmax(dim=1)  # train/acc counts the dominant label of a mixed sample
            if position == 0:
                self.optimizer.zero_grad(set_to_none=True)
            sources, source_images = images.shape[0], images  # (the diverged() report replays the source batch)
            if adapt is not None:
                images = adapt.join(images, self.step)
            # DDP: gradients are all-reduced once per optimizer step, not per micro-batch (a forward inside
            # no_sync() makes its backward skip the all-reduce)
            syncing = contextlib.nullcontext() if stepping or not world.active else self.train_forward.no_sync()
            with syncing, autocast(self.device, self.amp_dtype):
                logits = self.train_forward(images)
                if adapt is not None:
                    logits, domain_loss = adapt.split(logits)
                loss = F.cross_entropy(logits, targets, label_smoothing=smoothing)
            if self.settings.skip_nonfinite and not bool(torch.isfinite(loss.detach()).all()):  # syncs: opt-in
                self.skipped += 1
                in_a_row += 1
                self.optimizer.zero_grad(set_to_none=True)  # this batch's group contributes nothing
                if in_a_row >= SKIPPED_IN_A_ROW:
                    raise self.diverged(loss.item(), source_images, targets,
                                        seen=f"{in_a_row} batches in a row up to")
                continue
            in_a_row = 0
            objective = loss
            if weigh:  # DDP averages the ranks' gradients: weigh each by its share of the global batch
                objective = objective * (sources * world.size / loader.global_batch(index))
            if adapt is not None:  # a mean over both halves: weighed by this rank's share of the step's images
                share = images.shape[0] * world.size / (loader.global_batch(index) + adapt.target_loader.batch_size) \
                    if weigh else 1.0
                objective = objective + domain_loss * share
            objective = objective / group if group > 1 else objective
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
            if not stepping:
                continue
            logging = (self.step + 1) % self.log_every == 0 or index == last
            lrs_used = self.lrs() if logging else None  # the rates this step uses (the schedule moves them after)
            norm = self.optimizer_step(want_norm=logging)
            window_steps += 1
            if norm is not None:
                grad_norm = norm
            agreed_stop = False
            if logging:
                window = window_loss / window_batches
                extra = adapt.window(self.step) if adapt is not None else {}
                if world.active:  # the ranks' mean, and whether any rank was asked to stop: all stop together
                    stop = torch.tensor(float(self.stop_signal is not None), device=self.device)
                    shared = world.sum(torch.stack([window.float(), stop, *(v.float() for v in extra.values())]))
                    window, agreed_stop = shared[0] / world.size, bool(shared[1] > 0)
                    extra = dict(zip(extra, shared[2:] / world.size))
                scalars = self._read_window(window, grad_norm,
                                            window_penalty / window_steps if self.penalty is not None else None, extra)
                if not math.isfinite(scalars["train/loss"]):
                    raise self.diverged(scalars["train/loss"], source_images, targets)
                scalars.update(lrs_used)
                if self.settings.skip_nonfinite:
                    scalars["train/skipped"] = float(self.skipped)
                last_lr = lrs_used["lr"]
                self.callbacks.fire("on_log", self, scalars)
                window_loss.zero_()
                window_penalty.zero_()
                window_batches = window_steps = 0
            # Ctrl-C or SIGTERM: stop here, between steps (several ranks: at a log point, all of them)
            signalled = agreed_stop if world.active else self.stop_signal is not None
            if signalled and self.stop_signal is None:
                self.stop_signal = signal.SIGINT  # another rank's signal: this one stops as if it had it
            if signalled or (every and self.step % every == 0 and index != last):
                self._gather_rng(loader)
                self.callbacks.fire("on_save_point", self, {
                    "batch": index + 1, "order": loader.epoch_order, "seen": seen, "lr": last_lr,
                    "sums": torch.stack([loss_sum, window_loss, window_penalty]).cpu(), "correct": int(correct),
                    "grad_norm": grad_norm.detach().cpu() if grad_norm is not None else None,
                    "window_batches": window_batches, "window_steps": window_steps, "in_a_row": in_a_row,
                    "epoch": self.epoch})
            if signalled:
                raise Interrupted(self.stop_signal)
        if world.active:  # the ranks' sums and counts, then the means
            loss_total, right, seen = world.totals(loss_sum, correct, seen)
            seen = int(round(seen))
            loss_mean = loss_total / max(seen, 1)
        else:
            loss_mean, right = torch.stack([loss_sum / max(seen, 1), correct.float()]).tolist()
        return {"train/loss": loss_mean, "train/acc": right / max(seen, 1), "samples": seen, "lr": last_lr}

    def _gather_rng(self, loader) -> None:
        """Every rank's random streams (torch's, the loader's), kept for last.pt (written by rank 0 alone):
        a collective, so called where every rank is (epoch ends, save points)."""
        if self.world.active:
            own = {"torch": torch.get_rng_state(), **loader_rng(loader)}
            if self.adaptation is not None:
                own["target"] = self.adaptation.target_loader.rng_state()
            if torch.cuda.is_available():
                own["cuda"] = torch.cuda.get_rng_state_all()
            self._rank_rng = self.world.gather(own)

    @staticmethod
    def _read_window(loss: torch.Tensor, grad_norm: Optional[torch.Tensor], penalty: Optional[torch.Tensor],
                     extra: Optional[dict] = None) -> dict[str, float]:
        """The window's device-side values read in one transfer (the only host sync of the step loop); `extra`:
        more named device values (domain adaptation's)."""
        names, values = ["train/loss", *(extra or {})], [loss, *(extra or {}).values()]
        if grad_norm is not None:
            names.append("train/grad_norm")
            values.append(grad_norm)
        if penalty is not None:
            names.append("train/penalty")
            values.append(penalty)
        return dict(zip(names, torch.stack([v.float() for v in values]).tolist()))

    def validate(self, val_loader) -> dict[str, float]:
        """val/* for the model; callbacks may add their own (the EMA's val_ema/*)."""
        val = self.evaluate(val_loader)
        metrics = {"val/loss": val["loss"], "val/acc": val["acc"]}
        self.callbacks.fire("on_validation_end", self, metrics)
        return metrics

    # ------------------------------------------------------------ resumable state

    def state_dict(self, progress: Optional[dict] = None) -> dict:
        """What last.pt needs beyond the weights to continue exactly where training stopped; `progress`:
        the position and running sums of an epoch stopped inside (a save point)."""
        state = {
            "step": self.step,
            "skipped": self.skipped,
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "rng": {"torch": torch.get_rng_state()},
            "callbacks": self.callbacks.state_dict(),
        }
        if self.train_loader is not None:
            state["rng"].update(loader_rng(self.train_loader))
        if self._rank_rng is not None:
            state["rng"]["ranks"] = self._rank_rng
        if torch.cuda.is_available():
            state["rng"]["cuda"] = torch.cuda.get_rng_state_all()
        if self.scaler is not None:
            state["scaler"] = self.scaler.state_dict()
        if self.adaptation is not None:
            state["adaptation"] = self.adaptation.state_dict()
        if progress is not None:
            state["progress"] = {**progress, "order": progress["order"].cpu() if progress["order"] is not None
                                 else None}
        return state

    def load_state_dict(self, payload: dict, train_loader) -> int:
        """Restore what state_dict() saved (plus the weights); return the epoch to continue from."""
        self.model.load_state_dict(payload["model"])
        self.optimizer.load_state_dict(payload["optimizer"])
        self.scheduler.load_state_dict(payload["scheduler"])
        self.step = payload["step"]
        self.skipped = payload.get("skipped", 0)
        rng = payload["rng"]
        if "ranks" in rng:  # a data-parallel run: this rank's own streams
            rng = rng["ranks"][self.world.rank]
        if self.adaptation is not None:
            adaptation = dict(payload["adaptation"])
            if "target" in rng:
                adaptation["rng"] = rng["target"]
            self.adaptation.load_state_dict(adaptation)
        torch.set_rng_state(rng["torch"].cpu())
        if "loader" in rng:
            set_loader_rng(train_loader, rng)
        if "cuda" in rng and torch.cuda.is_available():
            torch.cuda.set_rng_state_all([state.cpu() for state in rng["cuda"]])
        if self.scaler is not None and "scaler" in payload:
            self.scaler.load_state_dict(payload["scaler"])
        self.callbacks.load_state_dict(payload.get("callbacks", {}))
        self.resume_progress = payload.get("progress")
        if self.resume_progress is not None:  # stopped inside an epoch: its next pass resumes at that batch
            train_loader.continue_epoch(self.resume_progress["order"], self.resume_progress["batch"])
        return payload["epoch"] + 1

    # ------------------------------------------------------------ fit

    def fit(self, train_loader, val_loader, epochs: int, start_epoch: int = 1) -> FitResult:
        result = FitResult(epochs_run=start_epoch - 1)
        self.train_loader, self.val_loader = train_loader, val_loader
        error: Optional[BaseException] = None
        self.callbacks.fire("on_fit_start", self, start_epoch)
        try:
            for epoch in range(start_epoch, epochs + 1):
                started = time.perf_counter()
                self.epoch = epoch
                self.callbacks.fire("on_epoch_start", self, epoch, epochs)
                progress, self.resume_progress = self.resume_progress, None
                train_metrics = self.train_epoch(train_loader, progress)
                if not math.isfinite(train_metrics["train/loss"]):  # e.g. a NaN between log points of a mean
                    raise self.diverged(train_metrics["train/loss"], seen="in the epoch ending at")
                trained = time.perf_counter()
                val = self.validate(val_loader)
                result.eval_seconds += time.perf_counter() - trained
                result.train_seconds += trained - started
                result.samples_seen += train_metrics.pop("samples")
                lr = train_metrics.pop("lr")
                metrics = {**train_metrics, **val}
                if self.steps_on_metric:
                    self.scheduler.step(metrics[self.monitor])
                end = EpochEnd(epoch, epochs, metrics, lr, time.perf_counter() - started)
                result.epochs_run = epoch
                result.history.append({"epoch": epoch, **metrics, "lr": lr})
                self._gather_rng(train_loader)
                self.callbacks.fire("on_epoch_end", self, end)
                if end.stop is not None:
                    result.stopped_early = end.stop
                    break
        except BaseException as raised:
            error = raised
            raise
        finally:
            self.callbacks.fire("on_fit_end", self, result, error)
        return result
