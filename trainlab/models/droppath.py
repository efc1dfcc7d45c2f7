"""Stochastic depth (Huang et al. 2016, "Deep Networks with Stochastic Depth") for residual blocks.

While training, each sample of a batch independently drops a block's residual branch with probability
p (the block then passes only its shortcut); kept branches are scaled by 1/(1-p) so that the expected
output is unchanged, and at evaluation the branch is always kept, unscaled. (The paper scales by the
survival probability at test time instead; the two are equivalent in expectation.)

torchvision.ops.StochasticDepth(p, mode="row") is exactly this: "row" draws one Bernoulli per sample
(per-sample, not one draw for the whole batch), divides by 1 - p while training, returns its input
unchanged in eval mode or when p == 0. So it is used as is; this module only adds the depth schedule
and the config check.
"""

from __future__ import annotations

from torch import nn

from trainlab.errors import ConfigError


def check_rate(rate: float, key: str = "model.drop_path") -> float:
    """`rate` as a float in [0, 1), or ConfigError naming `key`."""
    if isinstance(rate, bool) or not isinstance(rate, (int, float)) or not 0.0 <= rate < 1.0:
        raise ConfigError(f"{key}={rate!r}: must be a number in [0, 1) (0 = no stochastic depth)")
    return float(rate)


def drop_path_rates(rate: float, blocks: int) -> list[float]:
    """Per-block drop probabilities, growing linearly with depth up to `rate` (Huang et al.'s rule).

    Block l of L (1-based) drops with p_l = rate * l / L: the first block is almost always kept,
    the last block drops with exactly `rate`.
    """
    return [rate * (index + 1) / blocks for index in range(blocks)]


def make_drop_path(p: float) -> nn.Module:
    """A per-sample stochastic-depth module for a residual branch (nn.Identity when p == 0)."""
    if p == 0.0:
        return nn.Identity()
    from torchvision.ops import StochasticDepth  # imported here: torchvision adds ~1 s to import time

    return StochasticDepth(p, mode="row")
