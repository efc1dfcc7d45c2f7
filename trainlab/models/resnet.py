"""Residual networks for small images: CIFAR ResNets, pre-activation ResNets, Wide ResNets.

- CifarResNet (He et al. 2016, "Deep Residual Learning", sec. 4.2): a 3x3 conv stem, three stages of
  n basic blocks with 16/32/64 channels (times width/16), depth 6n+2 (resnet20: n=3, resnet56: n=9).
  Post-activation blocks: conv-norm-act-conv-norm, add the shortcut, then act. Shortcut "option B":
  identity where shapes match, a 1x1 conv (stride 2) + norm where a stage changes them. Option A
  (zero-padded identity) has no parameters; B adds 2.8k of them to resnet20's 0.27M (+1%).
- PreActResNet (He et al. 2016b, "Identity Mappings in Deep Residual Networks"): blocks
  norm-act-conv-norm-act-conv, plus the shortcut, nothing after the addition; a final norm-act before
  pooling. With blocks [2,2,2,2] and widths 64/128/256/512 it is the CIFAR ResNet-18 (3x3 stem, no
  max pool). A projection shortcut (1x1 conv) takes the pre-activated input, as in both papers' code.
- WideResNet (Zagoruyko & Komodakis 2016): pre-activation blocks, depth 6n+4, widths 16k/32k/64k after
  a 16-channel stem, dropout between the two convs of each block (block_dropout).

Every model: children in forward order (stem, stage1.., [final], pool, dropout, head) so "freeze up to
child X" works; stochastic depth (model.drop_path) on every block, its rate growing linearly with the
block's index up to drop_path (see droppath.py); activations from layers.make_activation, norms from
layers.make_norm. Convs have a bias only when norm=none (a following norm's shift absorbs it).

Zero-init residual (Goyal et al. 2017): each block's `last_norm` is the layer whose weight (and bias)
set to zero makes the residual branch output zero, so the block starts as its shortcut; see
`zero_init_residual`. Post-activation block: norm2, the norm after the last conv (the block then
computes act(shortcut(x)), which is x on the non-negative inputs a ReLU network feeds it). Pre-activation
block: conv2, the last conv, because no norm follows it; zeroing norm2 instead would give a zero branch
too, but through ReLU'(0) = 0 it also gives zero gradients to norm2 and everything before it, so the
branch could never come back. With norm=none the post-activation block's last_norm is conv2 as well.

Maxout is not supported here: it divides the channel count, and the activations applied to the residual
stream itself (after the addition, or before a pre-activation block's convs) must keep its width.
"""

from __future__ import annotations

from typing import Any, Optional, Sequence

import torch
from torch import nn

from trainlab.errors import ConfigError
from trainlab.models.droppath import check_rate, drop_path_rates, make_drop_path
from trainlab.models.layers import NORMS, check_choice, check_probability, make_activation, make_norm


def _check_common(input_shape: Sequence[int], num_classes: int, activation: str,
                  activation_params: Optional[dict], norm: str, dropout: float, drop_path: float) -> None:
    if len(input_shape) != 3 or any(int(s) < 1 for s in input_shape):
        raise ConfigError(f"model input_shape={list(input_shape)}: need [channels, height, width], each >= 1")
    if num_classes < 1:
        raise ConfigError(f"model num_classes={num_classes}: need >= 1")
    if activation == "maxout":
        raise ConfigError("model.activation=maxout: maxout is not supported in residual models (it divides the "
                          "channel count, and the residual stream must keep its width); choose another activation")
    make_activation(activation, activation_params)  # an unknown name or bad params: ConfigError naming the key
    check_choice("norm", norm, NORMS)
    if isinstance(dropout, bool) or not isinstance(dropout, (int, float)):
        raise ConfigError(f"model.dropout={dropout!r}: must be in [0, 1)")
    check_probability("dropout", dropout)
    check_rate(drop_path, "model.drop_path")


def _whole(value: Any, key: str, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ConfigError(f"model.{key}={value!r}: must be a whole number >= {minimum}")
    return value


def conv3x3(in_channels: int, out_channels: int, stride: int, bias: bool) -> nn.Conv2d:
    return nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=bias)


class ResidualBlock(nn.Module):
    """Base of the blocks: `last_norm` (see the module doc) and `shortcut` (nn.Identity or a projection)."""

    shortcut: nn.Module

    @property
    def last_norm(self) -> nn.Module:
        raise NotImplementedError

    @property
    def projects(self) -> bool:
        """True when the shortcut is a projection (1x1 conv), not the identity."""
        return not isinstance(self.shortcut, nn.Identity)


class BasicBlock(ResidualBlock):
    """Post-activation basic block: act(drop_path(norm2(conv2(act(norm1(conv1(x)))))) + shortcut(x))."""

    def __init__(self, in_channels: int, out_channels: int, stride: int, activation: str,
                 activation_params: Optional[dict], norm: str, drop_path: float):
        super().__init__()
        bias = norm == "none"
        self.conv1 = conv3x3(in_channels, out_channels, stride, bias)
        self.norm1 = make_norm(norm, out_channels)
        self.act1 = make_activation(activation, activation_params)
        self.conv2 = conv3x3(out_channels, out_channels, 1, bias)
        self.norm2 = make_norm(norm, out_channels)
        self.drop_path = make_drop_path(drop_path)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or in_channels != out_channels:  # option B: project where the shape changes
            self.shortcut = nn.Sequential(nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=bias),
                                          make_norm(norm, out_channels))
        self.act2 = make_activation(activation, activation_params)

    @property
    def last_norm(self) -> nn.Module:
        return self.conv2 if isinstance(self.norm2, nn.Identity) else self.norm2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        branch = self.norm2(self.conv2(self.act1(self.norm1(self.conv1(x)))))
        return self.act2(self.drop_path(branch) + self.shortcut(x))


class PreActBlock(ResidualBlock):
    """Pre-activation block: drop_path(conv2(dropout(act(norm2(conv1(act(norm1(x)))))))) + shortcut.

    The shortcut is x itself, or a 1x1 projection of the pre-activated act(norm1(x)) where the shape changes.
    """

    def __init__(self, in_channels: int, out_channels: int, stride: int, activation: str,
                 activation_params: Optional[dict], norm: str, drop_path: float, dropout: float = 0.0):
        super().__init__()
        bias = norm == "none"
        self.norm1 = make_norm(norm, in_channels)
        self.act1 = make_activation(activation, activation_params)
        self.conv1 = conv3x3(in_channels, out_channels, stride, bias)
        self.norm2 = make_norm(norm, out_channels)
        self.act2 = make_activation(activation, activation_params)
        self.dropout = nn.Dropout(dropout) if dropout else nn.Identity()
        self.conv2 = conv3x3(out_channels, out_channels, 1, bias)
        self.drop_path = make_drop_path(drop_path)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or in_channels != out_channels:
            self.shortcut = nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=bias)

    @property
    def last_norm(self) -> nn.Module:
        return self.conv2  # no norm follows the last conv; see the module doc for why not norm2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pre = self.act1(self.norm1(x))
        shortcut = self.shortcut(pre) if self.projects else x
        branch = self.conv2(self.dropout(self.act2(self.norm2(self.conv1(pre)))))
        return self.drop_path(branch) + shortcut


@torch.no_grad()
def zero_init_residual(model: nn.Module) -> int:
    """Zero every residual block's last_norm (weight and bias) so each block starts as its shortcut.

    Returns the number of blocks changed. Run it after any weight initializer (an initializer that
    resets conv weights would undo it for pre-activation blocks, whose last_norm is a conv).
    """
    blocks = [m for m in model.modules() if isinstance(m, ResidualBlock)]
    for block in blocks:
        layer = block.last_norm
        nn.init.zeros_(layer.weight)
        if getattr(layer, "bias", None) is not None:
            nn.init.zeros_(layer.bias)
    return len(blocks)


def _stage(block: type[ResidualBlock], in_channels: int, out_channels: int, count: int, stride: int,
           rates: Sequence[float], **kwargs: Any) -> nn.Sequential:
    """`count` blocks; the first one changes the width and applies the stride."""
    return nn.Sequential(*[
        block(in_channels if i == 0 else out_channels, out_channels, stride if i == 0 else 1,
              drop_path=rates[i], **kwargs)
        for i in range(count)
    ])


class _ResNetBase(nn.Module):
    """Shared tail: global average pool, dropout, linear head (children pool, dropout, head)."""

    def _add_head(self, width: int, num_classes: int, dropout: float) -> None:
        self.pool = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.dropout = nn.Dropout(dropout) if dropout else nn.Identity()
        self.head = nn.Linear(width, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for child in self.children():  # the children are registered in forward order
            x = child(x)
        return x


class CifarResNet(_ResNetBase):
    """ResNet-(6n+2) for small images (He et al. 2016): stem, 3 stages of n basic blocks, pool, head.

    depth: 6n+2 (20, 32, 44, 56, 110, ...); width: the first stage's channels (16 in the paper;
    the stages have width, 2*width, 4*width).
    """

    def __init__(self, input_shape: Sequence[int], num_classes: int, *, depth: int = 20, width: int = 16,
                 activation: str = "relu", activation_params: Optional[dict] = None, norm: str = "batch",
                 dropout: float = 0.0, drop_path: float = 0.0):
        super().__init__()
        _check_common(input_shape, num_classes, activation, activation_params, norm, dropout, drop_path)
        depth, width = _whole(depth, "depth", 8), _whole(width, "width")
        if (depth - 2) % 6:
            raise ConfigError(f"model.depth={depth}: must be 6n+2 (8, 14, 20, 32, 44, 56, 110, ...)")
        n = (depth - 2) // 6
        rates = drop_path_rates(drop_path, 3 * n)
        common = dict(activation=activation, activation_params=activation_params, norm=norm)
        self.stem = nn.Sequential(conv3x3(input_shape[0], width, 1, norm == "none"), make_norm(norm, width),
                                  make_activation(activation, activation_params))
        channels = width
        for index, (out_channels, stride) in enumerate([(width, 1), (2 * width, 2), (4 * width, 2)]):
            stage = _stage(BasicBlock, channels, out_channels, n, stride, rates[index * n:(index + 1) * n], **common)
            setattr(self, f"stage{index + 1}", stage)
            channels = out_channels
        self._add_head(channels, num_classes, dropout)


class PreActResNet(_ResNetBase):
    """Pre-activation ResNet (He et al. 2016b) with a small-image stem (3x3 conv, no max pool).

    blocks: basic blocks per stage; widths: channels per stage (the first stage keeps the resolution,
    each later one halves it); stem_width: the stem's channels (null = widths[0]); block_dropout:
    dropout between the two convs of each block.
    """

    def __init__(self, input_shape: Sequence[int], num_classes: int, *, blocks: Sequence[int] = (2, 2, 2, 2),
                 widths: Sequence[int] = (64, 128, 256, 512), stem_width: Optional[int] = None,
                 block_dropout: float = 0.0, activation: str = "relu", activation_params: Optional[dict] = None,
                 norm: str = "batch", dropout: float = 0.0, drop_path: float = 0.0):
        super().__init__()
        _check_common(input_shape, num_classes, activation, activation_params, norm, dropout, drop_path)
        blocks, widths = list(blocks), list(widths)
        if not blocks or any(isinstance(b, bool) or not isinstance(b, int) or b < 1 for b in blocks):
            raise ConfigError(f"model.blocks={blocks}: need one whole number >= 1 per stage")
        if len(widths) != len(blocks) or any(isinstance(w, bool) or not isinstance(w, int) or w < 1 for w in widths):
            raise ConfigError(f"model.widths={widths}: need one whole number >= 1 per stage ({len(blocks)} stages)")
        stem_width = widths[0] if stem_width is None else _whole(stem_width, "stem_width")
        if isinstance(block_dropout, bool) or not isinstance(block_dropout, (int, float)) \
                or not 0.0 <= block_dropout < 1.0:
            raise ConfigError(f"model.block_dropout={block_dropout!r}: must be in [0, 1)")
        rates = drop_path_rates(drop_path, sum(blocks))
        common = dict(activation=activation, activation_params=activation_params, norm=norm, dropout=block_dropout)
        self.stem = conv3x3(input_shape[0], stem_width, 1, norm == "none")  # the first block pre-activates it
        channels, start = stem_width, 0
        for index, (count, out_channels) in enumerate(zip(blocks, widths)):
            stage = _stage(PreActBlock, channels, out_channels, count, 1 if index == 0 else 2,
                           rates[start:start + count], **common)
            setattr(self, f"stage{index + 1}", stage)
            channels, start = out_channels, start + count
        self.final = nn.Sequential(make_norm(norm, channels), make_activation(activation, activation_params))
        self._add_head(channels, num_classes, dropout)


class WideResNet(PreActResNet):
    """WRN-depth-width (Zagoruyko & Komodakis 2016): depth 6n+4 (n blocks per stage), width k.

    Stages of 16k/32k/64k channels after a 16-channel stem; block_dropout between each block's convs
    (the paper uses 0.3 on CIFAR).
    """

    def __init__(self, input_shape: Sequence[int], num_classes: int, *, depth: int = 16, width: int = 4,
                 block_dropout: float = 0.0, activation: str = "relu", activation_params: Optional[dict] = None,
                 norm: str = "batch", dropout: float = 0.0, drop_path: float = 0.0):
        depth, width = _whole(depth, "depth", 10), _whole(width, "width")
        if (depth - 4) % 6:
            raise ConfigError(f"model.depth={depth}: must be 6n+4 (10, 16, 22, 28, 40, ...)")
        n = (depth - 4) // 6
        super().__init__(input_shape, num_classes, blocks=[n] * 3, widths=[16 * width, 32 * width, 64 * width],
                         stem_width=16, block_dropout=block_dropout, activation=activation,
                         activation_params=activation_params, norm=norm, dropout=dropout, drop_path=drop_path)
