"""Batch-level mixing: mixup (Zhang et al. 2018) and cutmix (Yun et al. 2019), with soft targets.

Each sample is paired with the sample at the mirrored batch position (the batch is already shuffled)
and draws its *own* mixing weight, its own mix-or-not coin and its own mixup-or-cutmix coin
(timm's "elem" mode); torchvision's v2 MixUp/CutMix draw one weight for the whole batch.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


class Mixer:
    def __init__(self, num_classes: int, mixup_alpha: float = 0.0, cutmix_alpha: float = 0.0, prob: float = 1.0,
                 switch_prob: float = 0.5):
        for name, value in (("mixup_alpha", mixup_alpha), ("cutmix_alpha", cutmix_alpha)):
            if value < 0:
                raise ValueError(f"{name}={value}: must be >= 0 (0 turns it off)")
        for name, value in (("prob", prob), ("switch_prob", switch_prob)):
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"{name}={value}: a probability must be in [0, 1]")
        if mixup_alpha == 0 and cutmix_alpha == 0:
            raise ValueError("mixup_alpha and cutmix_alpha are both 0: set one > 0, or drop augmentation.mix")
        self.num_classes = num_classes
        self.mixup_alpha = mixup_alpha
        self.cutmix_alpha = cutmix_alpha
        self.prob = prob
        self.switch_prob = switch_prob if mixup_alpha > 0 and cutmix_alpha > 0 else float(cutmix_alpha > 0)

    def _beta(self, alpha: float, n: int, device: torch.device) -> torch.Tensor:
        # torch.distributions takes no Generator: these draws come from the global RNG, which
        # seed_everything seeds and last.pt saves, so runs stay reproducible and resumable.
        if alpha <= 0:
            return torch.ones(n, device=device)
        concentration = torch.full((n,), float(alpha), device=device)
        return torch.distributions.Beta(concentration, concentration).sample()

    def cutmix_masks(self, lam: torch.Tensor, size: tuple[int, int], generator: torch.Generator):
        """Per-sample boxes covering about (1 - lam) of the image: (mask [N,1,H,W] True inside, kept fraction)."""
        h, w = size
        n, device = lam.shape[0], lam.device
        ratio = (1 - lam).sqrt()
        cut_h, cut_w = (h * ratio).round(), (w * ratio).round()
        cy = torch.randint(0, h, (n,), generator=generator, device=device)
        cx = torch.randint(0, w, (n,), generator=generator, device=device)
        top, bottom = (cy - cut_h / 2).clamp(0, h), (cy + cut_h / 2).clamp(0, h)
        left, right = (cx - cut_w / 2).clamp(0, w), (cx + cut_w / 2).clamp(0, w)
        rows = torch.arange(h, device=device).view(1, h, 1)
        cols = torch.arange(w, device=device).view(1, 1, w)
        mask = ((rows >= top.view(n, 1, 1).round()) & (rows < bottom.view(n, 1, 1).round())
                & (cols >= left.view(n, 1, 1).round()) & (cols < right.view(n, 1, 1).round()))
        kept = 1 - mask.flatten(1).float().mean(dim=1)  # the label weight is the area actually kept
        return mask.unsqueeze(1), kept

    def __call__(self, images: torch.Tensor, labels: torch.Tensor, generator: torch.Generator):
        """Mixed float images and soft targets [N, num_classes]."""
        n, device = images.shape[0], images.device
        partner_images, partner_labels = images.flip(0), labels.flip(0)
        mixed = torch.rand(n, generator=generator, device=device) < self.prob
        use_cutmix = (torch.rand(n, generator=generator, device=device) < self.switch_prob) & mixed
        use_mixup = mixed & ~use_cutmix
        weight = torch.ones(n, device=device)
        if self.mixup_alpha > 0:
            weight = torch.where(use_mixup, self._beta(self.mixup_alpha, n, device), weight)
        out = images * weight.view(n, 1, 1, 1) + partner_images * (1 - weight).view(n, 1, 1, 1)
        if self.cutmix_alpha > 0:
            mask, kept = self.cutmix_masks(self._beta(self.cutmix_alpha, n, device), images.shape[-2:], generator)
            mask = mask & use_cutmix.view(n, 1, 1, 1)
            out = torch.where(mask, partner_images, out)
            weight = torch.where(use_cutmix, kept, weight)
        targets = (F.one_hot(labels, self.num_classes).float() * weight.view(n, 1)
                   + F.one_hot(partner_labels, self.num_classes).float() * (1 - weight).view(n, 1))
        return out, targets

    def __repr__(self) -> str:
        return (f"Mixer(mixup_alpha={self.mixup_alpha}, cutmix_alpha={self.cutmix_alpha}, prob={self.prob}, "
                f"switch_prob={self.switch_prob})")
