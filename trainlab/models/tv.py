"""Any torchvision classification model as a trainlab model (model=torchvision model.name=...).

Built with torchvision.models.get_model(name, weights=None, num_classes=...): random weights, never a
download. Then:
- the first Conv2d is replaced by one with the same parameters but in_channels = input_shape[0]
  (so a 1-channel 28x28 dataset works with any model);
- small_input=true swaps the ImageNet stem (which divides the resolution by 4 before the first block)
  for a small-image one, in the families where that is easy:
    resnet*, resnext*, wide_resnet*: conv1 -> 3x3 stride-1 conv, maxpool removed (the CIFAR stem);
    densenet*:                       features.conv0 -> 3x3 stride-1 conv, features.pool0 removed;
    shufflenet_v2_*:                 conv1 -> 3x3 stride-1 conv, maxpool removed;
    mobilenet_v2, mobilenet_v3_*, efficientnet_*, mnasnet*, regnet_*: the 3x3 stride-2 stem conv
                                     gets stride 1.
  Other families (vgg, alexnet, squeezenet, googlenet, inception_v3, convnext, swin, vit, maxvit)
  raise ConfigError; vit/swin/maxvit expect their ImageNet image sizes anyway.
- the classifier, the model's final nn.Linear (found as the last nn.Linear: net.fc for resnets,
  net.classifier[-1] for mobilenets, net.heads.head for vit, ...; checked to be the layer whose output
  is the net's), moves out of the net to a top-level child `head`; its slot in the net becomes
  nn.Identity, so `net` returns features and the children are (net, head) in forward order.
  (So `head` is a real child, as in every trainlab model: model.freeze=backbone keeps it training,
  its keys are head.weight/head.bias, and a torchvision weights file loads into `net.*` with the
  file's own fc/classifier left over, as trainlab/transfer.py expects. `head_path` records where it
  was, e.g. "fc", to map keys back to plain torchvision: head.* -> <head_path>.*.)

Keys kept for uniformity with the other models:
- activation / activation_params / norm: each architecture keeps its own (hardswish in mobilenet_v3,
  GELU + LayerNorm in vit, ...); only the defaults relu / {} / batch, which mean "the model's own",
  are accepted, anything else is a ConfigError.
- dropout: null keeps torchvision's default (e.g. 0.2 in mobilenet_v3 and efficientnet, none in resnet).
  A number goes to the builder's own `dropout` argument where it has one (mobilenet, efficientnet, vgg,
  alexnet, mnasnet, squeezenet, googlenet, inception_v3: classifier dropout; vit, swin: dropout inside
  the transformer); elsewhere (resnet, densenet, regnet, shufflenet, convnext, ...) an nn.Dropout
  takes the head's old slot in the net (so it acts right before the head).
- drop_path: null keeps torchvision's default (e.g. 0.2 in efficientnet, 0.1 in convnext_tiny); a
  number goes to `stochastic_depth_prob` (efficientnet, convnext, swin, maxvit); other models have no
  stochastic depth and a non-zero rate is a ConfigError.
googlenet and inception_v3 are built without their auxiliary classifiers (so forward returns logits).
"""

from __future__ import annotations

import difflib
from typing import Any, Optional, Sequence

import torch
from torch import nn

from trainlab.errors import ConfigError
from trainlab.models.droppath import check_rate

# name prefix -> (stem conv path or None for the first Conv2d, pool path to remove or None)
SMALL_INPUT_STEMS: dict[str, tuple[Optional[str], Optional[str]]] = {
    "resnet": ("conv1", "maxpool"),
    "resnext": ("conv1", "maxpool"),
    "wide_resnet": ("conv1", "maxpool"),
    "densenet": ("features.conv0", "features.pool0"),
    "shufflenet_v2": (None, "maxpool"),
    "mobilenet_v2": (None, None),
    "mobilenet_v3": (None, None),
    "efficientnet": (None, None),
    "mnasnet": (None, None),
    "regnet": (None, None),
}

# builder arguments some models need so that forward returns plain logits (and no init warning)
EXTRA_ARGS: dict[str, dict[str, Any]] = {
    "googlenet": {"aux_logits": False, "init_weights": True},
    "inception_v3": {"aux_logits": False, "init_weights": True},
}


def classification_models() -> list[str]:
    import torchvision

    return sorted(torchvision.models.list_models(module=torchvision.models))


def _check_name(name: Any) -> str:
    names = classification_models()
    if isinstance(name, str) and name in names:
        return name
    close = difflib.get_close_matches(str(name).lower(), names, n=3, cutoff=0.6)
    hint = f"; did you mean {', '.join(close)}?" if close else "; see torchvision.models.list_models()"
    raise ConfigError(f"model.name={name!r}: not a torchvision classification model{hint}")


def _first_conv(net: nn.Module) -> tuple[str, nn.Conv2d]:
    for path, module in net.named_modules():
        if isinstance(module, nn.Conv2d):
            return path, module
    raise ConfigError("model.name: this torchvision model has no Conv2d to adapt to the input channels")


def _conv_like(conv: nn.Conv2d, in_channels: int, **changes: Any) -> nn.Conv2d:
    """A fresh Conv2d with `conv`'s parameters, `in_channels` inputs, and `changes` applied."""
    args = dict(out_channels=conv.out_channels, kernel_size=conv.kernel_size, stride=conv.stride,
                padding=conv.padding, dilation=conv.dilation, groups=conv.groups, bias=conv.bias is not None,
                padding_mode=conv.padding_mode)
    args.update(changes)
    return nn.Conv2d(in_channels, **args)


def _last_linear(net: nn.Module, name: str) -> str:
    paths = [path for path, module in net.named_modules() if isinstance(module, nn.Linear)]
    if not paths:
        raise ConfigError(f"model.name={name}: has no nn.Linear classifier to use as the head (e.g. squeezenet's "
                          f"classifier is a 1x1 conv); choose another model")
    return paths[-1]


@torch.no_grad()
def _check_input(net: nn.Module, last: nn.Linear, name: str, input_shape: Sequence[int], num_classes: int,
                 tip: bool) -> None:
    """One forward pass on a blank image (eval mode): a model that cannot take this size fails here,
    naming the key; and the last nn.Linear must be the net's final layer (its output is the net's)."""
    training = net.training
    seen: list[torch.Tensor] = []
    hook = last.register_forward_hook(lambda module, args, output: seen.append(output))
    net.eval()
    try:
        out = net(torch.zeros(1, *map(int, input_shape)))
    except (RuntimeError, ValueError, AssertionError) as error:
        first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        hint = " (model.small_input=true keeps more resolution)" if tip else ""
        raise ConfigError(f"model.name={name}: cannot take {list(input_shape)} inputs{hint}: {first}") from None
    finally:
        hook.remove()
        net.train(training)
    if not isinstance(out, torch.Tensor) or out.shape != (1, num_classes) or not seen or out is not seen[-1]:
        raise ConfigError(f"model.name={name}: its last nn.Linear is not its final layer giving "
                          f"[batch, {num_classes}] logits; this model is not supported")


class TorchvisionModel(nn.Module):
    """torchvision.models.get_model(name) adapted to input_shape and num_classes; see the module doc."""

    def __init__(self, input_shape: Sequence[int], num_classes: int, *, name: str = "resnet18",
                 small_input: bool = False, activation: str = "relu", activation_params: Optional[dict] = None,
                 norm: str = "batch", dropout: Optional[float] = None, drop_path: Optional[float] = None):
        super().__init__()
        import torchvision

        name = _check_name(name)
        if activation != "relu" or activation_params:
            raise ConfigError(f"model.activation={activation!r} (params {activation_params or {}}): torchvision "
                              f"models keep their own activations; leave model.activation=relu and "
                              f"model.activation_params={{}}")
        if norm != "batch":
            raise ConfigError(f"model.norm={norm!r}: torchvision models keep their own normalization; "
                              f"leave model.norm=batch")
        if dropout is not None and (isinstance(dropout, bool) or not isinstance(dropout, (int, float))
                                    or not 0.0 <= dropout < 1.0):
            raise ConfigError(f"model.dropout={dropout!r}: must be null (torchvision's default) or in [0, 1)")
        if drop_path is not None:
            drop_path = check_rate(drop_path, "model.drop_path")
        family = next((prefix for prefix in SMALL_INPUT_STEMS if name.startswith(prefix)), None)
        if small_input and family is None:
            raise ConfigError(f"model.small_input=true: no small-input stem for {name}; it is handled for "
                              f"{', '.join(p + '*' for p in SMALL_INPUT_STEMS)} (or set model.small_input=false)")

        kwargs: dict[str, Any] = dict(EXTRA_ARGS.get(name, {}), num_classes=num_classes)
        if drop_path is not None:
            kwargs["stochastic_depth_prob"] = drop_path
        own_dropout = dropout is not None
        if own_dropout:
            kwargs["dropout"] = dropout
        while True:
            try:
                net = torchvision.models.get_model(name, weights=None, **kwargs)
                break
            except TypeError as error:
                if "'dropout'" in str(error) and "dropout" in kwargs:
                    del kwargs["dropout"]  # no dropout argument: an nn.Dropout goes in front of the head below
                    own_dropout = False
                elif "'stochastic_depth_prob'" in str(error):
                    if drop_path == 0.0:
                        del kwargs["stochastic_depth_prob"]  # asks for none, and it has none
                    else:
                        raise ConfigError(f"model.drop_path={drop_path}: torchvision's {name} has no stochastic "
                                          f"depth (efficientnet, convnext, swin, maxvit do); set "
                                          f"model.drop_path=null") from None
                else:
                    raise

        channels = int(input_shape[0])
        if small_input:
            conv_path, pool_path = SMALL_INPUT_STEMS[family]
            conv_path = conv_path or _first_conv(net)[0]
            old = net.get_submodule(conv_path)
            net.set_submodule(conv_path, _conv_like(old, channels, kernel_size=3, stride=1, padding=1))
            if pool_path:
                net.set_submodule(pool_path, nn.Identity())
        conv_path, conv = _first_conv(net)
        if conv.in_channels != channels:
            net.set_submodule(conv_path, _conv_like(conv, channels))

        head_path = _last_linear(net, name)
        _check_input(net, net.get_submodule(head_path), name, input_shape, num_classes,
                     tip=family is not None and not small_input)
        # The final Linear moves out of the net to a top-level `head` child; its slot keeps the net's
        # output the features (or applies the dropout the builder had no argument for).
        self.head_path = head_path
        head = net.get_submodule(head_path)
        net.set_submodule(head_path, nn.Dropout(dropout) if dropout and not own_dropout else nn.Identity())
        self.net = net
        self.head = head

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.net(x))
