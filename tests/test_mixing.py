"""Mixup and cutmix: per-sample weights, pixels and soft targets that agree with each other."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from trainlab.data.mixing import Mixer

N, K = 32, 10


def batch(n=N, size=8):
    """Sample i is the constant image i+1 and has label i % K (partners differ in value)."""
    images = torch.arange(1, n + 1, dtype=torch.float32).view(n, 1, 1, 1).expand(n, 3, size, size).clone()
    return images, torch.arange(n) % K


def own_weight(targets, labels, partner_labels):
    """The target weight on the sample's own label (where own and partner labels differ)."""
    return targets.gather(1, labels.view(-1, 1)).squeeze(1)


def test_prob_zero_changes_nothing():
    images, labels = batch()
    torch.manual_seed(0)
    out, targets = Mixer(K, mixup_alpha=1.0, cutmix_alpha=1.0, prob=0.0)(images, labels, torch.Generator().manual_seed(0))
    assert torch.equal(out, images) and torch.equal(targets, F.one_hot(labels, K).float())


def test_mixup_blends_pixels_and_labels_with_the_same_per_sample_weight():
    images, labels = batch()
    torch.manual_seed(0)
    out, targets = Mixer(K, mixup_alpha=0.4)(images, labels, torch.Generator().manual_seed(1))
    torch.testing.assert_close(targets.sum(dim=1), torch.ones(N))
    partner = images.flip(0)
    for i in range(N):
        if labels[i] == labels.flip(0)[i]:
            continue
        w = targets[i, labels[i]]
        torch.testing.assert_close(out[i], w * images[i] + (1 - w) * partner[i])
    weights = own_weight(targets, labels, labels.flip(0))
    assert len(set(weights.tolist())) > N // 2, "each sample draws its own weight"


def test_cutmix_pastes_a_box_whose_area_is_the_partner_label_weight():
    images, labels = batch(size=16)
    torch.manual_seed(0)
    out, targets = Mixer(K, cutmix_alpha=1.0)(images, labels, torch.Generator().manual_seed(2))
    partner = images.flip(0)
    areas = []
    for i in range(N):
        own, other = out[i] == images[i], out[i] == partner[i]
        assert (own | other).all(), "cutmix pixels are either the sample's or its partner's"
        area = other[0].float().mean()
        if labels[i] != labels.flip(0)[i]:
            torch.testing.assert_close(targets[i, labels.flip(0)[i]], area)
        rows, cols = other[0].nonzero(as_tuple=True)
        if len(rows):  # the pasted region is one rectangle
            assert other[0, rows.min():rows.max() + 1, cols.min():cols.max() + 1].all()
        areas.append(round(area.item(), 4))
    assert len(set(areas)) > 3, "boxes differ from sample to sample"


def test_switch_prob_mixes_both_kinds_within_one_batch():
    images, labels = batch(n=64, size=8)
    torch.manual_seed(0)
    out, _ = Mixer(K, mixup_alpha=1.0, cutmix_alpha=1.0, switch_prob=0.5)(images, labels,
                                                                          torch.Generator().manual_seed(3))
    partner = images.flip(0)
    pasted = [((out[i] == images[i]) | (out[i] == partner[i])).all().item() for i in range(64)]
    assert 10 < sum(pasted) < 60, "some samples got cutmix (pixel-exact), others mixup (blended)"


def test_same_seeds_same_mix():
    images, labels = batch()
    results = []
    for _ in range(2):
        torch.manual_seed(5)
        results.append(Mixer(K, mixup_alpha=0.2, cutmix_alpha=1.0)(images, labels, torch.Generator().manual_seed(5)))
    assert torch.equal(results[0][0], results[1][0]) and torch.equal(results[0][1], results[1][1])


def test_soft_targets_work_with_label_smoothing_in_the_loss():
    images, labels = batch()
    torch.manual_seed(0)
    _, targets = Mixer(K, mixup_alpha=0.4)(images, labels, torch.Generator().manual_seed(1))
    logits = torch.randn(N, K)
    smoothed = F.cross_entropy(logits, targets, label_smoothing=0.1)
    by_hand = -(((1 - 0.1) * targets + 0.1 / K) * logits.log_softmax(dim=1)).sum(dim=1).mean()
    torch.testing.assert_close(smoothed, by_hand)


@pytest.mark.parametrize("kwargs, key", [
    (dict(mixup_alpha=-0.1), "mixup_alpha"), (dict(cutmix_alpha=-1), "cutmix_alpha"),
    (dict(mixup_alpha=1, prob=1.5), "prob"), (dict(mixup_alpha=1, switch_prob=-0.1), "switch_prob"),
    (dict(), "both 0"),
])
def test_impossible_settings_are_refused(kwargs, key):
    with pytest.raises(ValueError, match=key):
        Mixer(K, **kwargs)
