"""DANN's training step (Ganin et al., JMLR 2016), as the Trainer runs it when adaptation=dann.

Each training batch of source images (labelled) is joined by a batch of target images (unlabelled) into one
forward pass. A forward pre-hook on the model's `head` takes the features (the head's input) and passes them
through the gradient-reversal layer to the domain classifier, an MLP with one logit (target vs source). The
label loss is the source half's cross-entropy; the domain loss, binary cross-entropy over both halves, trains
the domain classifier to tell the domains apart while the reversed gradient trains the features to make that
impossible. lambda follows Ganin's schedule over training progress (or stays constant).

The domain classifier is a module of its own, not part of the model: best.pt holds the classifier a user
deploys, as for any run; last.pt holds the domain classifier too (resuming continues it).
"""

from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn

from trainlab.adaptation.reversal import ganin_lambda, reverse_gradient

LAMBDA_SCHEDULES = ("ganin", "constant")


class DomainClassifier(nn.Module):
    """Gradient reversal, then an MLP: per hidden width Linear -> ReLU -> Dropout, then one logit (target = 1)."""

    def __init__(self, in_features: int, hidden: list[int], dropout: float = 0.5):
        super().__init__()
        layers: list[nn.Module] = []
        width = in_features
        for size in hidden:
            layers += [nn.Linear(width, size), nn.ReLU(inplace=True)]
            if dropout:
                layers.append(nn.Dropout(dropout))
            width = size
        layers.append(nn.Linear(width, 1))
        self.layers = nn.Sequential(*layers)
        # lambda, set each step; not a weight (left out of state dicts: the schedule gives it from the step)
        self.register_buffer("reversal", torch.zeros(()), persistent=False)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.layers(reverse_gradient(features.flatten(1), self.reversal)).squeeze(1)


class Adversarial(nn.Module):
    """The model and its domain classifier as one module, for DistributedDataParallel: DDP then all-reduces
    the domain classifier's gradients too (the classifier runs inside the model's forward, from the hook)."""

    def __init__(self, model: nn.Module, domain: DomainClassifier):
        super().__init__()
        self.model, self.domain = model, domain

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.model(images)


def feature_width(model: nn.Module) -> int:
    """The width of the model's features: the input of its `head` (an nn.Linear in every trainlab model)."""
    head = getattr(model, "head", None)
    if not isinstance(head, nn.Linear):
        raise ValueError("has no linear `head` whose input are the features")
    return head.in_features


class DANN:
    """The adversarial part of a DANN run: target batches, the domain classifier and its loss, lambda.

    The Trainer calls `join` on each source batch before the forward pass and `split` on the logits after it;
    `window` hands it the device-side sums to log (read with the Trainer's own at its log points)."""

    def __init__(self, model: nn.Module, classifier: DomainClassifier, target_loader, total_steps: int, *,
                 weight: float = 1.0, lambda_schedule: str = "ganin", gamma: float = 10.0, lambda_max: float = 1.0):
        self.classifier = classifier
        self.target_loader = target_loader
        self.total_steps = max(1, total_steps)
        self.weight, self.lambda_schedule, self.gamma, self.lambda_max = weight, lambda_schedule, gamma, lambda_max
        self._iterator = None
        self._batch = 0            # target batches taken in the target loader's current pass
        self._armed = False        # the next forward is a training step's: compute the domain logits
        self._domain_logits: Optional[torch.Tensor] = None
        self._sources = 0
        self._sums: Optional[torch.Tensor] = None  # the log window's [loss on source, loss on target, correct]
        self._steps = self._samples = 0            # joined forward passes and domain-classified images in it
        self._continuing = False
        self.hook = model.head.register_forward_pre_hook(self._features)

    # ------------------------------------------------------------ lambda

    def lambda_at(self, step: int) -> float:
        """lambda at optimizer step `step` of total_steps."""
        if self.lambda_schedule == "constant":
            return self.lambda_max
        return self.lambda_max * ganin_lambda(min(step, self.total_steps) / self.total_steps, self.gamma)

    # ------------------------------------------------------------ the step

    def _next_target(self) -> torch.Tensor:
        if self._iterator is None:
            self._iterator = iter(self.target_loader)
            if not self._continuing:  # (a resumed run continues the pass last.pt stopped in)
                self._batch = 0
            self._continuing = False
        try:
            images, _ = next(self._iterator)  # the -1 labels stay behind
        except StopIteration:  # the target is smaller than the source: its next pass (a new permutation)
            self._iterator, self._batch = iter(self.target_loader), 0
            images, _ = next(self._iterator)
        self._batch += 1
        return images

    def join(self, images: torch.Tensor, step: int) -> torch.Tensor:
        """The source batch followed by a target batch; the next forward computes the domain logits."""
        target = self._next_target()
        self.classifier.reversal.fill_(self.lambda_at(step))
        self._sources, self._armed = images.shape[0], True
        memory = torch.channels_last if images.is_contiguous(memory_format=torch.channels_last) and images.dim() == 4 \
            else torch.contiguous_format
        return torch.cat([images, target]).contiguous(memory_format=memory)

    def _features(self, module, inputs):
        if self._armed:
            self._armed = False
            self._domain_logits = self.classifier(inputs[0])

    def split(self, logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(the source half's logits, the weighted domain loss) of a joined forward pass."""
        domain = self._domain_logits.float()
        self._domain_logits = None
        n = self._sources
        is_target = torch.zeros_like(domain)
        is_target[n:] = 1.0
        losses = F.binary_cross_entropy_with_logits(domain, is_target, reduction="none")
        with torch.no_grad():  # device-side sums (no tensor made from a host value: on CUDA that copy would block)
            sums = torch.stack([losses[:n].mean(), losses[n:].mean(), ((domain > 0).float() == is_target).sum()])
            self._sums = sums if self._sums is None else self._sums + sums
            self._steps += 1
            self._samples += domain.shape[0]
        return logits[:n], self.weight * losses.mean()

    def window(self, step: int) -> dict[str, torch.Tensor]:
        """The log window's domain figures as device tensors (the Trainer reads them with its own), then reset:
        domain/loss_source and domain/loss_target (the classifier's loss on each domain), domain/acc (near
        0.5: features it cannot tell apart) and domain/lambda."""
        if self._sums is None:
            return {}
        sums, steps, samples = self._sums, self._steps, self._samples
        self._sums, self._steps, self._samples = None, 0, 0
        return {"domain/loss_source": sums[0] / steps, "domain/loss_target": sums[1] / steps,
                "domain/acc": sums[2] / samples,
                "domain/lambda": torch.tensor(self.lambda_at(step), device=sums.device)}

    # ------------------------------------------------------------ resumable state

    def state_dict(self) -> dict:
        """The domain classifier's weights and where the target loader is (its order, batch and streams)."""
        loader = self.target_loader
        order = loader.epoch_order
        return {"classifier": self.classifier.state_dict(), "batch": self._batch if self._iterator else 0,
                "order": order.cpu() if order is not None and self._iterator is not None else None,
                "rng": loader.rng_state()}

    def load_state_dict(self, state: dict) -> None:
        self.classifier.load_state_dict(state["classifier"])
        self.target_loader.set_rng_state(state["rng"])
        self._iterator = None
        if state["order"] is not None:  # continue the target pass where it stopped
            self.target_loader.continue_epoch(state["order"], state["batch"])
            self._batch, self._continuing = state["batch"], True

    def close(self) -> None:
        self.hook.remove()
